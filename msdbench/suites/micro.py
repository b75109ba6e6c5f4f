"""The microbenchmark (paper 4.1, figs 5-6): a client calls poll(payload) -> i64 on one service,
closed loop, every call timed. Its own axis is the payload."""

from __future__ import annotations

from msdbench.axes import Cell, PlanError
from msdbench.manifest import Manifest, Service
from msdbench.suites.base import Job, Suite, common_settings, driver_base, host_settings


def services(settings: dict) -> list[Service]:
    return [Service("poll", "poll", "")]


def contradiction(isolation: str, deployment: int) -> str | None:
    """The microbenchmark has one server-side service, so its isolation *is* where the client
    sits: co-located means the client shares poll's domain (deployment 1) and isolated means it
    does not (deployment >= 2). The other pairings describe no deployment at all."""
    if isolation == "co-located" and deployment != 1:
        return (f"isolation 'co-located' with deployment {deployment}: in the micro suite co-located "
                "means client and poll share a domain, which is deployment 1")
    if isolation == "isolated" and deployment == 1:
        return ("isolation 'isolated' with deployment 1: in the micro suite deployment 1 puts the "
                "client inside poll's domain, which is co-located")
    return None


def check(cell: Cell) -> None:
    if cell.payload is None or cell.payload < 0:
        raise PlanError(f"payload: {cell.payload!r} must be an integer >= 0 for the micro suite")
    if contradiction(cell.isolation, cell.deployment):
        raise PlanError(contradiction(cell.isolation, cell.deployment))


def settings(config: dict) -> dict:
    return common_settings(config) | {k: config["micro"][k] for k in ("payload_mode", "requests", "warmup")}


def jobs(config: dict) -> list[Job]:
    """Isolation and deployment are one choice here: pairs that describe no deployment are left out."""
    sc = config.get("micro") or {}
    s = settings(config)
    return [Job.of(Cell("micro", platform, backend, iso, dep, payload), s | host_settings(config, dep))
            for platform in config["platforms"] for backend in config["backends"]
            for iso in sc.get("isolations", []) for dep in sc.get("deployments", [])
            if not contradiction(iso, dep) for payload in sc.get("payloads", [])]


def shares_clock(m: Manifest) -> bool:
    """Whether the client reads the server side's clock (poll's reply is its monotonic time):
    true on this machine and in its namespaces; a VM's or a remote host's clock is its own, so
    there the round trip has no call/return split."""
    kinds = {name: (entry or {}).get("kind", "local") for name, entry in (m.hosts or {}).items()}
    return all(kinds.get(d.host, "local") in ("local", "netns") for d in m.domains)


def driver_spec(m: Manifest) -> dict:
    s = m.settings
    return driver_base(m, "micro") | {
        "payload": s["payload"], "payload_mode": s.get("payload_mode", "binary"),
        "requests": s.get("requests", 1000), "warmup": s.get("warmup", 1000),
        "shared_clock": shares_clock(m)}


def row_fields(record) -> dict:
    return {"payload": record.settings.get("payload"),
            "payload_mode": record.settings.get("payload_mode"),
            "wire_bytes": (record.driver or {}).get("wire_bytes")}


SUITE = Suite(
    name="micro", title="poll latency against payload (paper figs 5-6)",
    isolations=("co-located", "isolated"), services=services,
    path="micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}", axes=("payload",),
    jobs=jobs, settings=settings, plan_settings=lambda cell, s: s | {"payload": cell.payload},
    check=check, driver_spec=driver_spec, row_fields=row_fields,
    figures={"micro": "msdbench.figures.micro:plot"})
