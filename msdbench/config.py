"""The configuration: validated against the schema, then expanded into the matrix of cells.

Errors name the field, the value and what is allowed, and are raised before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from msdbench.planning import Cell, PlanError, check_cell, client_host, micro_contradiction


class ConfigError(ValueError):
    pass


def schema() -> dict:
    return yaml.safe_load(resources.files("msdbench").joinpath("schemas/config.schema.yaml").read_text())


def _where(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _keys_as_text(config: dict) -> dict:
    """YAML reads `deployments: {5: ...}` with an integer key; JSON Schema names keys as text."""
    if isinstance(config.get("deployments"), dict):
        config = dict(config, deployments={str(k): v for k, v in config["deployments"].items()})
    return config


def validate(config: dict) -> dict:
    """Raise ConfigError for the first problems found (all of them, up to a few)."""
    from msdbench.hosts import HostError, check_hosts

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(_keys_as_text(config)), key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors[:5]:
            msg = e.message
            if e.validator == "enum":
                msg = f"{e.instance!r} is not allowed; allowed values: {e.validator_value}"
            elif e.validator == "pattern":
                msg = f"{e.instance!r} is not allowed; {e.schema.get('description', e.message)}"
            elif e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                msg += f"; allowed keys: {allowed}"
            lines.append(f"config field '{_where(e.path)}': {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    try:
        check_hosts(config.get("hosts"))
    except HostError as e:
        raise ConfigError(f"invalid configuration: config field {e}") from None
    for job in matrix(config) + throughput_matrix(config) + device_matrix(config):  # plannable
        try:
            check_cell(job.cell)
            client_host(job.cell, job.settings)
        except PlanError as e:
            raise ConfigError(f"invalid configuration: {job.suite_key} cell {job.label}: {e}") from None
    t = config.get("throughput") or {}
    if t.get("isolations") and "open" in t.get("modes", []) and not t.get("open"):
        raise ConfigError("invalid configuration: config field 'throughput.modes' holds 'open', "
                          "which needs a 'throughput.open' section with its offered 'rates'")
    return config


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return validate(config)


@dataclass(frozen=True)
class Job:
    """One cell of the matrix with the settings that shape its numbers."""
    cell: Cell
    settings_json: str  # canonical JSON: a Snakemake param, so a changed setting reruns the cell

    @property
    def suite_key(self) -> str:
        return self.cell.suite

    @property
    def stem(self) -> str:
        c = self.cell
        base = f"{c.suite}/{c.platform}/{c.backend}/{c.isolation}/d{c.deployment}"
        return base + (f"/p{c.payload}" if c.suite == "micro" else "")

    @property
    def label(self) -> str:
        return self.stem.replace("/", " ")

    @property
    def settings(self) -> dict:
        return json.loads(self.settings_json)


def suite_settings(config: dict, suite: str) -> dict:
    common = {"pinning": config["pinning"], "deadline_s": config["deadline_s"]}
    if config.get("wire"):
        common["wire"] = config["wire"]  # the services' limits (transports/codec.py)
    s = config[suite]
    if suite == "micro":
        return common | {k: s[k] for k in ("payload_mode", "requests", "warmup")}
    return common | {"workers": s["workers"], "workload": s["workload"]}


def host_settings(config: dict, deployment: int) -> dict:
    """What a cell on another host adds to its settings: which host, and that host's entry (so a
    change to the host reruns exactly its cells). Empty for deployments on this machine."""
    from msdbench.planning import OTHER_HOST_DEPLOYMENTS

    if deployment not in OTHER_HOST_DEPLOYMENTS:
        return {}
    placed = _keys_as_text(config).get("deployments", {}).get(str(deployment)) or {}
    name = placed.get("client_host")
    hosts = config.get("hosts") or {}
    if name is not None and (name not in hosts or name == "local"):
        raise ConfigError(f"invalid configuration: config field 'deployments.{deployment}."
                          f"client_host': {name!r} is not a host of `hosts:` other than 'local' "
                          f"(defined: {sorted(hosts) or 'none'})")
    out = {"client_host": name, "hosts": {name: hosts[name]} if name in hosts else {}}
    if "local" in hosts:
        out["hosts"]["local"] = hosts["local"]
    return out


def cell_settings(config: dict, suite: str, deployment: int) -> dict:
    """One cell's settings: its suite's, and where its client goes."""
    return suite_settings(config, suite) | host_settings(config, deployment)


def backend_options(config: dict) -> dict:
    return {"docker_host": config.get("docker_host")} if config.get("docker_host") else {}


def matrix(config: dict) -> list[Job]:
    """Every cell the config asks for. In the micro suite, isolation and deployment are one
    choice (see planning.micro_contradiction): pairs that describe no deployment are left out."""
    jobs = []
    for suite in ("micro", "beps"):
        sc = config.get(suite) or {}
        payloads = sc.get("payloads", [None]) if suite == "micro" else [None]
        for platform in config["platforms"]:
            for backend in config["backends"]:
                for iso in sc.get("isolations", []):
                    for dep in sc.get("deployments", []):
                        if suite == "micro" and micro_contradiction(iso, dep):
                            continue
                        settings = json.dumps(cell_settings(config, suite, dep), sort_keys=True)
                        for payload in payloads:
                            jobs.append(Job(Cell(suite, platform, backend, iso, dep, payload), settings))
    return jobs


# -- the microcontroller tier (paper figs 7 and 10): cells of the device backend -------------

DEVICE_BOARD_KEYS = ("board", "port", "label", "source", "icount", "icount_align", "link_rate_bps",
                     "call_deadline_s", "retry_s")


@dataclass(frozen=True)
class DeviceJob(Job):
    """A cell on a board: its own sizes (the paper's device sizes), tables and figures."""

    @property
    def suite_key(self) -> str:
        return "device"


def device_settings(config: dict, suite: str) -> dict:
    d = config["device"]
    board = {k: d[k] for k in DEVICE_BOARD_KEYS if k in d}
    s = d[suite]
    common = {"deadline_s": config["deadline_s"], "device": board}
    if suite == "micro":
        return common | {"payload_mode": s.get("payload_mode", "binary"),
                         "requests": s["requests"], "warmup": s["warmup"]}
    return common | {"workers": s.get("workers", 5), "workload": s["workload"]}


def device_matrix(config: dict) -> list[DeviceJob]:
    """Every board cell the `device` section asks for (none without one). The micro suite pairs
    co-located with deployment 1 and isolated with 2 and 4, as on the host."""
    d = config.get("device")
    if not d:
        return []
    jobs = []
    for suite in ("micro", "beps"):
        s = d[suite]
        settings = json.dumps(device_settings(config, suite), sort_keys=True)
        for iso in s["isolations"]:
            for dep in s["deployments"]:
                if suite == "micro" and micro_contradiction(iso, dep):
                    continue
                for payload in (s["payloads"] if suite == "micro" else [None]):
                    cell = Cell(suite, "specialized", "device", iso, dep, payload)
                    jobs.append(DeviceJob(cell, settings))
    return jobs


# -- the throughput study (paper 4.3): one job per mode x platform x backend x isolation ---------

THROUGHPUT_DEPLOYMENT = 2  # the client in its own domain (the paper used 5: another host)
THROUGHPUT_DEFAULTS = {"pinning": "split", "clients": [1, 2, 4, 8], "pairs_per_client": 1000,
                       "duration_s": None, "warmup_pairs": 50, "point_deadline_s": 120}


@dataclass(frozen=True)
class ThroughputJob(Job):
    """One throughput sweep: a BEPS manifest (deployment 2) and its sweep settings."""
    mode: str = "closed"

    @property
    def suite_key(self) -> str:
        return "throughput"

    @property
    def stem(self) -> str:
        c = self.cell
        return f"throughput/{self.mode}/{c.platform}/{c.backend}/{c.isolation}"


def throughput_settings(config: dict, mode: str) -> dict:
    """A sweep's settings: only what shapes its numbers, so that changing the open loop's rates
    reruns the open-loop sweeps alone."""
    t = THROUGHPUT_DEFAULTS | (config.get("throughput") or {})
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
            "throughput": sweep} | ({"wire": config["wire"]} if config.get("wire") else {})


def throughput_matrix(config: dict) -> list[ThroughputJob]:
    """Every throughput sweep the config asks for (none without a `throughput` section)."""
    t = config.get("throughput") or {}
    jobs = []
    for mode in t.get("modes", []):
        settings = json.dumps(throughput_settings(config, mode), sort_keys=True)
        for platform in t.get("platforms") or config["platforms"]:
            for backend in t.get("backends") or config["backends"]:
                isolations = t.get("isolations", [])
                if mode == "open" and (t.get("open") or {}).get("isolations") is not None:
                    isolations = t["open"]["isolations"]
                for iso in isolations:
                    cell = Cell("beps", platform, backend, iso, THROUGHPUT_DEPLOYMENT)
                    jobs.append(ThroughputJob(cell, settings, mode))
    return jobs
