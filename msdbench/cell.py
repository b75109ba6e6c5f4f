"""One cell, start to finish: bring the manifest up, run the client driver, check, record.

Writes two files: the raw samples (Parquet, a row per call) and the metadata (JSON). Both are
written atomically and only after the measurement succeeded, so a failed or interrupted cell
leaves nothing that Snakemake would take as done. A cell that ran but failed its correctness
check, or was skipped for a stated reason, is recorded as such (never as a good result).
A cell during which a service died or stopped answering is recorded as `failed`, naming the
domain, how it ended and the tail of its log, and then raises CellFailed: the command exits
non-zero, so Snakemake removes both files and runs the cell again next time.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from msdbench import suites
from msdbench.backends import make_backend
from msdbench.backends.base import BackendError
from msdbench.culprits import culprits_report, culprits_summary
from msdbench.hosts import HostUnavailable
from msdbench.manifest import Manifest
from msdbench.metadata import config_hash, environment
from msdbench.records import CellRecord
from msdbench.results import atomic_write_json, atomic_write_parquet, samples_frame

STATUS_OK, STATUS_FAILED_CHECK, STATUS_SKIPPED = "ok", "failed-check", "skipped"
STATUS_FAILED = "failed"  # a service died or stopped answering: no result


class CellFailed(BackendError):
    """A service died or stopped answering during the cell (its record names it)."""


class Interrupts:
    """The signal that asked the cell to stop, kept: Python drops an exception raised where it
    cannot propagate (e.g. in the at-fork hooks that run while a domain is started), so a cell
    also checks between its phases."""

    def __init__(self):
        self.pending: str | None = None

    def check(self) -> None:
        if self.pending:
            raise KeyboardInterrupt(f"signal {self.pending}")


@contextmanager
def interrupts_unwind():
    """SIGTERM (what Snakemake and CI send) and SIGINT unwind as KeyboardInterrupt, so teardown
    always runs; yields the Interrupts to check between phases."""
    state = Interrupts()

    def raise_interrupt(signum, frame):
        state.pending = signal.Signals(signum).name
        state.check()

    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def driver_spec(m: Manifest) -> dict:
    """The client driver's spec of a latency cell (the suite says what goes in it)."""
    return suites.get(m.suite).driver_spec(m)


def record(manifest: Manifest, raw_path: str | Path, meta_path: str | Path, measure,
           cell: dict | None = None, empty_raw=None, backend_options: dict | None = None,
           workdir: str | Path | None = None) -> dict:
    """What every measurement shares: the record's header, a skipped record where the backend is
    unavailable, bring-up and teardown (always), timing and placement, and the two files.

    `measure(dep, meta) -> DataFrame` runs on the deployment, adds its own fields to `meta`
    (at least "status") and returns the raw rows. `cell` overrides the identity fields. The
    record is checked against `records.CellRecord` before anything is written; returns its JSON
    form (a dict), as written."""
    meta = {"cell": cell or {k: getattr(manifest, k) for k in
                             ("suite", "platform", "backend", "isolation", "deployment")},
            "settings": manifest.settings, "config_hash": config_hash(manifest.settings),
            "environment": environment()}
    options = (backend_options or {}) | manifest.settings.get("backend_options", {})
    backend = make_backend(manifest.backend, workdir, **options)
    try:
        return _measure(backend, manifest, raw_path, meta_path, measure, meta, empty_raw)
    finally:
        backend.close()


def _measure(backend, manifest: Manifest, raw_path, meta_path, measure, meta: dict,
             empty_raw) -> dict:
    def skipped(reason: str) -> dict:
        meta.update(status=STATUS_SKIPPED, reason=reason, manifest=manifest.to_dict())
        with interrupts_unwind():
            return write_pair(raw_path, empty_raw, meta_path, meta)

    skip = backend.unavailable_reason()
    if skip:
        return skipped(skip)
    meta["start"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta["start_ns"] = time.time_ns()
    t0 = time.monotonic()
    with interrupts_unwind() as interrupts:
        backend.between_steps = interrupts.check
        try:
            dep = backend.up(manifest)
        except HostUnavailable as e:  # an unreachable host: skipped with the reason, as docker
            return skipped(str(e))
        with dep:
            interrupts.check()
            meta["bring_up_s"] = round(time.monotonic() - t0, 3)
            meta["placement"] = dep.placement()
            meta["backend_info"] = backend.describe()
            meta["manifest"] = dep.manifest.to_dict()
            raw = measure(dep, meta)
            interrupts.check()
        interrupts.check()  # also a signal that came during teardown: then nothing is written
        if getattr(dep, "hosts", None) is not None:  # after teardown: with the time it took
            meta["hosts"] = dep.hosts.facts()
        meta["end"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta["end_ns"] = time.time_ns()
        meta["wall_s"] = round(time.monotonic() - t0, 3)
        written = write_pair(raw_path, raw, meta_path, meta)
    if written["status"] == STATUS_FAILED:
        c = written["cell"]
        raise CellFailed(f"cell {c['suite']} {c['platform']}/{c['backend']} {c['isolation']} "
                         f"d{c['deployment']} failed: " + culprits_report(written["failure"]["culprits"]))
    return written


def write_pair(raw_path: str | Path, raw, meta_path: str | Path, meta: dict) -> dict:
    """The samples, then the record (what marks a cell done); each whole or not at all. If
    the second write fails or is interrupted, the first is removed again: a cell has both files
    or neither. The record is checked against `records.CellRecord` before anything is written;
    returns it as written (its JSON form)."""
    record = CellRecord.model_validate(meta).dump()
    atomic_write_parquet(raw_path, raw)
    try:
        atomic_write_json(meta_path, record)
    except BaseException:
        Path(raw_path).unlink(missing_ok=True)
        raise
    return record


def run_cell(manifest: Manifest, raw_path: str | Path, meta_path: str | Path,
             backend_options: dict | None = None, workdir: str | Path | None = None,
             faults: list[tuple[str, str, int]] = (), on_up=None) -> dict:
    """Measure one latency cell and write its two files; returns the metadata written. Raises
    CellFailed (after writing a `failed` record) when a service died or stopped answering.

    `faults` (service, fault, count) are armed after bring-up: fault injection, to show that the
    cell's checks catch what they claim to (recorded in the metadata). `on_up(deployment)`, if
    given, is called just before the driver starts (tests use it to kill a service mid-cell)."""
    empty = pd.DataFrame({"op": pd.Series(dtype=str)})

    def measure(dep, meta):
        for service, fault, count in faults:
            dep.set_fault(service, fault, count)
        if faults:
            meta["faults_injected"] = [list(f) for f in faults]
        if on_up is not None:
            on_up(dep)
        try:
            result, error = dep.run_driver(driver_spec(manifest)), None
        except BackendError as e:
            result, error = None, e
        # A dead service may also surface as failed calls in a driver that ran to the end.
        culprits = dep.culprits()
        if culprits:
            meta["status"] = STATUS_FAILED
            meta["failure"] = {"culprits": culprits,
                               "summary": culprits_summary(culprits),
                               "driver_error": str(error).splitlines()[0] if error else None}
            if result is not None:
                meta["driver"] = {k: v for k, v in result.items() if k != "samples"}
            return empty
        if error is not None:
            raise error
        meta["placement"]["client_driver"] = {"affinity": result.pop("client_affinity", None),
                                              "socket": result.pop("client_socket", None)}
        samples = result.pop("samples")
        meta["driver"] = result
        meta["status"] = STATUS_OK if result.get("correct", True) else STATUS_FAILED_CHECK
        return samples_frame(samples)

    return record(manifest, raw_path, meta_path, measure, empty_raw=empty,
                  backend_options=backend_options, workdir=workdir)
