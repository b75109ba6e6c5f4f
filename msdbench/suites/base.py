"""What a suite is made of (`Suite`) and what the matrix is made of (`Job`).

A suite declares: the services it deploys, the axes of its cells (beyond platform, backend,
isolation and deployment), where its cells live on disk, which settings shape its numbers, how a
cell is measured, the rows it adds to its summary table and the figures drawn from that table.
Code that needs one of these asks the registry (`msdbench.suites.get`) instead of testing the
suite's name.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from importlib import import_module
from typing import Callable

from msdbench.axes import OTHER_HOST_DEPLOYMENTS, Cell, PlanError
from msdbench.manifest import Manifest, Service

# The columns of a latency suite's summary table, in this order (absent ones are left out).
LATENCY_COLUMNS = (
    "suite", "platform", "backend", "isolation", "deployment", "client_host", "client_host_kind",
    "client_accel", "server_host", "server_host_kind", "server_accel", "payload", "payload_mode",
    "wire_bytes", "op", "status", "repeats", "redone",
    "disturbed", "n", "mean_us", "sd_us", "ci95_low_us", "ci95_high_us", "min_us", "p50_us",
    "p50_ci95_low_us", "p50_ci95_high_us", "p90_us", "p99_us", "p99.9_us", "max_us", "ci_method",
    "echo_p50_us", "mean_x_echo", "mean_x_echo_ci95_low", "mean_x_echo_ci95_high", "p50_x_echo",
    "p50_x_echo_ci95_low", "p50_x_echo_ci95_high", "p50_rep_cv", "p50_x_echo_rep_cv",
    "server_mean_us", "call_mean_us", "return_mean_us", "host_load1", "other_cpu", "steal",
    "pinning", "problems", "reason", "log_tail", "config_hash", "git_revision")
LATENCY_SORT = ("platform", "backend", "isolation", "deployment", "payload", "op")


def resolve(ref: str):
    """"package.module:name" -> the object (suites name their code lazily, so that the registry
    stays importable where pandas or matplotlib are not)."""
    module, name = ref.split(":")
    return getattr(import_module(module), name)


def wire_settings(config: dict) -> dict:
    """The services' limits on what a peer sends (transports/codec.py), where the config sets them."""
    return {"wire": config["wire"]} if config.get("wire") else {}


def common_settings(config: dict) -> dict:
    """The settings of every latency cell, whatever its suite: its repetitions among them."""
    return ({"pinning": config["pinning"], "deadline_s": config["deadline_s"],
             "repeats": config.get("repeats", 1), "quiet": config.get("quiet")}
            | wire_settings(config))


def keys_as_text(config: dict) -> dict:
    """YAML reads `deployments: {5: ...}` with an integer key; JSON Schema names keys as text."""
    if isinstance(config.get("deployments"), dict):
        config = dict(config, deployments={str(k): v for k, v in config["deployments"].items()})
    return config


def host_settings(config: dict, deployment: int) -> dict:
    """What a cell off the bare local layout adds to its settings: which host the client goes to
    (deployments 3-5), which host the server side goes to (`server_host`, where configured), and
    those hosts' entries (so a change to a host reruns exactly its cells). Empty otherwise."""
    placed = keys_as_text(config).get("deployments", {}).get(str(deployment)) or {}
    hosts = config.get("hosts") or {}
    out: dict = {}
    roles = (("client_host",) if deployment in OTHER_HOST_DEPLOYMENTS else ()) + (
        ("server_host",) if placed.get("server_host") not in (None, "local") else ())
    if not roles:
        return out
    from msdbench.hosts import host_entry

    hosts = {k: host_entry(v) for k, v in hosts.items()}
    out["hosts"] = {}
    for role in roles:
        name = placed.get(role)
        if name is not None and (name not in hosts or name == "local"):
            raise PlanError(f"'deployments.{deployment}.{role}': {name!r} is not a host of "
                            f"`hosts:` other than 'local' (defined: {sorted(hosts) or 'none'})")
        out[role] = name
        if name in hosts:
            out["hosts"][name] = hosts[name]
        on = (hosts.get(name) or {}).get("on")  # a VM's own host (deployment 4)
        if on in hosts:
            out["hosts"][on] = hosts[on]
    if "local" in hosts:
        out["hosts"]["local"] = hosts["local"]
    return out


def driver_base(m: Manifest, driver: str) -> dict:
    return {"driver": driver, "deadline_s": m.settings.get("deadline_s", 600)}


@dataclass(frozen=True)
class Suite:
    name: str
    title: str                                  # one line: help texts, docs, the figure captions
    isolations: tuple[str, ...]
    services: Callable[[dict], list[Service]] | None  # manifest settings -> server side, entry
    #                                             first (None: a suite over other suites' cells)
    path: str                                   # a cell's path under results/{manifests,raw,logs}/
    jobs: Callable[[dict], list["Job"]]         # validated config -> this suite's cells
    settings: Callable[..., dict]               # config (, axes) -> what shapes a cell's numbers
    axes: tuple[str, ...] = ()                  # own cell axes, e.g. ("payload",)
    latency: bool = True                        # per-call latency: `msdbench run`, the ratios
    fixed: dict = field(default_factory=dict)   # cell fields this suite fixes, e.g. deployment 2
    plan_settings: Callable[[Cell, dict], dict] = lambda cell, s: s  # what the manifest adds
    check: Callable[[Cell], None] = lambda cell: None  # raises PlanError for a cell it refuses
    driver_spec: Callable[[Manifest], dict] | None = None  # latency suites: the client's spec
    row_fields: Callable[[object], dict] = lambda record: {}  # a record -> the suite's own columns
    measure: str = "msdbench.cell:run_cell"     # (manifest, raw, meta, backend_options, workdir)
    rows: str = "msdbench.summary:cell_rows"    # (meta path) -> the table's rows of one cell
    lines: str = "msdbench.summary:cell_lines"  # (meta path) -> a human summary of one cell
    columns: tuple[str, ...] = LATENCY_COLUMNS  # the summary table's column order
    sort: tuple[str, ...] = LATENCY_SORT        # its row order (columns it has)
    all_columns: bool = False                   # every column, even where no row has it
    figures: dict[str, str] = field(default_factory=dict)  # name -> "module:fn(table, png, pdf)"

    # -- the cell path: built and parsed here only ---------------------------------------------
    def stem(self, cell: Cell, axes: dict | None = None) -> str:
        return self.path.format(**(asdict(cell) | (axes or {})))

    def parse(self, stem: str) -> tuple[Cell, dict]:
        """A cell path of this suite -> (the cell, its other axes); PlanError if it is not one."""
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        m = re.fullmatch(pattern, stem)
        if m is None:
            raise PlanError(f"cell: {stem!r} is not a {self.name} cell path ({self.path})")
        values = m.groupdict() | self.fixed | {"suite": self.name}
        kinds = {f.name: f.type for f in fields(Cell)}
        cell = {k: (int(v) if "int" in str(kinds[k]) and v is not None else v)
                for k, v in values.items() if k in kinds}
        try:
            return Cell(**cell), {k: v for k, v in values.items() if k not in kinds}
        except ValueError as e:
            raise PlanError(f"cell: {stem!r}: {e}") from None


@dataclass(frozen=True)
class Job:
    """One cell of the matrix with the settings that shape its numbers. Its path and planning
    are those of its cell's suite; its table and figures those of `suite_key` (the same, except
    for a suite over other suites' cells, such as the device tier)."""
    cell: Cell
    settings_json: str  # canonical JSON: a Snakemake param, so a changed setting reruns the cell
    axes: dict = field(default_factory=dict, hash=False)  # the suite's axes beyond the cell
    suite: str | None = None  # the suite whose table it belongs to (default: the cell's)

    @classmethod
    def of(cls, cell: Cell, settings: dict, suite: str | None = None, **axes) -> "Job":
        return cls(cell, json.dumps(settings, sort_keys=True), axes, suite)

    @property
    def suite_key(self) -> str:
        return self.suite or self.cell.suite

    @property
    def stem(self) -> str:
        from msdbench.suites import get

        return get(self.cell.suite).stem(self.cell, self.axes)

    @property
    def label(self) -> str:
        return self.stem.replace("/", " ")

    @property
    def settings(self) -> dict:
        return json.loads(self.settings_json)
