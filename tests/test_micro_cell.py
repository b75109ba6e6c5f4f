"""A real microbenchmark cell: real processes, real RPC, real files; nothing left behind."""

import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from msdbench.backends.base import BackendError
from msdbench.backends.process import ProcessBackend
from msdbench.cell import ECHO_CALLS, run_cell
from msdbench.planning import Cell, plan

from conftest import ROOT


@pytest.mark.parametrize("isolation,deployment", [("co-located", 1), ("isolated", 2)])
@pytest.mark.parametrize("mode", ["binary", "list"])
def test_cell_samples_and_metadata(tmp_path, no_leftovers, isolation, deployment, mode):
    m = plan(Cell("micro", "linux", "process", isolation, deployment, 512),
             {"requests": 300, "warmup": 50, "payload_mode": mode, "pinning": "same-core"})
    raw, meta_path = tmp_path / "c.parquet", tmp_path / "c.json"
    run_cell(m, raw, meta_path)
    df = pd.read_parquet(raw)
    # beside the cell's calls, its TCP echo reference (msdbench/echo.py): before and after them
    assert (df["op"] == "echo").sum() == 2 * ECHO_CALLS and set(df["rep"]) == {0}
    df = df[df["op"] == "poll"]
    assert len(df) == 350 and df["warmup"].sum() == 50
    assert list(df["seq"]) == list(range(350)) and not df["warmup"].iloc[50:].any()
    # Same host, same clock: the server's stamp falls strictly inside each round trip, so both
    # halves are positive and each is shorter than the whole.
    assert (df["call_ns"] > 0).all() and (df["return_ns"] > 0).all()
    assert (df["call_ns"] < df["e2e_ns"]).all() and (df["return_ns"] < df["e2e_ns"]).all()
    on_disk = json.loads(meta_path.read_text())
    assert on_disk["status"] == "ok"
    # The calls happened between the cell's start and end, one after the other.
    assert on_disk["start_ns"] < on_disk["end_ns"]
    assert df["e2e_ns"].sum() < on_disk["end_ns"] - on_disk["start_ns"]
    env = on_disk["environment"]
    assert env["python"] == platform.python_version()
    assert os.uname().release in env["kernel"]
    assert env["packages"]["thriftpy2"] == importlib.metadata.version("thriftpy2")
    assert env["cpu_model"] and env["cpu_model"] != "unknown"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert (env["git_revision"] or "").startswith(head) and head
    settings = on_disk["settings"]
    assert (settings["requests"], settings["warmup"], settings["payload"]) == (300, 50, 512)
    assert on_disk["config_hash"] == hashlib.sha256(
        json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    assert on_disk["driver"]["wire_bytes"] == (512 if mode == "binary" else 4096)
    # The pinning in effect is what was asked for, for every domain and for the client.
    assert all(p["affinity"] == [0] for p in on_disk["placement"].values())
    pids = {p["pid"] for name, p in on_disk["placement"].items() if name != "client_driver"}
    assert len(pids) == (1 if deployment == 1 else 2) and os.getpid() not in pids
    edge = on_disk["manifest"]["edges"][0]
    assert edge["address"].startswith("127.0.0.1:"), "the resolved manifest carries the real port"
    assert int(edge["address"].split(":")[1]) > 0


def test_pinning_none_leaves_every_domain_to_the_scheduler(tmp_path, no_leftovers):
    """`pinning: none`: no domain is pinned, and the record says so (each domain's affinity is
    every CPU it may use), whatever the harness itself runs on."""
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0),
             {"requests": 50, "warmup": 0, "pinning": "none"})
    assert all(d.cpus is None for d in m.domains)
    run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    meta = json.loads((tmp_path / "c.json").read_text())
    assert meta["settings"]["pinning"] == "none"
    free = sorted(os.sched_getaffinity(0))
    assert {n: p["affinity"] for n, p in meta["placement"].items()} == {
        "poll": free, "client": free, "client_driver": free}
    # the same cell pinned records one CPU: the field reports what was in effect, not a default
    pinned = plan(Cell("micro", "linux", "process", "isolated", 2, 0),
                  {"requests": 50, "warmup": 0, "pinning": "same-core"})
    run_cell(pinned, tmp_path / "p.parquet", tmp_path / "p.json")
    placement = json.loads((tmp_path / "p.json").read_text())["placement"]
    assert {p["affinity"] == [0] for p in placement.values()} == {True}


@pytest.mark.parametrize("platform", ["linux", "specialized"])
def test_stuck_service_is_ended_by_the_deadline(no_leftovers, platform):
    """Alive but stuck (no transport can tell): the cell deadline cuts the link (TCP or shm)."""
    m = plan(Cell("micro", platform, "process", "isolated", 2, 0), {"requests": 100, "warmup": 0})
    with ProcessBackend().up(m) as dep:
        dep.set_fault("poll", "hang", 1)
        # the first call hangs: the deadline (not a transport error) ends the run, at call 0
        with pytest.raises(BackendError, match="deadline of 2 s expired after 0 of 10 calls"):
            dep.run_driver({"driver": "micro", "payload": 0, "requests": 10, "warmup": 0,
                            "deadline_s": 2})


# -- interrupts and failures: torn down in order, nothing half-written --------------------------

# Runs `msdbench measure` with one write held open: the named file's bytes are written to its
# temporary file, then the harness says WRITING and waits, so a signal lands mid-write.
HOLD_WRITE = """
import sys, time
import msdbench.results as results
real, held = results._atomic, sys.argv[1]

def holding(path, write):
    def slow(f):
        write(f)
        if str(path).endswith(held):
            f.flush()
            print("WRITING", path, flush=True)
            time.sleep(120)
    return real(path, slow)

results._atomic = holding
from msdbench.cli import main
sys.exit(main(sys.argv[2:]))
"""


def measure(tmp_path, m, hold: str | None = None) -> subprocess.Popen:
    """`msdbench measure` on manifest `m` as the workflow runs it, domain logs kept in work/."""
    m.save(tmp_path / "m.yaml")
    args = ["measure", str(tmp_path / "m.yaml"), "--raw", str(tmp_path / "c.parquet"),
            "--meta", str(tmp_path / "c.json"), "--workdir", str(tmp_path / "work")]
    cmd = [sys.executable, "-c", HOLD_WRITE, hold, *args] if hold else \
        [sys.executable, "-m", "msdbench", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def domain_logs(tmp_path) -> dict[str, list[str]]:
    return {p.stem.removeprefix("domain-"): p.read_text().splitlines()
            for p in sorted((tmp_path / "work").glob("domain-*.log"))}


def assert_nothing_written(tmp_path) -> None:
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("c.", ".c.")))
    assert not left, f"a failed cell left files: {left}"


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, guard_s: float = 60):
    """Poll until `predicate()` holds; a generous guard only turns a hang into a failure."""
    deadline = time.monotonic() + guard_s
    while not predicate():
        assert proc is None or proc.poll() is None, f"ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_cell_tears_down_in_order_and_leaves_no_result(tmp_path, no_leftovers, sig):
    """SIGTERM (Snakemake, CI) or SIGINT (Ctrl-C) while the client is calling: the harness's own
    teardown stops every domain through its control service (each domain's log says so; a domain
    merely killed when the harness died would say nothing), and no file is left."""
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0),
             {"requests": 10_000_000, "warmup": 0, "deadline_s": 600})
    proc = measure(tmp_path, m)
    # Measuring: both domains are up and the poll service has answered calls.
    wait_for(lambda: all(any(": up" in line for line in log) for log in domain_logs(tmp_path).values())
             and len(domain_logs(tmp_path)) == 2, "both domains up", proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted" in err and "torn down" in err
    logs = domain_logs(tmp_path)
    assert set(logs) == {"poll", "client"}
    for name, lines in logs.items():
        assert lines[-1] == f"msdbench.domain {name}: stopped (shutdown by the harness)", lines[-5:]
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("held", ["c.parquet", "c.json"])
def test_sigterm_during_the_write_leaves_no_result(tmp_path, no_leftovers, held):
    """The signal lands while a result file is being written (its bytes are in the temporary file):
    neither file appears, the temporary one is removed, and an already renamed samples file is
    taken back, so Snakemake never sees a cell half done."""
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), {"requests": 200, "warmup": 0})
    proc = measure(tmp_path, m, hold=held)
    line = proc.stdout.readline()
    assert line.startswith("WRITING") and held in line, (line, proc.stderr.read())
    assert list(tmp_path.glob(f".{held}.*.tmp")), "the held write has a temporary file"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("fails", ["c.parquet", "c.json"])
def test_a_write_that_fails_partway_leaves_nothing(tmp_path, no_leftovers, monkeypatch, fails):
    """A full disk in the middle of either file (some bytes written, then an error): the cell
    fails with that error and leaves neither file nor a temporary one."""
    import msdbench.results as results

    real = results._atomic

    def failing(path, write):
        def partial(f):
            write(f)
            if str(path).endswith(fails):
                raise OSError(28, "No space left on device")
        return real(path, partial)

    monkeypatch.setattr(results, "_atomic", failing)
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), {"requests": 100, "warmup": 0})
    with pytest.raises(OSError, match="No space left"):
        run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert_nothing_written(tmp_path)


def test_a_failing_cell_leaves_no_files(tmp_path, no_leftovers):
    """A domain that cannot start (pinned to a CPU this machine lacks): the error names it, the
    other domain is stopped, and no result file exists."""
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), {"requests": 100, "warmup": 0})
    m.domain("poll").cpus = [4096]
    with pytest.raises(BackendError, match="domain 'poll' did not start"):
        run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert_nothing_written(tmp_path)


def test_sigterm_during_bring_up_stops_every_started_domain(tmp_path, no_leftovers):
    """BEPS isolated, deployment 2 starts ten domains one after the other; SIGTERM arrives when
    a few are up. Every domain that came up is stopped by the teardown (its log ends with its
    orderly stop), including the one being started when the signal came."""
    m = plan(Cell("beps", "linux", "process", "isolated", 2), {"workers": 5})
    proc = measure(tmp_path, m)

    def up() -> list[str]:
        return [n for n, log in domain_logs(tmp_path).items() if any(": up" in x for x in log)]

    wait_for(lambda: len(up()) >= 3, "three domains up", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    logs = domain_logs(tmp_path)
    assert 3 <= len(logs) < 10, "the signal came during bring-up"
    for name in up():
        assert "stopped" in logs[name][-1], (name, logs[name][-5:])
    assert_nothing_written(tmp_path)
