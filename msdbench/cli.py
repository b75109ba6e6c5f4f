"""The `msdbench` command: one cell or sweep by hand, and the steps the Snakemake rules call
(every rule runs `msdbench <step>`; the suite registry says what each step does for a suite)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from msdbench import planning, suites
from msdbench.scratch import sweep_leftovers


def _cell_args(ap: argparse.ArgumentParser, required: bool = True) -> None:
    ap.add_argument("--platform", default="linux", choices=planning.PLATFORMS)
    ap.add_argument("--backend", default="process", choices=planning.BACKENDS)
    ap.add_argument("--isolation", required=required,
                    help="co-located | tiered | isolated (micro: co-located | isolated)")
    ap.add_argument("--deployment", type=int, required=required,
                    choices=sorted(planning.DEPLOYMENTS))
    ap.add_argument("--payload", type=int, default=None, help="micro: request payload size")


def _cell(a) -> planning.Cell:
    for flag in ("isolation", "deployment"):
        if getattr(a, flag) is None:
            raise planning.PlanError(f"--{flag} is required (or the cell's path: --cell)")
    payload = a.payload if "payload" in suites.get(a.suite).axes else None
    return planning.Cell(a.suite, a.platform, a.backend, a.isolation, a.deployment, payload)


def _backend_options(a) -> dict | None:
    return {"docker_host": a.docker_host} if a.docker_host else None


def _print_lines(suite: str, meta_path) -> None:
    print("\n".join(suites.resolve(suites.get(suite).lines)(meta_path)))


CELL_FLAGS = ("payload", "requests", "warmup", "payload_mode", "pinning", "workers", "repeats")


def _manifest(a):
    """The cell the flags name: its settings from the config file and the flags, each flag checked
    against the config schema (one line naming the flag and what is allowed), then planned."""
    from msdbench.config import (ConfigError, cell_settings, check_setting, default_config_path,
                                 load)

    device = a.backend == "device"
    config = load(a.config or default_config_path("config/device.yaml" if device else None))
    if a.payload is None and "payload" in suites.get(a.suite).axes:
        a.payload = 0
    if device:
        if not config.get("device"):
            raise ConfigError(f"{a.config}: --backend device needs a `device` section "
                              "(see config/device.yaml)")
        settings = suites.get("device").settings(config, a.suite)  # a board cell of a.suite
        for key in ("board", "port"):
            if getattr(a, key, None):
                settings["device"][key] = getattr(a, key)
    else:
        settings = cell_settings(config, a.suite, a.deployment, a.backend)
    for key in CELL_FLAGS:
        value = getattr(a, key, None)
        if value is not None:
            check_setting(a.suite, key, value, "--" + key.replace("_", "-"))
            if key != "payload":  # the payload is an axis of the cell (planning puts it in)
                settings[key] = value
    return planning.plan(_cell(a), settings)


def cmd_run(a) -> int:
    import shutil

    from msdbench.cell import CellFailed, run_cell

    manifest = _manifest(a)
    sweep_leftovers()
    out = Path(a.out or tempfile.mkdtemp(prefix="msdbench-run-"))
    print(f"msdbench run: outputs go to {out}", flush=True)
    raw, meta = out / "cell.parquet", out / "cell.json"
    work = out / "work"
    try:
        run_cell(manifest, raw, meta, _backend_options(a), workdir=work)
    except CellFailed:
        print(f"msdbench run: the failed cell's record: {meta}; the domains' logs: {work}",
              file=sys.stderr)
        raise
    shutil.rmtree(work, ignore_errors=True)
    _print_lines(a.suite, meta)
    print(f"raw samples: {raw}\nmetadata:    {meta}")
    return 0


def cmd_up(a) -> int:
    from msdbench.config import ConfigError
    from msdbench.up import up

    if a.seconds is not None and not a.seconds > 0:
        raise ConfigError(f"--seconds: {a.seconds:g} is not allowed; allowed: a number > 0 "
                          "(or leave it out: up until Ctrl-C or SIGTERM)")
    manifest = _manifest(a)
    sweep_leftovers()
    return up(manifest, a.addresses, a.seconds, _backend_options(a),
              log=lambda line: print(line, flush=True))


def cmd_plan(a) -> int:
    if a.cell:
        _, cell, _ = suites.of_stem(a.cell)
    elif a.suite:
        cell = _cell(a)
    else:
        raise planning.PlanError("give the cell's path (--cell micro/linux/process/isolated/d2/p0) "
                                 f"or a suite ({', '.join(planning.SUITES)}) and its flags")
    planning.plan(cell, json.loads(a.settings)).save(a.out)
    return 0


def load_manifest(path: str):
    """A planned manifest, its settings checked against the config schema (as `msdbench run`)."""
    from msdbench.config import ConfigError, check_settings
    from msdbench.manifest import Manifest

    try:
        manifest = Manifest.load(path)
    except FileNotFoundError:
        raise ConfigError(f"manifest {path!r} not found (in {Path.cwd()})") from None
    except (TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"manifest {path!r} is not a msdbench manifest ({type(e).__name__}: {e})") \
            from None
    if manifest.backend != "device":  # a board cell's settings follow the `device` section
        check_settings(manifest.suite, manifest.settings)
    return manifest


def cmd_measure(a) -> int:
    from msdbench.scratch import work_dir

    manifest = load_manifest(a.manifest)
    suite = a.suite or manifest.suite
    measure = suites.resolve(suites.get(suite).measure)
    sweep_leftovers()
    # The domains' logs live in the work dir while the cell runs; a failure quotes their tails.
    # --workdir keeps them (and shows how each domain ended).
    if a.workdir:
        measure(manifest, a.raw, a.meta, _backend_options(a), workdir=a.workdir)
    else:
        with work_dir(suite) as tmp:
            measure(manifest, a.raw, a.meta, _backend_options(a), workdir=tmp)
    _print_lines(suite, a.meta)
    return 0


def cmd_image(a) -> int:
    if a.backend == "device":
        from msdbench.device.image import write_stamp

        print(json.dumps(write_stamp(a.out, a.board, a.micropython), indent=2))
        return 0
    if a.backend == "vm":  # not a backend: the guest image of the vm host kind
        from msdbench.vm.stamp import write_stamp

        print(json.dumps(write_stamp(a.out), indent=2))
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

    df = aggregate(a.suite, a.meta, a.csv, a.parquet)
    print(f"{len(df)} rows from {len(a.meta)} cells -> {a.csv}")
    return 0


def cmd_plot(a) -> int:
    import pandas as pd

    suite = suites.figures()[a.figure]
    suites.resolve(suite.figures[a.figure])(pd.read_parquet(a.table), a.png, a.pdf)
    return 0


def cmd_ratios(a) -> int:
    import pandas as pd

    from msdbench.figures.ratios import write

    out = write(a.out, a.tables)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(out[["suite", "comparison", "platform", "backend", "isolation", "deployment",
                   "payload", "op", "ratio", "ratio_p50", "paper_ratio", "host"]].to_string(index=False))
    return 0


def cmd_claims(a) -> int:
    import pandas as pd

    from msdbench.claims import write
    from msdbench.figures.claims import plot

    out = write(a.out, a.tables)
    plot(out, a.png, a.pdf)
    with pd.option_context("display.width", 250, "display.max_colwidth", 80):
        print(out[["claim", "paper", "ours", "verdict", "why"]].to_string(index=False))
    return 0


def cmd_runinfo(a) -> int:
    from msdbench.runinfo import write

    print(write(a.out, a.records, a.tables).to_string(index=False))
    return 0


def cmd_compare(a) -> int:
    from msdbench.compare import main as compare_main

    return compare_main(a.args)


def cmd_gather(a) -> int:
    from msdbench.figures import gather

    gather(a.out, a.files)
    return 0


def cmd_validate(a) -> int:
    from msdbench.config import load, matrix

    config = load(a.config)
    jobs = matrix(config)
    print(f"{a.config}: valid; {len(jobs)} cells (a throughput cell is one sweep)")
    for j in jobs:
        print("  " + j.label)
    return 0


def cmd_config_doc(a) -> int:
    from msdbench.config import ConfigError, schema
    from msdbench.config_doc import update

    if not update(a.file, schema(), check=a.check):
        raise ConfigError(f"{a.file} is out of date: run `msdbench config-doc`")
    return 0


def cmd_bench(a) -> int:
    from msdbench.bench import main as bench_main

    return bench_main(a.args)


def cmd_throughput_run(a) -> int:
    import shutil

    from msdbench.aggregate import aggregate
    from msdbench.config import backend_settings, load, suite_settings
    from msdbench.throughput import SweepSettings, run_sweep, summary_lines

    config = load(a.config)
    config.setdefault("throughput", {"isolations": [a.isolation], "modes": [a.mode]})
    settings = suite_settings(config, "throughput", mode=a.mode) | backend_settings(config, a.backend)
    t = settings["throughput"]
    if a.clients:
        t["clients"] = "auto" if a.clients == "auto" else [int(x) for x in a.clients.split(",")]
        if t["clients"] == "auto":
            t.setdefault("auto", {})
    if a.max_clients:
        t.setdefault("auto", {})["max_clients"] = a.max_clients
    if a.rates:
        t["rates"] = [float(x) for x in a.rates.split(",")]
    for key, value in (("pairs_per_client", a.pairs), ("warmup_pairs", a.warmup),
                       ("open_clients", a.open_clients), ("point_deadline_s", a.point_deadline)):
        if value is not None:
            t[key] = value
    if a.quiet:
        t["quiet"] = {"max_unaccounted": a.quiet, "wait_s": 60, "retries": 2}
    if a.duration is not None:
        t["duration_s" if a.mode == "closed" else "open_duration_s"] = a.duration
    for key in ("pinning", "workers"):
        if getattr(a, key) is not None:
            settings[key] = getattr(a, key)
    SweepSettings.from_settings(settings)  # reject bad combinations before anything starts
    from msdbench.suites.base import host_settings
    from msdbench.suites.throughput import deployment

    dep = a.deployment or deployment(config)
    settings |= host_settings(config, dep)
    cell = planning.Cell("throughput", a.platform, a.backend, a.isolation, dep)
    manifest = planning.plan(cell, settings)
    sweep_leftovers()
    out = Path(a.out or tempfile.mkdtemp(prefix="msdbench-run-throughput-"))
    print(f"msdbench throughput run: outputs go to {out}", flush=True)
    meta = run_sweep(manifest, out / "sweep.parquet", out / "sweep.json", _backend_options(a),
                     workdir=out / "work", log=lambda line: print(line, flush=True))
    shutil.rmtree(out / "work", ignore_errors=True)
    aggregate("throughput", [out / "sweep.json"], out / "table.csv", out / "table.parquet")
    print(summary_lines(meta)[-1])
    print(f"raw samples: {out / 'sweep.parquet'}\nmetadata:    {out / 'sweep.json'}\n"
          f"table:       {out / 'table.csv'}")
    return 0


def cmd_clean(a) -> int:
    from msdbench.clean import clean

    return clean(a.docker_host, everything=a.all, dry_run=a.dry_run, images=a.images,
                 config=a.config)


def cmd_hosts(a) -> int:
    from msdbench.config import load
    from msdbench.hosts.check import main as check

    return check(load(a.config))


def _settings_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--config", default=None,
                    help="settings not given here come from this file (default: config/config.yaml "
                         "here, else the repository's; config/device.yaml for --backend device)")
    ap.add_argument("--requests", type=int, help="micro: timed calls")
    ap.add_argument("--warmup", type=int, help="micro: untimed calls first")
    ap.add_argument("--payload-mode", dest="payload_mode", choices=("binary", "list"))
    ap.add_argument("--pinning", choices=tuple(planning.PINNINGS))
    ap.add_argument("--workers", type=int, help="beps: worker instances")
    ap.add_argument("--docker-host")


def _measure_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest")
    p.add_argument("--raw", required=True, help="samples (.parquet), beside --meta")
    p.add_argument("--meta", required=True, help="the cell's record (.json)")
    p.add_argument("--docker-host")
    p.add_argument("--workdir", help="keep the domains' logs here (default: a temp dir, removed)")


def _aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--csv", required=True)
    p.add_argument("--parquet", required=True)
    p.add_argument("meta", nargs="+", help="the cells' records (raw samples beside them)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="msdbench", description="What microservice isolation and "
                                 "placement cost, measured.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    by_hand = tuple(n for n, s in suites.SUITES.items() if s.latency and s.services)

    p = sub.add_parser("run", help="measure one cell without Snakemake; print a summary")
    p.add_argument("suite", choices=by_hand)
    _cell_args(p)
    _settings_args(p)
    p.add_argument("--repeats", type=int, help="repetitions, each on a fresh bring-up (default: "
                   "the config's repeats)")
    p.add_argument("--board", choices=("emulated", "serial", "unix"), help="device: board kind")
    p.add_argument("--port", help="device: the serial port of a real board (--board serial)")
    p.add_argument("--out", help="directory for cell.parquet and cell.json (default: a new "
                   "msdbench-run-* directory in the temp dir; printed)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("up", help="bring one cell's services up for any Thrift client; write their "
                       "addresses; hold until Ctrl-C/SIGTERM or --seconds")
    p.add_argument("suite", choices=tuple(n for n in by_hand if n != "device"))
    _cell_args(p)
    _settings_args(p)
    p.add_argument("--seconds", type=float, help="tear down after this many seconds")
    p.add_argument("--addresses", required=True, metavar="FILE",
                   help='JSON written once the services answer: {"service": "host:port", ..., '
                        '"wire": {...}}; removed at teardown')
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("plan", help="(rule deploy) write the manifest of one cell")
    p.add_argument("suite", nargs="?", choices=planning.SUITES)
    p.add_argument("--cell", help="the cell's path, e.g. micro/linux/process/isolated/d2/p0 "
                   "(instead of the suite and its flags)")
    _cell_args(p, required=False)
    p.add_argument("--settings", required=True, help="the cell's settings as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("measure", help="(rule run) bring a manifest up, measure, tear down")
    _measure_args(p)
    p.add_argument("--suite", choices=planning.SUITES,
                   help="measure as this suite (default: the manifest's)")
    p.set_defaults(fn=cmd_measure)

    p = sub.add_parser("image", help="(rule build_image) build or stamp what a backend runs")
    p.add_argument("backend", choices=planning.BACKENDS + ("vm",),
                   help="a backend, or vm: the guest image of the vm host kind (deployments 3, 4)")
    p.add_argument("--out", required=True, help="the stamp (JSON) the cells depend on")
    p.add_argument("--docker-host")
    p.add_argument("--board", default="emulated", choices=("emulated", "serial", "unix"),
                   help="device: which board kind the firmware is for")
    p.add_argument("--micropython", help="device: MicroPython source (tarball or git clone)")
    p.set_defaults(fn=cmd_image)

    p = sub.add_parser("aggregate", help="(rule aggregate) cells -> one summary table")
    p.add_argument("suite", choices=planning.SUITES)
    _aggregate_args(p)
    p.set_defaults(fn=cmd_aggregate)

    p = sub.add_parser("plot", help="(rule plot) a summary table -> one figure (.png and .pdf)")
    p.add_argument("figure", choices=tuple(suites.figures()))
    p.add_argument("table", help="the suite's summary table (.parquet)")
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser("ratios", help="(rule ratios) the paper's headline ratios from the tables")
    p.add_argument("out", help="the ratio table (.csv)")
    p.add_argument("tables", nargs="+", help="the suites' summary tables (.parquet)")
    p.set_defaults(fn=cmd_ratios)

    p = sub.add_parser("claims", help="(rule claims) the paper's claims against the tables: "
                       "a CSV and a figure")
    p.add_argument("out", help="the claims table (.csv)")
    p.add_argument("tables", nargs="*", help="summary tables (.parquet), named for their suite")
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.set_defaults(fn=cmd_claims)

    p = sub.add_parser("runinfo", help="(rule run_info) the run's machine, versions, pinning, "
                       "noise and steadiness as one table")
    p.add_argument("out", help="the table (.csv)")
    p.add_argument("--records", nargs="+", required=True, help="the cells' records (.json)")
    p.add_argument("--tables", nargs="*", default=[], help="latency summary tables (.parquet)")
    p.set_defaults(fn=cmd_runinfo)

    p = sub.add_parser("compare", add_help=False,
                       help="which cells of two runs (results dirs or git revisions) differ "
                       "beyond their 95%% CIs; exit 1 if any (--help for options)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("gather", help="(rule figures) the figures into one directory")
    p.add_argument("out")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_gather)

    p = sub.add_parser("validate", help="check a config file and list its cells")
    p.add_argument("config", nargs="?", default="config/config.yaml")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("config-doc", help="write every config key (from the schema) into "
                       "config/README.md")
    p.add_argument("--file", default="config/README.md")
    p.add_argument("--check", action="store_true", help="only check that the file is current")
    p.set_defaults(fn=cmd_config_doc)

    p = sub.add_parser("bench", add_help=False,
                       help="poll over every binding vs a raw TCP echo, one run (--help for options)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("throughput", help="the throughput study (paper 4.3): `run` a sweep by "
                       "hand; `measure`, `aggregate`: the generic steps for suite throughput")
    tsub = p.add_subparsers(dest="action", required=True)
    p = tsub.add_parser("run", help="one sweep by hand (no Snakemake): plan, bring up, sweep, "
                        "tear down")
    p.add_argument("--platform", default="linux", choices=planning.PLATFORMS)
    p.add_argument("--backend", default="process", choices=planning.BACKENDS)
    p.add_argument("--isolation", required=True, choices=suites.get("throughput").isolations)
    p.add_argument("--mode", default="closed", choices=("closed", "open"))
    p.add_argument("--deployment", type=int, choices=(2, 5),
                   help="5: the clients on the config's deployment-5 host; 2: in their own domain "
                        "here (default: the config's throughput.deployment)")
    p.add_argument("--config", default=None,
                   help="settings not given here come from this file (default: config/config.yaml "
                        "here, else the repository's)")
    p.add_argument("--clients", help="closed loop: e.g. 1,2,4,8 or auto")
    p.add_argument("--max-clients", type=int, help="auto: the largest N to try")
    p.add_argument("--pairs", type=int, help="timed create/delete pairs per client")
    p.add_argument("--duration", type=float, help="closed: seconds per point; open: per rate")
    p.add_argument("--rates", help="open loop: offered rates, e.g. 500,1000,2000")
    p.add_argument("--open-clients", type=int)
    p.add_argument("--warmup", type=int, help="warm-up pairs per client")
    p.add_argument("--pinning", choices=tuple(planning.PINNINGS))
    p.add_argument("--workers", type=int)
    p.add_argument("--point-deadline", type=float)
    p.add_argument("--quiet", type=float, metavar="CPUS",
                   help="shared host: wait for other work below CPUS before each point "
                        "(up to 60 s) and rerun a point it disturbed (up to 2 times)")
    p.add_argument("--docker-host")
    p.add_argument("--out", help="directory for sweep.parquet, sweep.json, table.csv")
    p.set_defaults(fn=cmd_throughput_run)
    p = tsub.add_parser("measure", help="= msdbench measure MANIFEST --suite throughput")
    _measure_args(p)
    p.set_defaults(fn=cmd_measure, suite="throughput")
    p = tsub.add_parser("aggregate", help="= msdbench aggregate throughput")
    _aggregate_args(p)
    p.set_defaults(fn=cmd_aggregate, suite="throughput")

    p = sub.add_parser("hosts", help="`hosts check`: for each configured host, is it reachable, "
                       "its kernel, CPU, Python and msdbench version (netns: create and remove one)")
    p.add_argument("action", choices=("check",))
    p.add_argument("--config", default="config/config.yaml")
    p.set_defaults(fn=cmd_hosts)

    p = sub.add_parser("clean", help="remove what crashed runs left behind: work directories and "
                       "sockets in the temp dir, docker containers, networks and volumes (label "
                       "msdbench.run; images only with --images), emulated hosts' network namespaces and "
                       "links (msdb-<pid>-<start>-*), guests' QEMU, taps and bridges (msdv*), and "
                       "the iptables rules that forwarded between them (comment 'msdb-... forward')")
    p.add_argument("--docker-host", help="clean only this engine (URL). Without it: the local engine "
                   "($DOCKER_HOST or its socket), and this machine's namespaces, guests, forwarding "
                   "rules and temp files, and the config's ssh hosts")
    p.add_argument("--config", default=None,
                   help="its ssh hosts are cleaned too: msdbench domains there whose harness is "
                        "gone, and their engines (default: config/config.yaml when present)")
    p.add_argument("--all", action="store_true",
                   help="also remove the objects of runs that are still alive or belong to another machine")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--images", action="store_true",
                   help="also remove msdbench's docker images other than this checkout's service "
                   "image and its base (each code change builds a new one; images in use stay)")
    p.set_defaults(fn=cmd_clean)
    return ap


def main(argv: list[str] | None = None) -> int:
    from msdbench.backends.base import BackendError
    from msdbench.config import ConfigError
    from msdbench.device.firmware import FirmwareError
    from msdbench.records import RecordError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its options are its own (msdbench/bench.py)
        return cmd_bench(argparse.Namespace(args=argv[1:]))
    if argv[:1] == ["compare"]:  # likewise (msdbench/compare.py)
        return cmd_compare(argparse.Namespace(args=argv[1:]))
    a = parser().parse_args(argv)
    try:
        return a.fn(a)
    except (ConfigError, planning.PlanError, BackendError, RecordError, TimeoutError,
            FirmwareError) as e:
        print(f"msdbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"msdbench: interrupted ({e or 'Ctrl-C'}); everything started was torn down",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
