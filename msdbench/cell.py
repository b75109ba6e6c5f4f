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

import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from msdbench import suites
from msdbench.backends import make_backend
from msdbench.backends.base import BackendError
from msdbench.culprits import culprits_report, culprits_summary
from msdbench.hosts import HostUnavailable
from msdbench.hostload import host_cpu, host_load, wait_quiet
from msdbench.manifest import Manifest
from msdbench.metadata import config_hash, environment
from msdbench.records import CellRecord
from msdbench.results import atomic_write_json, atomic_write_parquet, samples_frame

STATUS_OK, STATUS_FAILED_CHECK, STATUS_SKIPPED = "ok", "failed-check", "skipped"
STATUS_FAILED = "failed"  # a service died or stopped answering: no result


class CellFailed(BackendError):
    """A service died or stopped answering during the cell (its record names it)."""


# The TCP echo reference, right before and right after the cell's own calls in every repetition
# (msdbench/echo.py): ECHO_CALLS each time, the first ECHO_WARMUP of them marked warm-up.
ECHO_CALLS, ECHO_WARMUP = 1000, 200


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
           workdir: str | Path | None = None, repeats: int = 1, quiet: dict | None = None,
           log=None) -> dict:
    """What every measurement shares: the record's header, a skipped record where the backend is
    unavailable, bring-up and teardown (always), timing and placement, and the two files.

    `measure(dep, meta) -> DataFrame` runs on the deployment, adds its own fields to `meta`
    (at least "status") and returns the raw rows. `cell` overrides the identity fields.
    It runs `repeats` times, each on a fresh bring-up; the raw rows get the repetition's index
    (`rep`), and `meta["repetitions"]` what each one saw of the host (msdbench/hostload.py).
    With `quiet`, a repetition that other work disturbed (more than quiet["max_unaccounted"]
    CPUs busy beside it on its CPUs) is measured again, at most quiet["retries"] times a cell;
    the redone attempts stay in `meta["repetitions"]` with kept = false. The record is checked
    against `records.CellRecord` before anything is written; returns its JSON form, as written."""
    meta = {"cell": cell or {k: getattr(manifest, k) for k in
                             ("suite", "platform", "backend", "isolation", "deployment")},
            "settings": manifest.settings, "config_hash": config_hash(manifest.settings),
            "environment": environment()}
    options = (backend_options or {}) | manifest.settings.get("backend_options", {})
    backend = make_backend(manifest.backend, workdir, **options)
    try:
        return _measure(backend, manifest, raw_path, meta_path, measure, meta, empty_raw,
                        repeats, quiet, log or _stderr)
    finally:
        backend.close()


def _measure(backend, manifest: Manifest, raw_path, meta_path, measure, meta: dict,
             empty_raw, repeats: int, quiet: dict | None, log) -> dict:
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
            raw = repeat(backend, manifest, measure, meta, repeats, quiet, log, interrupts)
        except HostUnavailable as e:  # an unreachable host: skipped with the reason, as docker
            return skipped(str(e))
        meta["end"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta["end_ns"] = time.time_ns()
        meta["wall_s"] = round(time.monotonic() - t0, 3)
        written = write_pair(raw_path, raw, meta_path, meta)
    if written["status"] == STATUS_FAILED:
        c = written["cell"]
        raise CellFailed(f"cell {c['suite']} {c['platform']}/{c['backend']} {c['isolation']} "
                         f"d{c['deployment']} failed: " + culprits_report(written["failure"]["culprits"]))
    return written


def repeat(backend, manifest: Manifest, measure, meta: dict, repeats: int, quiet: dict | None,
           log, interrupts: Interrupts) -> pd.DataFrame:
    """Bring the manifest up, `measure`, tear down: `repeats` times, each from scratch. Returns
    the repetitions' raw rows with their index (`rep`); notes in `meta["repetitions"]` what each
    attempt saw of the host; redoes a disturbed one while the cell's budget lasts (see record)."""
    cpus = pinned_cpus(manifest)
    budget = int(quiet.get("retries", 0)) if quiet else 0
    reps, frames, failed = [], [], None
    while len(frames) < repeats and failed is None:
        if quiet and quiet.get("wait_s"):
            wait_quiet(quiet, log, cpus)
        rep = {"rep": len(frames), "attempt": len(reps), "start_ns": time.time_ns()}
        t_rep = time.monotonic()
        with backend.up(manifest) as dep:
            interrupts.check()
            rep["bring_up_s"] = round(time.monotonic() - t_rep, 3)
            meta.setdefault("bring_up_s", rep["bring_up_s"])
            meta["placement"] = dep.placement()
            meta["backend_info"] = backend.describe()
            meta["manifest"] = dep.manifest.to_dict()
            ours, host = _our_cpu_s(dep), host_cpu()
            t_run = time.monotonic()
            raw = measure(dep, meta)
            window, host_after, ours_after = time.monotonic() - t_run, host_cpu(), _our_cpu_s(dep)
            interrupts.check()
        interrupts.check()  # also a signal that came during teardown: then nothing is written
        if getattr(dep, "hosts", None) is not None:  # after teardown: with the time it took
            meta["hosts"] = dep.hosts.facts()
        rep["end_ns"] = time.time_ns()
        rep["placement"] = meta["placement"]
        rep["host"] = (host_load(host, host_after, ours_after - ours, window, cpus)
                       if ours is not None and ours_after is not None else None)
        other = (rep["host"] or {}).get("unaccounted_util")
        rep["disturbed"] = bool(quiet and other is not None and other > quiet["max_unaccounted"])
        rep["status"] = meta["status"]
        reps.append(rep)
        meta["repetitions"] = reps
        if rep["disturbed"] and sum(not r["kept"] for r in reps[:-1]) < budget:
            rep["kept"] = False
            log(f"repetition {rep['rep'] + 1}/{repeats}: other work kept {other:.2f} CPUs busy "
                "beside it; measured again")
            continue
        rep["kept"] = True
        raw.insert(0, "rep", len(frames))
        frames.append(raw)
        if meta["status"] != STATUS_OK:
            failed = dict(meta)  # a failed check is a wrong answer: no point repeating it
        log(f"repetition {rep['rep'] + 1}/{repeats}: {meta['status']}, "
            f"{time.monotonic() - t_rep:.1f} s, other work on its CPUs: "
            f"{other if other is not None else '?'} CPUs")
    if failed is not None:
        meta.update(status=failed["status"], driver=failed.get("driver", meta.get("driver")))
    return pd.concat(frames, ignore_index=True)


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


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # stdout is the command's result (one_line)


def pinned_cpus(manifest: Manifest) -> list[int] | None:
    """The CPUs the cell's domains are pinned to; None if any domain is left to the scheduler."""
    cpus = [d.cpus for d in manifest.domains]
    return None if any(not c for c in cpus) else sorted({c for cs in cpus for c in cs})


def _echo_address(dep) -> str | None:
    """Where the entry service's domain serves the TCP echo reference (None where its backend
    runs no echo: a board on a serial line)."""
    if not hasattr(dep, "handle_of"):
        return None
    entry = dep.manifest.edges_from(dep.manifest.client)[0].callee
    echo = dep.handle_of(entry).hello.get("echo")
    return echo and dep.backend.seen_from(dep.manifest.client_domain().name, echo)


def _our_cpu_s(dep) -> float | None:
    """CPU seconds used so far by the cell's domains and by this harness (None where the
    backend cannot say, or a domain does not answer: then no repetition is judged disturbed)."""
    stats = dep.probe() if hasattr(dep, "probe") else {}
    if not stats or any("error" in s for s in stats.values()):
        return None
    t = os.times()
    total, seen = t.user + t.system, set()
    hosts = getattr(dep, "hosts", None)
    for name, s in stats.items():
        where = dep.manifest.domain(name).host
        if where in seen:  # a guest already counted, with all its domains
            continue
        host_s = hosts[where].cpu_s() if hosts is not None and where in hosts.hosts else None
        if host_s is None:
            total += s["user_s"] + s["system_s"]
        else:  # a guest: what its QEMU used here
            seen.add(where)
            total += host_s
    return total


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
        spec = driver_spec(manifest)
        echo = _echo_address(dep)
        if echo:
            spec["echo"] = {"address": echo, "calls": ECHO_CALLS, "warmup": ECHO_WARMUP}
        try:
            result, error = dep.run_driver(spec), None
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
                  backend_options=backend_options, workdir=workdir,
                  repeats=int(manifest.settings.get("repeats", 1)),
                  quiet=manifest.settings.get("quiet"))
