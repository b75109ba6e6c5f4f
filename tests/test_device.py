"""The microcontroller tier, on real parts: MicroPython built from source, the board program on
the unix port and on the emulated board (QEMU MPS2-AN385), the serial link through pyserial, a
pty relay that damages frames, and the clean-up on every path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import thriftpy2.transport
from thriftpy2.protocol import TBinaryProtocol

from msdbench import idl
from msdbench.backends.base import BackendError
from msdbench.cell import run_cell
from msdbench.device import bundle, firmware
from msdbench.planning import Cell, plan

ROOT = Path(__file__).resolve().parent.parent
PAPER_BEPS = {"users": 10, "active_users": 10, "follows_per_user": 1, "publishes_per_user": 1,
              "name_len": 5, "message_len": 20}
OURS = ("mps2-an385", "msdbench.device.relay", "msdbench_board_")  # qemu, relay, unix port


def descendants(pid: int | None = None) -> dict[int, str]:
    out = {}
    for p in psutil.Process(pid).children(recursive=True):
        try:
            out[p.pid] = " ".join(p.cmdline())
        except psutil.Error:   # ended meanwhile, or a zombie
            pass
    return out


def ours(procs: dict[int, str]) -> dict[int, str]:
    return {pid: line[:140] for pid, line in procs.items() if any(n in line for n in OURS)}


def alive(pids) -> list[int]:
    return [p for p in pids if psutil.pid_exists(p)
            and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def no_device_leftovers():
    """Fails the test if a board, relay or emulator it started (in this process) still runs."""
    yield
    deadline = time.monotonic() + 10
    while ours(descendants()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ours(descendants()), f"left running: {ours(descendants())}"


@pytest.fixture(scope="session")
def built():
    """Both ports, built from the MicroPython source (cached by its hash after the first time)."""
    src = firmware.default_source()
    assert src.exists(), (f"MicroPython source {src} not found: set ${firmware.SOURCE_ENV} to a "
                          "release tarball or a git clone")
    return firmware.build(("qemu", "unix"))


def cell(tmp_path, suite, isolation, deployment, board, payload=64, **device):
    settings = {"deadline_s": 120, "device": {"board": board, **device}}
    if suite == "micro":
        settings.update(payload_mode="binary", requests=100, warmup=5)
    else:
        settings.update(workers=5, workload=PAPER_BEPS)
    m = plan(Cell(suite, "specialized", "device", isolation, deployment,
                  payload if suite == "micro" else None), settings)
    raw, meta = tmp_path / "c.parquet", tmp_path / "c.json"
    return m, raw, meta


def measured(tmp_path, *args, faults=(), **kw):
    m, raw, meta = cell(tmp_path, *args, **kw)
    result = run_cell(m, raw, meta, faults=faults, workdir=tmp_path / "work")
    return result, pd.read_parquet(raw)


# -- the board's code on the host: codec and framing ----------------------------------------------

def test_board_codec_speaks_thrift_binary_as_thriftpy2_does():
    ns = bundle.namespace()
    beps = idl.load("beps")
    msgs = [beps.Message(id=7, user="alice", text="h\u00e9llo", ts_ns=-5),
            beps.Message(id=2**40, user="b", text="", ts_ns=0)]
    # thriftpy2 writes a get_feed result; the board's codec reads it ...
    buf = thriftpy2.transport.TMemoryBuffer()
    beps.Frontend.get_feed_result(success=msgs).write(TBinaryProtocol(buf))
    spec = ns["SERVICES"]["Frontend"]["get_feed"][1]
    got, end = ns["r_values"](buf.getvalue(), 0, spec)
    assert end == len(buf.getvalue())
    assert [(m.id, m.user, m.text, m.ts_ns) for m in got[0]] == \
        [(m.id, m.user, m.text, m.ts_ns) for m in msgs]
    # ... and what the board writes, thriftpy2 reads back equal.
    out = bytearray()
    ns["w_values"](out, spec, got)
    back = beps.Frontend.get_feed_result()
    back.read(TBinaryProtocol(thriftpy2.transport.TMemoryBuffer(bytes(out))))
    assert back.success == msgs


def test_frame_parser_drops_damaged_frames_and_keeps_good_ones():
    ns = bundle.namespace()
    enc, parser = ns["encode_frame"], ns["FrameParser"]()
    good = [enc(i, 1, bytes([i]) * (10 + i)) for i in range(6)]
    corrupt = bytearray(good[1])
    corrupt[-6] ^= 0xFF
    stream = (b"\x00junk" + good[0] + bytes(corrupt) + good[2][:-3] + good[3] + good[3]
              + good[4][:5] + good[5])
    frames = []
    for b in stream:                    # byte by byte: the worst case for resynchronisation
        parser.feed(bytes([b]))
        while (f := parser.next()) is not None:
            frames.append(f)
    seqs = [f[0] for f in frames]
    # Every frame that came through is a good one, unchanged; damaged ones are counted.
    assert all(f[2] == bytes([f[0]]) * (10 + f[0]) for f in frames)
    assert 1 not in seqs and 0 in seqs and 5 in seqs
    assert seqs.count(3) >= 1
    assert parser.bad >= 2


# -- the unix port: the same board program, fast ----------------------------------------------------

def test_device_code_runs_on_the_unix_port(tmp_path, built, no_device_leftovers):
    meta, df = measured(tmp_path / "m1", "micro", "co-located", 1, "unix")
    assert meta["status"] == "ok" and meta["driver"]["crossings"] == 0
    meta, df = measured(tmp_path / "m2", "micro", "isolated", 2, "unix")
    # Every call crossed a group boundary once (warm-up included), and each was timed.
    assert meta["driver"]["crossings"] == 105 and len(df) == 105
    meta, df = measured(tmp_path / "b", "beps", "tiered", 2, "unix")
    assert meta["status"] == "ok", meta["driver"].get("problems")
    assert df[~df.warmup].groupby("op").size().to_dict() == {
        op: 10 for op in ("create_user", "subscribe", "publish", "unsubscribe", "delete_user")}


def test_board_side_check_catches_a_dropped_feed_update(tmp_path, built, no_device_leftovers):
    meta, _ = measured(tmp_path, "beps", "co-located", 1, "unix",
                       faults=[("reader", "drop_feed_update", 1)])
    assert meta["status"] == "failed-check"
    assert any("feed" in p for p in meta["driver"]["problems"])


# -- the emulated board -----------------------------------------------------------------------------

def test_emulated_board_runs_micro_and_beps_cells(tmp_path, built, no_device_leftovers):
    meta, df = measured(tmp_path / "m", "micro", "co-located", 1, "emulated")
    assert meta["status"] == "ok"
    assert meta["backend_info"]["hello"]["platform"] == "qemu"
    assert meta["backend_info"]["emulation"]["icount"].startswith("shift=4")
    assert (df[~df.warmup].e2e_ns > 0).all()
    meta, df = measured(tmp_path / "b", "beps", "tiered", 2, "emulated")
    assert meta["status"] == "ok", meta["driver"].get("problems")
    assert meta["driver"]["crossings"] > 0
    # Deployment 4: the host's client across the paced link, its correctness check on the host.
    meta, df = measured(tmp_path / "b4", "beps", "co-located", 4, "emulated")
    assert meta["status"] == "ok", meta["driver"].get("problems")
    assert meta["backend_info"]["link"]["rate_bps"] == 250000
    assert meta["driver"]["timing"].startswith("host")


def test_damaged_frames_are_counted_and_never_give_a_wrong_answer(tmp_path, built,
                                                                   no_device_leftovers):
    meta, df = measured(tmp_path, "beps", "co-located", 4, "unix", link_rate_bps=0, retry_s=0.3)
    assert meta["status"] == "ok"          # the same cell on a clean link, for comparison
    m, raw, meta_path = cell(tmp_path / "faulty", "beps", "co-located", 4, "unix",
                             link_rate_bps=0, retry_s=0.3)
    m.settings["backend_options"]["faults"] = {"corrupt": 7, "truncate": 11, "duplicate": 5}
    meta = run_cell(m, raw, meta_path, workdir=tmp_path / "faulty" / "work")
    link = meta["driver"]["link"]
    injected = link["relay_injected"]
    for fault in ("corrupt", "truncate", "duplicate"):
        assert injected.get(f"to_board_{fault}", 0) + injected.get(f"to_host_{fault}", 0) > 0
    # Never a wrong answer: every request ran exactly once and every feed came out exact.
    assert meta["status"] == "ok", meta["driver"].get("problems")
    df = pd.read_parquet(raw)
    assert df[~df.warmup].groupby("op").size().eq(10).all()
    # Both ends counted what the relay did to the frames that came their way.
    host, board = link["host"], link["board"]
    assert board["bad_frames"] >= injected.get("to_board_corrupt", 0) + injected.get(
        "to_board_truncate", 0)
    assert host["bad_frames"] >= injected.get("to_host_corrupt", 0) + injected.get(
        "to_host_truncate", 0)
    assert board["duplicates"] >= injected.get("to_board_duplicate", 0)
    assert host["stale_replies"] >= injected.get("to_host_duplicate", 0)
    assert host["retries"] > 0


def test_a_board_that_stops_answering_ends_the_cell_naming_the_port(tmp_path, built,
                                                                     no_device_leftovers):
    m, raw, meta = cell(tmp_path, "micro", "isolated", 4, "emulated", call_deadline_s=3,
                        retry_s=0.5)
    with pytest.raises(BackendError, match=r"serial port /dev/pts/\d+"):
        run_cell(m, raw, meta, faults=[("board", "stop", 1)], workdir=tmp_path / "work")
    assert not raw.exists() and not meta.exists()


def test_ctrl_c_mid_cell_leaves_no_emulator_relay_or_result(tmp_path, built, no_device_leftovers):
    # 100 calls across the paced link: the cell runs for seconds after the relay appears.
    m, raw, meta = cell(tmp_path, "micro", "isolated", 4, "emulated")
    mpath = tmp_path / "m.yaml"
    m.save(mpath)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(mpath), "--raw",
                             str(raw), "--meta", str(meta)], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any("msdbench.device.relay" in line for line in descendants(proc.pid).values()):
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the cell ended before its relay started:\n{(out + err).decode()[-2000:]}")
            assert time.monotonic() < deadline, "the relay never started"
            time.sleep(0.05)
        time.sleep(1.0)   # past bring-up, into the calls
        started = ours(descendants(proc.pid))   # the emulator and the relay, by pid
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out + err).decode()[-2000:]
    assert not raw.exists() and not meta.exists()
    assert len(started) == 2 and not alive(started), started


# -- building the firmware --------------------------------------------------------------------------

def test_a_failed_or_interrupted_build_leaves_no_temp_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MSDBENCH_CACHE", str(tmp_path / "cache"))
    bogus = tmp_path / "bogus.tar.gz"
    (tmp_path / "tree" / "micropython-x" / "ports").mkdir(parents=True)
    with tarfile.open(bogus, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "micropython-x", arcname="micropython-x")
    with pytest.raises(firmware.FirmwareError, match="make exit"):
        firmware.build(("unix",), bogus)
    root = firmware.cache_root()
    assert not list(root.glob(".build-*"))
    # Ctrl-C in the middle of a real build: the temp tree goes too.
    src = firmware.default_source()
    code = ("import sys; from msdbench.device import firmware; firmware.build(('unix',), sys.argv[1])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(src)], stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 120
    log = root / firmware.source_key(src) / "build.log"

    def compiling() -> bool:   # make runs and its compilers write into the temp tree
        return log.exists() and "CC " in log.read_text(errors="replace")

    while not compiling() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert compiling() and list(root.glob(".build-*")), "the build never started compiling"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert not list(root.glob(".build-*"))

    def in_tree(p) -> bool:   # make and its compilers run inside the temp tree
        try:
            return p.cwd().startswith(str(root))
        except psutil.Error:
            return False
    assert not [p.pid for p in psutil.process_iter() if in_tree(p)]


def test_an_absent_serial_port_skips_the_cell_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))   # where the backend's temp dirs go
    (tmp_path / "tmp").mkdir()
    tempfile.tempdir = None
    m, raw, meta = cell(tmp_path, "micro", "co-located", 1, "serial", port="/dev/ttyNOSUCH9")
    try:
        result = run_cell(m, raw, meta)
    finally:
        tempfile.tempdir = None
    assert not list((tmp_path / "tmp").iterdir())       # nothing left behind
    assert result["status"] == "skipped"
    assert "/dev/ttyNOSUCH9" in result["reason"]
    assert json.loads(meta.read_text())["status"] == "skipped"


def test_device_rows_reach_the_claims_and_the_ratios(tmp_path):
    """The device table (micro and BEPS cells on a board) feeds the paper's device claims and the
    device rows of the ratio table, and never the edge/cloud ones."""
    from msdbench import claims
    from msdbench.figures import ratios

    def row(suite, iso, dep, mean, op, payload=None, backend="device", platform="specialized"):
        return {"suite": suite, "platform": platform, "backend": backend, "isolation": iso,
                "deployment": dep, "payload": payload, "op": op, "status": "ok", "n": 100,
                "mean_us": mean, "p50_us": mean, "ci95_low_us": mean * 0.99,
                "ci95_high_us": mean * 1.01, "board": "emulated board"}

    device = pd.DataFrame([row("micro", "co-located", 1, 40.0, "poll", 0),
                           row("micro", "isolated", 2, 800.0, "poll", 0)]
                          + [row("beps", "co-located", d, m, op) for d, m in ((1, 100.0),
                             (2, 200.0), (4, 26800.0)) for op in ("create_user", "publish")])
    host = pd.DataFrame([row("micro", "co-located", 1, 10.0, "poll", 0, "process"),
                         row("micro", "isolated", 2, 730.0, "poll", 0, "process")])
    device.to_parquet(tmp_path / "device.parquet")
    host.to_parquet(tmp_path / "micro.parquet")
    out = claims.write(str(tmp_path / "claims.csv"),
                       [str(tmp_path / "micro.parquet"), str(tmp_path / "device.parquet")])
    verdict = out.set_index("claim")["ours_value"].to_dict()
    assert verdict["micro-isolation-device"] == pytest.approx(20.0)
    assert verdict["device-d2-vs-d1"] == pytest.approx(2.0)
    assert verdict["device-d4-vs-d2"] == pytest.approx(134.0)
    assert verdict["micro-isolation-specialized"] == pytest.approx(73.0)  # host rows only
    r = ratios.write(str(tmp_path / "ratios.csv"), [str(tmp_path / "device.parquet")])
    total = r[(r["comparison"] == "device-deployment") & (r["op"] == "all")]
    assert total["ratio"].tolist() == [pytest.approx(134.0)]
    assert set(r["backend"]) == {"device"}


def test_one_board_cell_by_hand(tmp_path, built, no_device_leftovers):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "msdbench", "run", "beps", "--backend", "device",
                        "--platform", "specialized", "--isolation", "tiered", "--deployment", "2",
                        "--board", "unix", "--config", str(ROOT / "config/device.yaml"),
                        "--out", str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "cell.json").read_text())["status"] == "ok"
    r = subprocess.run([sys.executable, "-m", "msdbench", "run", "micro", "--backend", "device",
                        "--platform", "linux", "--isolation", "co-located", "--deployment", "1",
                        "--config", str(ROOT / "config/device.yaml")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot run on a board" in r.stderr


def test_every_board_cell_plans_and_passes_the_checks_measure_makes():
    from msdbench.config import check_settings, load, matrix

    jobs = [j for j in matrix(load(ROOT / "config/device.yaml")) if j.cell.backend == "device"]
    assert len(jobs) == 12
    for job in jobs:
        m = plan(job.cell, job.settings)
        check_settings(m.suite, m.settings)
        assert m.hosts["board"]["kind"] == "board"
        assert {d.host for d in m.domains} == ({"board", "local"} if job.cell.deployment == 4
                                                else {"board"})
