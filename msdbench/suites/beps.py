"""BEPS, the pub/sub application (paper 4.2, figs 8-9): load balancer -> N workers -> user DB,
payload DB, read endpoint; the client's workload is timed per request type."""

from __future__ import annotations

from msdbench.axes import Cell, PlanError
from msdbench.manifest import Manifest, Service
from msdbench.suites.base import Job, Suite, common_settings, driver_base, host_settings

ISOLATIONS = ("co-located", "tiered", "isolated")


def services(settings: dict) -> list[Service]:
    workers = int(settings.get("workers", 5))
    return ([Service("lb", "lb", "")]
            + [Service(f"worker{i}", "worker", "") for i in range(workers)]
            + [Service("userdb", "userdb", ""), Service("payloaddb", "payloaddb", ""),
               Service("reader", "reader", "")])


def plan_settings(cell: Cell, settings: dict) -> dict:
    workers = int(settings.get("workers", 5))
    if workers < 1:
        raise PlanError(f"workers: {workers} must be >= 1")
    return settings | {"workers": workers}


def settings(config: dict) -> dict:
    return common_settings(config) | {"workers": config["beps"]["workers"],
                                      "workload": config["beps"]["workload"]}


def jobs(config: dict) -> list[Job]:
    sc = config.get("beps") or {}
    s = settings(config)
    return [Job.of(Cell("beps", platform, backend, iso, dep), s | host_settings(config, dep))
            for platform in config["platforms"] for backend in config["backends"]
            for iso in sc.get("isolations", []) for dep in sc.get("deployments", [])]


def driver_spec(m: Manifest) -> dict:
    return driver_base(m, "beps") | {"workload": m.settings.get("workload", {})}


SUITE = Suite(
    name="beps", title="BEPS latency per request type and deployment (paper figs 8-9)",
    isolations=ISOLATIONS, services=services,
    path="beps/{platform}/{backend}/{isolation}/d{deployment}",
    jobs=jobs, settings=settings, plan_settings=plan_settings, driver_spec=driver_spec,
    figures={"beps": "msdbench.figures.beps:plot"})
