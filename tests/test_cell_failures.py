"""A service that dies mid-cell is named: which service and domain, where it ran, how it ended and
the last lines of its log, in the error, in the cell's record and in the table (as the throughput
study does). Real domains, a real SIGKILL while the client is calling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from msdbench.aggregate import table
from msdbench.cell import STATUS_FAILED, CellFailed, run_cell
from msdbench.planning import Cell, plan

from conftest import ROOT, domain_processes

# Large enough that the client is still calling well after the kill (a few seconds at most).
BEPS = {"workers": 2, "workload": {"users": 3000, "active_users": 20, "follows_per_user": 3,
                                   "publishes_per_user": 2}}
MICRO = {"requests": 10_000_000, "warmup": 0, "deadline_s": 120}


def _calls(counters: dict) -> int:
    calls = counters["calls"]
    return sum(calls.values()) if isinstance(calls, dict) else calls


def kill_when_calling(victim: str, after: int = 20):
    """An on_up hook: once the entry service has served `after` calls, SIGKILL the victim's domain."""
    def hook(dep):
        entry = dep.manifest.edges_from(dep.manifest.client)[0].callee
        pid = dep.placement()[dep.manifest.service(victim).domain]["pid"]
        handle = dep.handle_of(entry)

        def watch():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if _calls(json.loads(dep.call(handle, "counters", entry))) >= after:
                    break
                time.sleep(0.005)
            os.kill(pid, signal.SIGKILL)
            hook.killed = pid

        hook.thread = threading.Thread(target=watch, daemon=True)
        hook.thread.start()
    return hook


@pytest.mark.parametrize("suite,victim", [("micro", "poll"), ("beps", "lb"), ("beps", "worker1"),
                                          ("beps", "userdb"), ("beps", "payloaddb"),
                                          ("beps", "reader")])
def test_service_killed_mid_cell_is_named(tmp_path, no_leftovers, suite, victim):
    cell = Cell(suite, "linux", "process", "isolated", 2, 0 if suite == "micro" else None)
    m = plan(cell, MICRO if suite == "micro" else BEPS)
    raw, meta_path = tmp_path / "c.parquet", tmp_path / "c.json"
    hook = kill_when_calling(victim)
    with pytest.raises(CellFailed) as err:
        run_cell(m, raw, meta_path, workdir=tmp_path / "w", on_up=hook)
    assert getattr(hook, "killed", None), "the hook never fired"
    message = str(err.value)
    assert f"domain {victim} (services {victim};" in message and "SIGKILL" in message
    assert f"process {hook.killed}" in message and f"last lines of {victim}'s log" in message
    meta = json.loads(meta_path.read_text())
    assert meta["status"] == STATUS_FAILED
    (culprit,) = meta["failure"]["culprits"]  # the client and the other services still answer
    assert culprit["domain"] == victim and culprit["services"] == [victim]
    assert culprit["host"] == "local" and "SIGKILL" in culprit["status"]
    assert isinstance(culprit["log_tail"], str)
    row = table(suite, [meta_path]).iloc[0]
    assert row["status"] == STATUS_FAILED and victim in row["reason"] and "SIGKILL" in row["reason"]
    assert row["log_tail"].startswith(f"[{victim}]")


def test_cli_names_the_killed_user_db(tmp_path, no_leftovers):
    """`msdbench measure` (the rule's command): the killed service in its one error, exit 2, and a
    record that says failed."""
    m = plan(Cell("beps", "linux", "process", "isolated", 2), BEPS)
    m.save(tmp_path / "m.yaml")
    raw, meta = tmp_path / "c.parquet", tmp_path / "c.json"
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(tmp_path / "m.yaml"),
                             "--raw", str(raw), "--meta", str(meta)], cwd=ROOT,
                            env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.05)
        by_domain = {}
        for p in domain_processes():
            try:
                by_domain[p.cmdline()[p.cmdline().index("--domain") + 1]] = p
            except (psutil.Error, ValueError, IndexError):
                pass
        try:
            # The client's domain holds its control connection, and one more once the driver calls.
            calling = "client" in by_domain and len(
                [c for c in by_domain["client"].net_connections("tcp") if c.status == "ESTABLISHED"]) > 1
        except psutil.Error:
            calling = False
        if calling:
            victim = by_domain["userdb"]
    assert victim is not None, "the client never started calling"
    time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    # one error line (progress lines, e.g. per repetition, may come before it)
    (first,) = [line for line in err.splitlines() if line.startswith("msdbench: error:")]
    assert first.startswith("msdbench: error: cell beps linux/process isolated d2 failed: "
                            "domain userdb (services userdb;"), err
    assert "SIGKILL" in first and "last lines of userdb's log" in err
    assert json.loads(meta.read_text())["failure"]["culprits"][0]["domain"] == "userdb"
