"""The throughput study (paper 4.3, fig 11): N client processes drive BEPS through its load
balancer. A cell is a sweep (one manifest, many points); its own axis is the mode (closed loop:
requests/s against clients; open loop: latency against offered load). The sweep itself is
msdbench/throughput/.

Where the clients sit: `throughput.deployment`, 5 (the paper's: the clients on another host,
`deployments.5.client_host`) or 2 (their own domain on this host). Absent, it is 5 when the config
names a deployment-5 client host and 2 otherwise, for both backends (docker: the clients' container
on that host); the cell path says which it was."""

from __future__ import annotations

from msdbench.axes import Cell
from msdbench.suites import beps
from msdbench.axes import PlanError
from msdbench.suites.base import Job, Suite, host_settings, keys_as_text, wire_settings

DEPLOYMENTS = (2, 5)   # the clients in their own domain on this host, or on another host
MODES = ("closed", "open")
DEFAULTS = {"pinning": "split", "clients": [1, 2, 4, 8], "pairs_per_client": 1000,
            "duration_s": None, "warmup_pairs": 50, "point_deadline_s": 120}

COLUMNS = (
    "mode", "platform", "backend", "isolation", "deployment", "client_host", "client_host_kind",
    "pinning", "client_cpus",
    "server_cpus", "point", "clients", "offered_rps", "status", "rps", "rps_sum_clients",
    "completed", "call_errors", "wall_s", "is_knee", "saturated", "is_peak", "n", "mean_us",
    "sd_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "service_p50_us",
    "service_p99_us", "client_p99_min_us", "client_p99_max_us", "client_rps_min",
    "client_rps_max", "server_cpu_util", "server_cpu_us_per_call", "client_cpu_util",
    "busiest_domain", "busiest_domain_util", "domain_cpu_s", "domain_util", "domain_rss_mb",
    "host_busy", "unaccounted_cpu_util", "other_load_before", "attempt",
    "lost_users", "census_checked", "failure", "last_good_clients", "log_tail", "config_hash",
    "git_revision")


def settings(config: dict, mode: str = "closed") -> dict:
    """A sweep's settings: only what shapes its numbers, so that changing the open loop's rates
    reruns the open-loop sweeps alone."""
    t = DEFAULTS | (config.get("throughput") or {})
    sweep = {"mode": mode, "warmup_pairs": t["warmup_pairs"],
             "point_deadline_s": t["point_deadline_s"], "quiet": t.get("quiet")}
    if mode == "closed":
        sweep.update(clients=t["clients"], pairs_per_client=t["pairs_per_client"],
                     duration_s=t["duration_s"])
        if t["clients"] == "auto":
            sweep["auto"] = t.get("auto") or {}
    else:
        o = t.get("open") or {}
        sweep.update(open_clients=o.get("clients", 4), rates=o.get("rates", []),
                     open_duration_s=o.get("duration_s", 2.0))
    return {"pinning": t["pinning"], "workers": t.get("workers", config["beps"]["workers"]),
            "throughput": sweep} | wire_settings(config)


def deployment(config: dict) -> int:
    """Where a sweep's clients sit (see the module doc)."""
    t = config.get("throughput") or {}
    named = (keys_as_text(config).get("deployments") or {}).get("5")
    return t.get("deployment", 5 if named else 2)


def check(cell: Cell) -> None:
    if cell.deployment not in DEPLOYMENTS:
        raise PlanError(f"deployment: the throughput suite runs at deployment 2 or 5, "
                        f"not {cell.deployment!r}")


def jobs(config: dict) -> list[Job]:
    """Every sweep the config asks for (none without a `throughput` section)."""
    t = config.get("throughput") or {}
    out = []
    for mode in t.get("modes", []):
        s = settings(config, mode)
        for platform in t.get("platforms") or config["platforms"]:
            for backend in t.get("backends") or config["backends"]:
                isolations = t.get("isolations", [])
                if mode == "open" and (t.get("open") or {}).get("isolations") is not None:
                    isolations = t["open"]["isolations"]
                dep = deployment(config)
                for iso in isolations:
                    out.append(Job.of(Cell("throughput", platform, backend, iso, dep),
                                      s | host_settings(config, dep), mode=mode))
    return out


SUITE = Suite(
    name="throughput", title="BEPS requests/s against concurrent clients (paper fig 11)",
    isolations=beps.ISOLATIONS, services=beps.services,
    path="throughput/{mode}/{platform}/{backend}/{isolation}/d{deployment}", axes=("mode",),
    latency=False, check=check, jobs=jobs, settings=settings,
    plan_settings=beps.plan_settings,
    measure="msdbench.throughput.sweep:run_sweep", rows="msdbench.throughput.table:table_rows",
    lines="msdbench.throughput.table:sweep_lines", columns=COLUMNS,
    sort=("mode", "platform", "backend", "isolation", "point"), all_columns=True,
    figures={"throughput": "msdbench.figures.throughput:plot_rps",
             "throughput-latency": "msdbench.figures.throughput:plot_latency"})
