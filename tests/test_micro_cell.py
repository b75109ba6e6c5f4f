"""A real microbenchmark cell: real processes, real RPC, real files; nothing left behind."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from msdbench.backends.base import BackendError
from msdbench.backends.process import ProcessBackend
from msdbench.cell import run_cell
from msdbench.planning import Cell, plan

from conftest import ROOT, domain_processes


@pytest.mark.parametrize("isolation,deployment", [("co-located", 1), ("isolated", 2)])
@pytest.mark.parametrize("mode", ["binary", "list"])
def test_cell_samples_and_metadata(tmp_path, no_leftovers, isolation, deployment, mode):
    m = plan(Cell("micro", "linux", "process", isolation, deployment, 512),
             {"requests": 300, "warmup": 50, "payload_mode": mode, "pinning": "same-core"})
    raw, meta_path = tmp_path / "c.parquet", tmp_path / "c.json"
    meta = run_cell(m, raw, meta_path)
    df = pd.read_parquet(raw)
    assert len(df) == 350 and df["warmup"].sum() == 50
    assert (df["e2e_ns"] > 0).all()
    # Same host, same clock: call + return is the round trip.
    assert ((df["call_ns"] + df["return_ns"]) == df["e2e_ns"]).all()
    on_disk = json.loads(meta_path.read_text())
    assert on_disk["status"] == "ok" and on_disk == json.loads(json.dumps(meta, default=str))
    env = on_disk["environment"]
    for key in ("kernel", "cpu_model", "python", "packages", "git_revision"):
        assert key in env
    assert on_disk["driver"]["wire_bytes"] == (512 if mode == "binary" else 4096)
    # The pinning in effect is what was asked for, for every domain and for the client.
    assert all(p["affinity"] == [0] for p in on_disk["placement"].values())
    edge = on_disk["manifest"]["edges"][0]
    assert edge["address"].startswith("127.0.0.1:"), "the resolved manifest carries the real port"
    assert on_disk["start"] <= on_disk["end"]


@pytest.mark.parametrize("platform", ["linux", "specialized"])
def test_stuck_service_is_ended_by_the_deadline(no_leftovers, platform):
    """Alive but stuck (no transport can tell): the cell deadline cuts the link (TCP or shm)."""
    m = plan(Cell("micro", platform, "process", "isolated", 2, 0), {"requests": 100, "warmup": 0})
    with ProcessBackend().up(m) as dep:
        dep.set_fault("poll", "hang", 1)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="deadline of 2 s expired"):
            dep.run_driver({"driver": "micro", "payload": 0, "requests": 10, "warmup": 0,
                            "deadline_s": 2})
        assert time.monotonic() - t0 < 30


def test_sigterm_mid_cell_tears_down_and_leaves_no_result(tmp_path, no_leftovers):
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0),
             {"requests": 10_000_000, "warmup": 0, "deadline_s": 600})
    m.save(tmp_path / "m.yaml")
    raw, meta = tmp_path / "c.parquet", tmp_path / "c.json"
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(tmp_path / "m.yaml"),
                             "--raw", str(raw), "--meta", str(meta)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    # Wait until the domains are up and measuring, then interrupt as Snakemake or CI would.
    deadline = time.monotonic() + 30
    while len(domain_processes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "torn down" in err
    assert not raw.exists() and not meta.exists()
    assert not list(tmp_path.glob(".c.*"))  # no temp files either


def test_sigkill_of_harness_takes_domains_down(tmp_path):
    """Even a harness killed with SIGKILL leaves no domain running (PR_SET_PDEATHSIG)."""
    import psutil

    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0),
             {"requests": 10_000_000, "warmup": 0})
    m.save(tmp_path / "m.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(tmp_path / "m.yaml"),
                             "--raw", str(tmp_path / "c.parquet"), "--meta", str(tmp_path / "c.json")],
                            cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(domain_processes()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = domain_processes()
    assert len(children) == 2
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running: {[p.pid for p in alive]}"
