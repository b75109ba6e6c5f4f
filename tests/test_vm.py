"""The vm host kind (deployments 3 and 4): a real QEMU guest built from Debian packages, restored
from its snapshot (TCG where KVM does not really run a guest), running the client's domain against
real services on this machine over a tap on a bridge (and, `server_host`, the server side in a
guest of its own, reached through this machine). Faults: the guest killed mid-cell, a guest
that never answers, a harness killed with SIGKILL. Nothing left behind: no QEMU, no tap or
bridge, no state directory, no forwarding rule. Needs root and qemu-system-x86; skipped, with the
reason, without them.

The first test here pays for the image (~2-3 min cold, cached after) and the snapshot (one boot,
~1 min under TCG); each cell after that restores the snapshot in seconds.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from msdbench.cell import run_cell
from msdbench.lifetime import owner_tag
from msdbench.planning import Cell, plan
from msdbench.vm import net
from msdbench.vm.stamp import unavailable_reason

from conftest import ROOT

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(bool(unavailable_reason()), reason=f"VMs: {unavailable_reason()}")]

VM1 = {"client_host": "vm1", "hosts": {"vm1": {"kind": "vm", "on": "local"}}}
MICRO = {"requests": 300, "warmup": 50, "pinning": "same-core"}
BEPS = {"pinning": "same-core", "workers": 2,
        "workload": {"users": 20, "active_users": 4, "follows_per_user": 2, "publishes_per_user": 2}}


def vm_objects() -> dict:
    """Every guest's QEMU process, msdv link and state directory here, and this session's
    namespaces."""
    qemus = {p.pid for p in psutil.process_iter(["cmdline"])
             if p.info["cmdline"] and "qemu-system-x86_64" in p.info["cmdline"][0]
             and any(a.startswith("msdbench-") for a in p.info["cmdline"])}
    links = {n for n in os.listdir("/sys/class/net") if n.startswith(net.PREFIX)}
    states = {f.parent.name for f in net.STATE_ROOT.glob("*/state.json")}
    mine = owner_tag()  # this session's namespaces (other runs on the machine have their own)
    spaces = {n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
              .stdout.split() if n.startswith(mine + "-")}
    rules = {r for c in ("DOCKER-USER", "FORWARD") for r in subprocess.run(
        ["iptables", "-S", c], capture_output=True, text=True).stdout.splitlines() if "msdb-" in r}
    return {"qemu": qemus, "links": links, "states": states, "namespaces": spaces, "rules": rules}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The guest image and its snapshot, built once for the module (as the build_image rule does)."""
    from msdbench.vm.stamp import write_stamp

    stamp = write_stamp(tmp_path_factory.mktemp("vm") / "vm.json", log=print)
    assert "unavailable" not in stamp, stamp
    return stamp


@pytest.fixture
def nothing_left(no_leftovers):
    """No QEMU, link or state directory that the test made outlives it."""
    before = vm_objects()

    def new():
        return {k: sorted(v - before[k]) for k, v in vm_objects().items()}

    yield
    deadline = time.monotonic() + 10
    while any(new().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert new() == {"qemu": [], "links": [], "states": [], "namespaces": [], "rules": []}


def test_micro_cell_with_the_client_in_a_guest(image, tmp_path, nothing_left):
    m = plan(Cell("micro", "linux", "process", "isolated", 3, 512), MICRO | VM1)
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w")
    assert meta["status"] == "ok"
    df = pd.read_parquet(tmp_path / "c.parquet")
    df = df[df["op"] == "poll"]  # beside the cell's echo reference rows
    assert len(df) == 350 and (df["e2e_ns"] > 0).all()
    assert "call_ns" not in df.columns, "the guest's clock is its own: no call/return split"
    vm = meta["hosts"]["vm1"]
    assert vm["kind"] == "vm" and vm["accel"] == image["accel"] and vm["vm"]["restored_from"]
    # The measured path crosses the tap: the client's socket is the guest's, its peer the bridge.
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == vm["address"] == vm["vm"]["guest_address"].split("/")[0]
    assert sock["peer"].split(":")[0] == vm["vm"]["host_address"] == meta["hosts"]["local"]["address"]
    assert vm["vm"]["guest"]["kernel"].startswith("Linux") and vm["msdbench"]


def test_micro_cell_with_the_guest_on_another_host(image, tmp_path, nothing_left):
    """Deployment 4: the VM on an emulated host (a netns); the calls cross the tap and the veth."""
    vm2 = {"client_host": "vm2", "hosts": {"vm2": {"kind": "vm", "on": "edge1"}, "edge1": {"kind": "netns"}}}
    m = plan(Cell("micro", "specialized", "process", "isolated", 4, 0), MICRO | vm2)
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w")
    assert meta["status"] == "ok"
    vm = meta["hosts"]["vm2"]
    assert vm["on"] == "edge1" and vm["vm"]["netns"] == vm["on_host"]["netns"]
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == vm["address"]
    # The server side listens on this machine's end of the namespace's veth, not on a bridge here.
    assert sock["peer"].split(":")[0] == meta["hosts"]["local"]["address"] == vm["on_host"]["link"]["local_address"]


def test_micro_cell_with_the_server_side_in_a_guest(image, tmp_path, nothing_left):
    """The paper's layout of deployment 2 (`deployments: {2: {server_host: vm0}}`): the poll
    service's domain and the client's in one guest, nothing of the cell on the bare host."""
    from msdbench.summary import cell_rows

    vm0 = {"server_host": "vm0", "hosts": {"vm0": {"kind": "vm", "on": "local"}}}
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 512), MICRO | vm0)
    assert {d.host for d in m.domains} == {"vm0"}
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w")
    assert meta["status"] == "ok"
    df = pd.read_parquet(tmp_path / "c.parquet")
    assert len(df[df["op"] == "poll"]) == 350
    vm = meta["hosts"]["vm0"]
    assert vm["kind"] == "vm" and vm["accel"] == image["accel"] and "local" not in meta["hosts"]
    # The client calls the poll service at the guest's own address: both ends are in the guest.
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == sock["peer"].split(":")[0] == vm["address"]
    # The table says which layout produced the number.
    row = cell_rows(tmp_path / "c.json")[0]
    assert (row["server_host"], row["server_host_kind"], row["server_accel"]) == ("vm0", "vm", image["accel"])
    assert (row["client_host"], row["client_host_kind"]) == ("vm0", "vm")


def test_other_work_beside_a_guest_counts_as_unaccounted(image, tmp_path, nothing_left):
    """A busy loop on the guest's CPU during the measurement: the repetition's host load shows it
    (ours is what QEMU used here, not the guest's own count, which absorbs the loop's share)."""
    vm0 = {"server_host": "vm0", "hosts": {"vm0": {"kind": "vm", "on": "local"}}}
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), MICRO | {"requests": 2000} | vm0)
    busy = []

    def start_busy(dep):
        busy.append(subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"]))

    try:
        meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w",
                        on_up=start_busy)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert meta["status"] == "ok" and busy
    host = meta["repetitions"][0]["host"]
    assert host["unaccounted_util"] >= 0.25, host


def test_micro_cell_with_the_server_side_and_the_client_in_two_guests(image, tmp_path, nothing_left):
    """The paper's layout of deployment 3 (`deployments: {3: {server_host: vm0, client_host: vm1}}`):
    the poll service's domain in one guest, the client's in another; the client's calls go from
    its guest's tap through this machine (routed between the two bridges, forwarded by two
    labelled ACCEPT rules) into the server's guest."""
    from msdbench.summary import cell_rows

    two = {"server_host": "vm0", "client_host": "vm1",
           "hosts": {"vm0": {"kind": "vm", "on": "local"}, "vm1": {"kind": "vm", "on": "local"}}}
    m = plan(Cell("micro", "linux", "process", "isolated", 3, 0), MICRO | two)
    assert {d.host for d in m.server_domains()} == {"vm0"} and m.client_domain().host == "vm1"
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w")
    assert meta["status"] == "ok"
    df = pd.read_parquet(tmp_path / "c.parquet")
    assert len(df[df["op"] == "poll"]) == 350
    server, client = meta["hosts"]["vm0"], meta["hosts"]["vm1"]
    assert server["accel"] == client["accel"] == image["accel"] and "local" not in meta["hosts"]
    # The client's socket: its own guest's address to the server guest's, across this machine.
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == client["address"] != server["address"]
    assert sock["peer"].split(":")[0] == server["address"]
    (fwd,) = server["forwarding"]
    assert fwd["peer"] == "vm1" and sorted(fwd["between"]) == sorted(
        [f"{server['vm']['id']}b", f"{client['vm']['id']}b"])
    row = cell_rows(tmp_path / "c.json")[0]
    assert (row["server_host"], row["server_host_kind"], row["client_host"]) == ("vm0", "vm", "vm1")


def test_micro_cell_with_the_server_side_in_a_guest_and_the_client_on_an_emulated_host(
        image, tmp_path, nothing_left):
    """Deployment 5 with `server_host`: the client bare in a namespace, the server side in a guest;
    the calls go from the namespace's veth through this machine into the guest's bridge."""
    layout = {"server_host": "vm0", "client_host": "edge1",
              "hosts": {"vm0": {"kind": "vm", "on": "local"}, "edge1": {"kind": "netns"}}}
    m = plan(Cell("micro", "specialized", "process", "isolated", 5, 0), MICRO | layout)
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w")
    assert meta["status"] == "ok"
    server, edge = meta["hosts"]["vm0"], meta["hosts"]["edge1"]
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == edge["address"]
    assert sock["peer"].split(":")[0] == server["address"]
    (fwd,) = edge["forwarding"]
    assert sorted(fwd["between"]) == sorted([edge["link"]["device"], f"{server['vm']['id']}b"])


def test_beps_cell_with_the_client_in_a_guest_passes_its_check(image, tmp_path, nothing_left):
    m = plan(Cell("beps", "specialized", "process", "tiered", 3), BEPS | VM1)
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", workdir=tmp_path / "w")
    assert meta["status"] == "ok" and meta["driver"]["correct"] is True
    ops = set(pd.read_parquet(tmp_path / "c.parquet")["op"])
    assert {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"} <= ops
    assert meta["manifest"]["edges"][0]["transport"] == "thrift-tcp"  # client -> lb, across hosts


def _measure(tmp_path: Path, manifest) -> subprocess.Popen:
    manifest.save(tmp_path / "m.yaml")
    return subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(tmp_path / "m.yaml"),
                             "--raw", str(tmp_path / "c.parquet"), "--meta", str(tmp_path / "c.json")],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)


def _wait_for_state(proc: subprocess.Popen, key: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for f in net.STATE_ROOT.glob("*/state.json"):
            try:
                state = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if state.get("owner", {}).get("pid") == proc.pid and key in state:
                return state
        time.sleep(0.2)
    raise AssertionError(f"no guest of pid {proc.pid} with {key} (exit {proc.poll()})")


def test_guest_killed_mid_cell_fails_the_cell_naming_the_vm(image, tmp_path, nothing_left):
    m = plan(Cell("micro", "linux", "process", "isolated", 3, 0),
             MICRO | VM1 | {"requests": 10_000_000, "deadline_s": 600})
    proc = _measure(tmp_path, m)
    state = _wait_for_state(proc, "qemu_pid")
    # Measuring: the harness has the guest's client domain going (a relay child) for a while.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            "msdbench.vm.relay" in " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children()):
        time.sleep(0.2)
    time.sleep(5)
    os.kill(state["qemu_pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert re.search(r"host 'vm1' \(VM 'vm1' \((TCG, emulated|KVM), msdv\w+\); QEMU ended: signal SIGKILL\)", err), err
    # The record says failed (no result), naming the client's domain, its host and the VM's end.
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["status"] == "failed"
    (culprit,) = record["failure"]["culprits"]
    assert culprit["domain"] == "client" and culprit["host"] == "vm1"
    assert "QEMU ended: signal SIGKILL" in record["failure"]["summary"]


def test_a_guest_that_never_answers_is_ended_by_its_deadline_with_its_console(image, tmp_path, nothing_left):
    from msdbench.vm.guest import Guest, GuestError
    from msdbench.vm.image import ensure_image, project_root

    # A cold boot whose init does not start the agent (fault injection on the kernel command line).
    guest = Guest("mute", ensure_image(project_root()), image["accel"], tmp_path, boot_timeout_s=30,
                  extra_append="msdbench.fault=no-agent loglevel=6")
    t0 = time.monotonic()
    with pytest.raises(GuestError) as e:
        guest.boot()
    assert time.monotonic() - t0 < 30 + 30
    msg = str(e.value)
    assert "VM 'mute'" in msg and "did not boot within 30 s" in msg
    console = msg.split("--- last lines of the console of")[1]
    assert re.search(r"\[\s*\d+\.\d+\] ", console), "the console's tail (kernel lines) is in the error"
    assert guest.proc.poll() is not None


def test_clean_removes_what_a_sigkilled_harness_left(image, tmp_path, nothing_left):
    code = ("import sys, time; from pathlib import Path; from msdbench.hosts import make_host; "
            "h = make_host('vm1', {'kind': 'vm'}); h.up(); print('up', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    state = _wait_for_state(proc, "qemu_pid", timeout=5)
    proc.kill()
    proc.wait()
    link = state["link"]
    deadline = time.monotonic() + 10
    while psutil.pid_exists(state["qemu_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(state["qemu_pid"]), "QEMU dies with its harness (PR_SET_PDEATHSIG)"
    assert net.link_exists(link["tap"]) and net.link_exists(link["bridge"])
    out = subprocess.run([sys.executable, "-m", "msdbench", "clean"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert f"msdv{link['id']}" in out.stdout, out
    assert not net.link_exists(link["tap"]) and not net.link_exists(link["bridge"])
    assert not (net.STATE_ROOT / link["id"]).exists() and not Path(state["workdir"]).exists()
