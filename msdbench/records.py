"""The cell record: what one measured cell (or sweep) writes beside its raw samples, typed and
versioned. `record()` in msdbench/cell.py writes it once; the summaries, the throughput table and
`msdbench measure` read it back through `load`, which upgrades what it can and refuses the rest
with a message that says what to do.

Format history:
  0 (no `format` key): written before records were versioned; the same fields as format 1
  1: the `format` key
  2: status "failed" (a service died or stopped answering) and its `failure` (msdbench/culprits.py)
  3: `repetitions` (one entry per bring-up: index, attempt, kept, host noise, placement) and a
     `rep` column in the raw samples; a record of format 0 or 1 is read as one repetition
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

FORMAT = 3


class RecordError(ValueError):
    """A record this msdbench cannot read; the message names the file and what to do."""


class CellId(BaseModel):
    """Which cell: the suite's name and the cell's coordinates."""
    model_config = ConfigDict(extra="forbid")
    suite: str
    platform: str
    backend: str
    isolation: str
    deployment: int
    mode: str | None = None  # throughput: closed | open


class CellRecord(BaseModel):
    # Every field is declared: a field written by mistake (or read under a wrong name) fails the
    # tests instead of vanishing into an untyped dict.
    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    cell: CellId
    settings: dict               # what shaped the numbers (the manifest's settings)
    config_hash: str
    environment: dict            # msdbench.metadata.environment()
    status: Literal["ok", "failed-check", "skipped", "failed"]
    reason: str | None = None    # why it was skipped
    failure: dict | None = None  # failed: {culprits, summary, driver_error} (msdbench/culprits.py)
    manifest: dict | None = None  # the resolved manifest (addresses filled in)
    start: str | None = None     # local time, ISO 8601
    start_ns: int | None = None  # time.time_ns(): the span of the measurement
    end: str | None = None
    end_ns: int | None = None
    wall_s: float | None = None
    bring_up_s: float | None = None
    placement: dict | None = None     # where each domain (and the client driver) really ran
    backend_info: dict | None = None  # the backend's describe()
    hosts: dict | None = None         # the hosts' facts (msdbench.hosts), where a domain ran
    # latency suites
    driver: dict | None = None        # the driver's result without its samples
    repetitions: list[dict] | None = None  # each bring-up: rep, attempt, kept, disturbed, host
    faults_injected: list | None = None
    # the throughput study
    points: list[dict] | None = None
    sweep: dict | None = None

    def dump(self) -> dict:
        """The JSON form, as written: fields that do not apply are left out."""
        return self.model_dump(mode="json", exclude_none=True)


def from_dict(d: dict, where: str = "cell record") -> CellRecord:
    fmt = d.get("format", 0)
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise RecordError(f"{where}: record format {fmt!r} is newer than this msdbench reads "
                          f"(format {FORMAT}); update msdbench or measure the cell again")
    if fmt < FORMAT:  # 0 (unversioned), 1 and 2 hold a subset of the fields of format 3
        d = d | {"format": FORMAT}
    try:
        return CellRecord.model_validate(d)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RecordError(f"{where}: not a cell record of format {d.get('format')} (field "
                          f"'{field}': {first['msg']}); measure the cell again, e.g. delete the "
                          "file and rerun snakemake") from None


def load(path: str | Path) -> CellRecord:
    try:
        d = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        d = f"not JSON: {e}"
    if not isinstance(d, dict):
        raise RecordError(f"{path}: not a cell record ({d if isinstance(d, str) else 'a JSON object'}"
                          "); measure the cell again")
    return from_dict(d, str(path))


def raw_path_of(meta_path: str | Path) -> Path:
    """The raw samples (Parquet) beside a record."""
    return Path(meta_path).with_suffix(".parquet")
