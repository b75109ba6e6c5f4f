"""The `msdbench` command: one cell by hand, and the steps the Snakemake rules call."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from msdbench import planning


def _cell_args(ap: argparse.ArgumentParser, suite_positional: bool = True) -> None:
    if suite_positional:
        ap.add_argument("suite", choices=planning.SUITES)
    ap.add_argument("--platform", default="linux", choices=planning.PLATFORMS)
    ap.add_argument("--backend", default="process", choices=planning.BACKENDS)
    ap.add_argument("--isolation", required=True,
                    help="co-located | tiered | isolated (micro: co-located | isolated)")
    ap.add_argument("--deployment", type=int, required=True, choices=sorted(planning.DEPLOYMENTS))
    ap.add_argument("--payload", type=int, default=None, help="micro: request payload size")


def _cell(a) -> planning.Cell:
    return planning.Cell(a.suite, a.platform, a.backend, a.isolation, a.deployment,
                         a.payload if a.suite == "micro" else None)


def cmd_run(a) -> int:
    from msdbench.cell import run_cell
    from msdbench.config import ConfigError, cell_settings, device_settings, load
    from msdbench.summary import one_line

    device = a.backend == "device"
    config = load(a.config or ("config/device.yaml" if device else "config/config.yaml"))
    if a.suite == "micro" and a.payload is None:
        a.payload = 0
    if device:
        if not config.get("device"):
            raise ConfigError(f"{a.config}: --backend device needs a `device` section "
                              "(see config/device.yaml)")
        settings = device_settings(config, a.suite)
        for key in ("board", "port"):
            if getattr(a, key, None):
                settings["device"][key] = getattr(a, key)
    else:
        settings = cell_settings(config, a.suite, a.deployment)
    for key in ("requests", "warmup", "payload_mode", "pinning", "workers"):
        if getattr(a, key, None) is not None:
            settings[key] = getattr(a, key)
    manifest = planning.plan(_cell(a), settings)
    out = Path(a.out or tempfile.mkdtemp(prefix="msdbench-run-"))
    raw, meta = out / "cell.parquet", out / "cell.json"
    run_cell(manifest, raw, meta, {"docker_host": a.docker_host} if a.docker_host else None,
             workdir=out / "work")
    print(one_line(meta))
    print(f"raw samples: {raw}\nmetadata:    {meta}")
    return 0


def cmd_plan(a) -> int:
    manifest = planning.plan(_cell(a), json.loads(a.settings))
    manifest.save(a.out)
    return 0


def cmd_measure(a) -> int:
    from msdbench.cell import run_cell
    from msdbench.manifest import Manifest
    from msdbench.summary import one_line

    # The domains' logs live in the work dir while the cell runs; a failure quotes their tails.
    # --workdir keeps them (and shows how each domain ended).
    with tempfile.TemporaryDirectory(prefix="msdbench-cell-") as tmp:
        run_cell(Manifest.load(a.manifest), a.raw, a.meta,
                 {"docker_host": a.docker_host} if a.docker_host else None,
                 workdir=a.workdir or tmp)
    print(one_line(a.meta))
    return 0


def cmd_image(a) -> int:
    if a.backend == "device":
        from msdbench.device.image import write_stamp

        print(json.dumps(write_stamp(a.out, a.board, a.micropython), indent=2))
        return 0
    if a.backend == "process":
        from msdbench.stamp import write_stamp

        write_stamp(a.out)
        return 0
    from msdbench.backends import docker_image

    return docker_image.main(["--stamp", a.out] + (["--docker-host", a.docker_host]
                                                   if a.docker_host else []))


def cmd_aggregate(a) -> int:
    from msdbench.aggregate import aggregate

    aggregate(a.suite, a.meta, a.csv, a.parquet)
    return 0


def cmd_validate(a) -> int:
    from msdbench.config import device_matrix, load, matrix, throughput_matrix

    config = load(a.config)
    jobs = matrix(config) + throughput_matrix(config) + device_matrix(config)
    print(f"{a.config}: valid; {len(jobs)} cells (a throughput cell is one sweep)")
    for j in jobs:
        print("  " + j.label)
    return 0


def cmd_bench(a) -> int:
    from msdbench.bench import main as bench_main

    return bench_main(a.args)


def cmd_throughput(a) -> int:
    from msdbench.throughput import cli_main

    return cli_main(a.action, a.args)


def cmd_clean(a) -> int:
    from msdbench.backends.docker import clean
    from msdbench.backends.docker_image import DockerUnavailable
    from msdbench.hosts import netns

    if netns.can_manage():  # emulated hosts' namespaces and links (needs root)
        netns.clean(everything=a.all, dry_run=a.dry_run)
    try:
        clean(a.docker_host, everything=a.all, dry_run=a.dry_run)
    except DockerUnavailable as e:
        print(f"msdbench: error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_hosts(a) -> int:
    from msdbench.config import load
    from msdbench.hosts.check import main as check

    return check(load(a.config))


def main(argv: list[str] | None = None) -> int:
    from msdbench.backends.base import BackendError
    from msdbench.config import ConfigError
    from msdbench.device.firmware import FirmwareError

    ap = argparse.ArgumentParser(prog="msdbench", description="What microservice isolation and "
                                 "placement cost, measured.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="measure one cell without Snakemake; print a summary")
    _cell_args(p)
    p.add_argument("--config", help="settings not given here come from this file (default: "
                   "config/config.yaml; config/device.yaml for --backend device)")
    p.add_argument("--board", choices=("emulated", "serial", "unix"), help="device: board kind")
    p.add_argument("--port", help="device: the serial port of a real board (--board serial)")
    p.add_argument("--requests", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--payload-mode", dest="payload_mode", choices=("binary", "list"))
    p.add_argument("--pinning", choices=tuple(planning.PINNINGS))
    p.add_argument("--workers", type=int)
    p.add_argument("--docker-host")
    p.add_argument("--out", help="directory for cell.parquet and cell.json (default: a temp dir)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("plan", help="(rule deploy) write the manifest of one cell")
    _cell_args(p)
    p.add_argument("--settings", required=True, help="the cell's settings as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("measure", help="(rule run) bring a manifest up, measure, tear down")
    p.add_argument("manifest")
    p.add_argument("--raw", required=True, help="samples (.parquet), beside --meta")
    p.add_argument("--meta", required=True, help="metadata (.json)")
    p.add_argument("--docker-host")
    p.add_argument("--workdir", help="keep the domains' logs here (default: a temp dir, removed)")
    p.set_defaults(fn=cmd_measure)

    p = sub.add_parser("image", help="(rule build_image) build or stamp what a backend runs")
    p.add_argument("backend", choices=planning.BACKENDS)
    p.add_argument("--out", required=True, help="the stamp (JSON) the cells depend on")
    p.add_argument("--docker-host")
    p.add_argument("--board", default="emulated", choices=("emulated", "serial", "unix"),
                   help="device: which board kind the firmware is for")
    p.add_argument("--micropython", help="device: MicroPython source (tarball or git clone)")
    p.set_defaults(fn=cmd_image)

    p = sub.add_parser("aggregate", help="(rule aggregate) cells -> one summary table")
    p.add_argument("suite", choices=planning.SUITES + ("device",))
    p.add_argument("--csv", required=True)
    p.add_argument("--parquet", required=True)
    p.add_argument("meta", nargs="+", help="the cells' metadata files (raw samples beside them)")
    p.set_defaults(fn=cmd_aggregate)

    p = sub.add_parser("validate", help="check a config file and list its cells")
    p.add_argument("config", nargs="?", default="config/config.yaml")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("bench", add_help=False,
                       help="poll over every binding vs a raw TCP echo, one run (--help for options)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("throughput", help="the throughput study (paper 4.3): `run` a sweep by "
                       "hand; `measure`, `aggregate` (the rules); ACTION --help for more",
                       add_help=False)
    p.add_argument("action", choices=("run", "measure", "aggregate"))
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_throughput)

    p = sub.add_parser("hosts", help="`hosts check`: for each configured host, is it reachable, "
                       "its kernel, CPU, Python and msdbench version (netns: create and remove one)")
    p.add_argument("action", choices=("check",))
    p.add_argument("--config", default="config/config.yaml")
    p.set_defaults(fn=cmd_hosts)

    p = sub.add_parser("clean", help="remove what crashed runs left behind: docker containers, "
                       "networks and volumes (label msdbench.run; images are kept), and emulated "
                       "hosts' network namespaces and links (msdb-<pid>-<start>-*)")
    p.add_argument("--docker-host", help="engine URL (default: $DOCKER_HOST or the local socket)")
    p.add_argument("--all", action="store_true",
                   help="also remove the objects of runs that are still alive or belong to another machine")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(fn=cmd_clean)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its options are its own (msdbench/bench.py)
        return cmd_bench(argparse.Namespace(args=argv[1:]))
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except (ConfigError, planning.PlanError, BackendError, TimeoutError, FirmwareError) as e:
        print(f"msdbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"msdbench: interrupted ({e or 'Ctrl-C'}); everything started was torn down",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
