"""Nothing stays behind: a harness killed with SIGKILL leaves sockets and work directories in the
temp dir (it cannot help it), and the next run, or `msdbench clean`, removes them, by owner, never a
live run's. Temp dirs go on success. Each test has a temp dir of its own (TMPDIR)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from msdbench import scratch
from msdbench.planning import Cell, plan

from conftest import ROOT, domain_processes


def msdbench(tmp, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msdbench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TMPDIR=str(tmp)), **kw)


def ours(tmp) -> list[str]:
    return sorted(p.name for p in tmp.glob("msdbench-*"))


def kill_harness_mid_cell(tmp_path, tmp) -> list[str]:
    """`msdbench measure` of a specialized cell (shm between domains: a socket in the temp dir),
    SIGKILLed while its client calls; its domains die with it (PR_SET_PDEATHSIG); returns what it
    left in the temp dir."""
    m = plan(Cell("micro", "specialized", "process", "isolated", 2, 0),
             {"requests": 10_000_000, "warmup": 0})
    m.save(tmp_path / "m.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(tmp_path / "m.yaml"),
                             "--raw", str(tmp_path / "c.parquet"), "--meta", str(tmp_path / "c.json")],
                            cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        # both domains up and the client calling: poll's domain is burning CPU
        if len(kids) == 2 and list(tmp.glob("*.sock")) and kids[0].cpu_times().user > 0.5:
            break
        time.sleep(0.1)
    children = domain_processes()
    assert len(children) == 2
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running: {[p.pid for p in alive]}"
    return ours(tmp)


def killed_socket(tmp) -> None:
    """A listening socket left in `tmp` by a process killed with SIGKILL (named as msdbench's
    servers name theirs: prefix, owner pid, random part)."""
    code = ("import os, socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.bind(os.path.join(sys.argv[1], f'msdbench-poll-{os.getpid()}-deadbeef.sock'))\n"
            "s.listen()\nprint('up', flush=True)\ntime.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    p.kill()
    p.wait()


@pytest.mark.parametrize("next_command", ["run", "clean"])
def test_next_run_or_clean_removes_a_killed_harness_leftovers(tmp_path, no_leftovers, next_command):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    killed_socket(tmp)
    left = kill_harness_mid_cell(tmp_path, tmp)
    # What a SIGKILL leaves (so that this test can fail): the cell's work dir, and sockets of killed
    # processes (poll's own only sometimes: its domain also stops when the harness's pipe closes,
    # and may unlink it before the parent-death SIGKILL lands, hence the one made above).
    assert any(n.startswith("msdbench-micro-") for n in left), left
    assert any(n.endswith(".sock") for n in left), left
    # A live run's work dir and socket, and a directory with no owner, are not ours to remove.
    live_dir = scratch.make_dir("micro", tmp)
    live_sock = tmp / f"msdbench-poll-{os.getpid()}-0123abcd.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(live_sock))
    listener.listen()
    foreign = tmp / "msdbench-run-by-hand"
    foreign.mkdir()
    try:
        if next_command == "run":
            r = msdbench(tmp, "run", "micro", "--isolation", "isolated", "--deployment", "2",
                         "--requests", "20", "--warmup", "0", "--out", str(tmp_path / "out"))
            assert r.returncode == 0, r.stderr
            assert f"removed {len(left)} leftover(s) of killed runs" in r.stderr
        else:
            r = msdbench(tmp, "clean")
            assert r.returncode == 0, r.stderr
            assert sum("its owner process is gone" in line for line in r.stdout.splitlines()) == len(left)
        assert ours(tmp) == sorted([live_dir.name, live_sock.name, foreign.name])
    finally:
        listener.close()
    assert not domain_processes()


def test_dry_run_only_lists(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = tmp / "msdbench-cell-1-abc"
    dead.mkdir()
    (dead / "owner").write_text(f"{socket.gethostname()}:1:0\n")  # pid 1 did not start at 0
    r = msdbench(tmp, "clean", "--dry-run")
    assert r.returncode == 0 and f"would remove {dead}" in r.stdout
    assert dead.exists()


def test_success_leaves_no_temp_dir(tmp_path, no_leftovers):
    """A cell (`measure`) and a throughput sweep (`throughput measure`), both the rules' commands."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    m = plan(Cell("micro", "specialized", "process", "isolated", 2, 0), {"requests": 20, "warmup": 0})
    m.save(tmp_path / "m.yaml")
    r = msdbench(tmp, "measure", str(tmp_path / "m.yaml"), "--raw", str(tmp_path / "c.parquet"),
                 "--meta", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stderr
    sweep = plan(Cell("throughput", "linux", "process", "co-located", 2),
                 {"workers": 1, "pinning": "split",
                  "throughput": {"mode": "closed", "clients": [1], "pairs_per_client": 20,
                                 "warmup_pairs": 5}})
    sweep.save(tmp_path / "t.yaml")
    r = msdbench(tmp, "throughput", "measure", str(tmp_path / "t.yaml"), "--raw",
                 str(tmp_path / "t.parquet"), "--meta", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t.json").exists()
    assert ours(tmp) == []


def test_run_says_where_its_outputs_go_and_keeps_only_them(tmp_path, no_leftovers):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = msdbench(tmp, "run", "micro", "--isolation", "isolated", "--deployment", "2",
                 "--requests", "20", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    (out,) = tmp.glob("msdbench-run-*")
    assert r.stdout.splitlines()[0] == f"msdbench run: outputs go to {out}"
    assert sorted(p.name for p in out.iterdir()) == ["cell.json", "cell.parquet"]
    assert ours(tmp) == [out.name]
