"""`msdbench up`: a cell's services up for any Thrift client, their addresses in a file; a stock
thriftpy2 client (made from the IDL the file names) calls every one; SIGTERM, --seconds or a dead
domain end it, and nothing stays."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import thriftpy2
from thriftpy2.rpc import make_client

from conftest import ROOT


def start_up(tmp_path, *args, env=None) -> tuple[subprocess.Popen, dict]:
    """`msdbench up` in the background; (the process, the addresses file's content)."""
    addresses = tmp_path / "addresses.json"
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "up", *args, "--addresses",
                             str(addresses)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, TMPDIR=str(tmp_path), **(env or {})))
    deadline = time.monotonic() + 120
    while not addresses.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no addresses file: {proc.communicate()}")
        time.sleep(0.1)
    return proc, json.loads(addresses.read_text())


def call_every_service(found: dict) -> dict:
    """A real call to each listed service, through a client generated from the named IDL file."""
    answers = {}
    for name, address in found.items():
        if name == "wire":
            continue
        spec = found["wire"]["services"][name]
        module = thriftpy2.load(spec["idl"], module_name=f"up_{os.path.basename(spec['idl'])[:-7]}_thrift")
        host, _, port = address.rpartition(":")
        client = make_client(getattr(module, spec["service"]), host, int(port), timeout=10_000)
        try:
            answers[name] = client.poll(b"up") if spec["service"] == "Poll" else client.census()
        finally:
            client.close()
    return answers


def end_and_check(proc, tmp_path, sig=signal.SIGTERM) -> str:
    domains = psutil.Process(proc.pid).children()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "torn down" in out
    _, alive = psutil.wait_procs(domains, timeout=10)
    assert not alive
    assert not (tmp_path / "addresses.json").exists()
    assert not list(tmp_path.glob("msdbench-*"))  # work dir and sockets gone
    return out


def test_up_beps_every_service_answers_then_sigterm(tmp_path):
    proc, found = start_up(tmp_path, "beps", "--isolation", "isolated", "--deployment", "2",
                           "--workers", "2")
    answers = call_every_service(found)
    assert set(answers) == {"lb", "worker0", "worker1", "userdb", "payloaddb", "reader"}
    assert all(a.startswith("127.0.0.1:") for n, a in found.items() if n != "wire")
    assert answers["userdb"] == 0 and answers["lb"].users == 0
    end_and_check(proc, tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, None])
def test_up_specialized_entry_on_tcp_until_ctrl_c_or_seconds(tmp_path, sig):
    """In a specialized cell the entry service listens on TCP for the foreign client anyway."""
    args = ["micro", "--platform", "specialized", "--isolation", "co-located", "--deployment", "1"]
    if sig is None:
        args += ["--seconds", "3"]
    proc, found = start_up(tmp_path, *args)
    assert set(found) == {"poll", "wire"}
    assert call_every_service(found)["poll"] > 0  # the server's clock
    if sig is None:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "torn down" in out, err
        assert not (tmp_path / "addresses.json").exists()
    else:
        end_and_check(proc, tmp_path, sig)


def test_up_ends_naming_a_domain_that_died(tmp_path):
    proc, _ = start_up(tmp_path, "beps", "--isolation", "tiered", "--deployment", "2",
                       "--workers", "1")
    data = next(p for p in psutil.Process(proc.pid).children() if "data" in p.cmdline())
    data.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "a domain ended: domain data (services userdb, payloaddb;" in err and "SIGKILL" in err
    assert not (tmp_path / "addresses.json").exists()
