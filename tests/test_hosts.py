"""Hosts: deployment 5 with the client on an emulated host (a network namespace) and on a real
remote host reached over SSH (a real sshd this test starts in its own namespace). Real processes,
real links, real calls; nothing left behind on either side. Needs root (netns); skipped without."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from msdbench.backends.base import BackendError
from msdbench.backends.process import ProcessBackend
from msdbench.cell import run_cell
from msdbench.hosts import HostError
from msdbench.hosts import netns as netns_kind
from msdbench.hosts.netns import NetnsHost
from msdbench.lifetime import owner_tag
from msdbench.planning import Cell, plan

from conftest import ROOT, domain_processes, throwaway_sshd

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not netns_kind.can_manage(),
                                reason="network namespaces need root and iproute2")

MICRO = {"requests": 300, "warmup": 50, "pinning": "same-core"}
BEPS = {"pinning": "same-core", "workers": 2,
        "workload": {"users": 20, "active_users": 4, "follows_per_user": 2, "publishes_per_user": 2}}


def ours(tag: str | None = None) -> dict:
    """This session's namespaces and links (by owner tag), whatever state they are in."""
    tag = tag or owner_tag()
    spaces = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
              .stdout.split() if n.startswith(tag + "-")]
    links = []
    for dev in os.listdir("/sys/class/net"):
        if dev.startswith("msdb-"):
            alias = Path(f"/sys/class/net/{dev}/ifalias").read_text().strip()
            if alias.startswith(tag + "-"):
                links.append(dev)
    return {"namespaces": spaces, "links": links}


@pytest.fixture
def nothing_left(no_leftovers):
    yield
    assert ours() == {"namespaces": [], "links": []}


def edge(**spec) -> dict:
    return {"client_host": "edge1", "hosts": {"edge1": {"kind": "netns"} | spec}}


# -- netns: an emulated host -----------------------------------------------------------------

@pytest.mark.parametrize("platform", ["linux", "specialized"])
def test_micro_cell_with_the_client_in_a_namespace(tmp_path, nothing_left, platform):
    m = plan(Cell("micro", platform, "process", "isolated", 5, 512), MICRO | edge())
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok"
    assert (pd.read_parquet(tmp_path / "c.parquet")["op"] == "poll").sum() == 350
    host = meta["hosts"]["edge1"]
    link = host["link"]
    # The measured path crosses the veth: the client's socket runs from the namespace's address
    # to this machine's end of the link, never over loopback.
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == host["address"]
    assert sock["peer"].split(":")[0] == link["local_address"] != "127.0.0.1"
    assert meta["hosts"]["local"]["address"] == link["local_address"]
    assert host["kind"] == "netns" and host["emulated"] and host["kernel"] and host["cpu_model"]
    assert meta["manifest"]["hosts"]["edge1"]["address"] == host["address"]
    assert host["timings"]["up_s"] > 0 and host["timings"]["down_s"] >= 0


def test_beps_cell_with_the_client_in_a_namespace(tmp_path, nothing_left):
    m = plan(Cell("beps", "linux", "process", "tiered", 5), BEPS | edge())
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok", meta.get("driver", {}).get("problems")
    ops = set(pd.read_parquet(tmp_path / "c.parquet")["op"])
    assert {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"} <= ops
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["peer"].split(":")[0] == meta["hosts"]["edge1"]["link"]["local_address"]
    assert sock["local"].split(":")[0] == meta["hosts"]["edge1"]["address"]


def test_rate_shaping_is_a_real_qdisc_on_both_ends(nothing_left):
    m = plan(Cell("micro", "linux", "process", "isolated", 5, 0), MICRO | edge(rate="50mbit"))
    with ProcessBackend().up(m) as dep:
        h = dep.hosts["edge1"]
        out = subprocess.run(["tc", "qdisc", "show", "dev", h.link], capture_output=True,
                             text=True).stdout
        inside = subprocess.run(["ip", "netns", "exec", h.netns, "tc", "qdisc", "show", "dev",
                                 "eth0"], capture_output=True, text=True).stdout
        assert "tbf" in out and "50Mbit" in out, out
        assert "tbf" in inside and "50Mbit" in inside, inside
        facts = dep.hosts.facts()["edge1"]
        assert facts["link"]["rate"] == "50mbit" and facts["link"]["qdisc"] == "tbf"
        r = dep.run_driver({"driver": "micro", "payload": 0, "requests": 50, "warmup": 0})
        assert len(r["samples"]["poll"]["e2e_ns"]) == 50
    assert not os.path.exists(f"/sys/class/net/{h.link}")


def test_a_delay_is_refused_unless_the_kernel_has_netem(nothing_left):
    m = plan(Cell("micro", "linux", "process", "isolated", 5, 0), MICRO | edge(delay="100us"))
    try:
        dep = ProcessBackend().up(m)
    except HostError as e:  # these kernels: no netem
        assert "hosts.edge1.delay" in str(e) and "does not fake one" in str(e)
        return
    with dep:  # a kernel with netem: the delay is really applied
        h = dep.hosts["edge1"]
        out = subprocess.run(["tc", "qdisc", "show", "dev", h.link], capture_output=True,
                             text=True).stdout
        assert "netem" in out and "delay" in out, out


def test_without_root_a_netns_cell_is_skipped_with_the_reason(tmp_path, nothing_left, monkeypatch):
    """What a user who is not root gets (the default config's throughput study among others)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    m = plan(Cell("micro", "linux", "process", "isolated", 5, 0), MICRO | edge())
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "skipped"
    assert "host 'edge1' (netns)" in meta["reason"] and "needs root" in meta["reason"]


def _cell_process(tmp_path, config_extra: str, requests: int = 10_000_000) -> subprocess.Popen:
    cfg = tmp_path / "config.yaml"
    cfg.write_text((ROOT / "config/config.yaml").read_text() + config_extra)
    return subprocess.Popen(
        [sys.executable, "-m", "msdbench", "run", "micro", "--isolation", "isolated",
         "--deployment", "5", "--config", str(cfg), "--requests", str(requests), "--warmup", "0",
         "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))


NETNS_CONFIG = "\nhosts:\n  edge1: {kind: netns}\ndeployments:\n  5: {client_host: edge1}\n"


def _wait_for(pred, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_sigterm_mid_cell_removes_the_namespace(tmp_path, no_leftovers):
    proc = _cell_process(tmp_path, NETNS_CONFIG)
    tag = owner_tag(proc.pid)
    _wait_for(lambda: len(domain_processes()) == 2 or proc.poll() is not None)
    _wait_for(lambda: ours(tag)["namespaces"])
    time.sleep(1.0)  # mid-measurement
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert ours(tag) == {"namespaces": [], "links": []}
    assert not (tmp_path / "out" / "cell.json").exists()


def test_clean_removes_what_a_sigkill_left(tmp_path, no_leftovers):
    proc = _cell_process(tmp_path, NETNS_CONFIG)
    tag = owner_tag(proc.pid)
    _wait_for(lambda: ours(tag)["namespaces"] and len(domain_processes()) == 2)
    proc.kill()
    proc.communicate(timeout=30)
    left = ours(tag)
    assert left["namespaces"], "SIGKILL cannot clean up: the namespace is still there"
    r = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--dry-run"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert left["namespaces"][0] in r.stdout + r.stderr
    assert ours(tag) == left, "--dry-run removes nothing"
    netns_kind.clean(say=lambda _: None, prefix=tag)
    assert ours(tag) == {"namespaces": [], "links": []}


def test_clean_all_with_a_docker_host_touches_only_that_engine(nothing_left):
    """`clean --all --docker-host URL` names one engine: this machine's live namespaces (another
    run's, a benchmark's) stay, where a plain `clean --all` would take them."""
    host = NetnsHost("keep", {"kind": "netns"})
    host.up()
    try:
        mine = ours(host.owner)["namespaces"]
        assert mine, "the namespace is up"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        r = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--all", "--docker-host",
                            "tcp://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2 and "127.0.0.1:9" in r.stderr, r  # that engine is not there
        assert ours(host.owner)["namespaces"] == mine, "a namespace was removed: " + r.stdout
        r = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--all", "--dry-run"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert mine[0] in r.stdout, "without --docker-host, --all does reach it"
    finally:
        host.down()


def test_hosts_check_creates_and_removes_a_namespace(tmp_path, nothing_left):
    cfg = tmp_path / "config.yaml"
    cfg.write_text((ROOT / "config/config.yaml").read_text()
                   + "\nhosts:\n  edge1: {kind: netns, rate: 1gbit}\n"
                   "  gone: {kind: ssh, url: 'ssh://root@127.0.0.1:1'}\n")
    r = subprocess.run([sys.executable, "-m", "msdbench", "hosts", "check", "--config", str(cfg)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = r.stdout.splitlines()
    assert r.returncode == 1, r.stdout + r.stderr  # one host is not usable
    edge_line = next(i for i, x in enumerate(lines) if x.startswith("edge1"))
    assert " ok " in lines[edge_line] and "msdbench 0.1.0" in lines[edge_line]
    assert "created and removed" in lines[edge_line + 1] and "tbf rate 1gbit" in lines[edge_line + 1]
    gone = next(x for x in lines if x.startswith("gone"))
    assert "NOT USABLE" in gone and "host 'gone'" in gone and "hosts.gone.url" in gone
    local = next(x for x in lines if x.startswith("local"))
    assert " ok " in local and "kernel Linux" in local


# -- forwarding: two hosts on this machine reach each other through it -------------------------
# (the path from the client's host to the server side's guest, `server_host` on deployments 3-5;
# here between two namespaces, the same interfaces-and-rules without a guest's cost)

ECHO = ("import socket, sys\n"
        "s = socket.create_server((sys.argv[1], 0)); print(s.getsockname()[1], flush=True)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(c.recv(64)); c.close()\n")


def forward_rules(tag: str | None = None) -> list[str]:
    """This session's (or `tag`'s) forwarding rules, in every chain msdbench uses."""
    from msdbench.hosts import forward

    out = []
    for c in forward.CHAINS:
        out += [r for r in subprocess.run(["iptables", "-S", c], capture_output=True, text=True)
                .stdout.splitlines() if f"{tag or owner_tag()} forward" in r]
    return out


def _reaches(netns: str, address: str, port: int) -> bool:
    code = ("import socket, sys\n"
            "try:\n"
            "    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
            "    c.sendall(b'ping'); sys.exit(0 if c.recv(64) == b'ping' else 1)\n"
            "except OSError:\n"
            "    sys.exit(1)\n")
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, address,
                           str(port)], timeout=30).returncode == 0


def _drops_forwarded() -> bool:
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return "-P FORWARD DROP" in rules


def test_two_hosts_on_this_machine_reach_each_other_through_its_forwarding(nothing_left):
    from msdbench.hosts.forward import Forwarding

    a, b = NetnsHost("fwda", {}), NetnsHost("fwdb", {})
    server = fwd = None
    try:
        a.up()
        b.up()
        server = subprocess.Popen(["ip", "netns", "exec", b.netns, sys.executable, "-c", ECHO,
                                   b.address], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        if _drops_forwarded():  # Docker's FORWARD policy: a's packets to b are dropped here
            assert not _reaches(a.netns, b.address, port)
        fwd = Forwarding(a.local_device(), b.local_device()).open()
        assert len(forward_rules()) == 2 and fwd.facts()["accept_rules"] == 2
        assert _reaches(a.netns, b.address, port)
        fwd.close()
        assert forward_rules() == []
    finally:
        if fwd is not None:
            fwd.close()
        if server is not None:
            server.kill()
            server.wait()
        a.down()
        b.down()
    assert forward_rules() == []


def test_clean_removes_the_forwarding_rules_a_sigkill_left(no_leftovers):
    code = ("from msdbench.hosts.forward import Forwarding\n"
            "Forwarding('msdb-gone-a', 'msdb-gone-b').open(); print('up', flush=True)\n"
            "import time; time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    tag = owner_tag(proc.pid)
    assert proc.stdout.readline().strip() == "up"
    assert len(forward_rules(tag)) == 2
    proc.kill()
    proc.wait()
    r = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--dry-run"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "would remove iptables rule" in r.stdout and tag in r.stdout, r.stdout + r.stderr
    assert len(forward_rules(tag)) == 2, "--dry-run removes nothing"
    r = subprocess.run([sys.executable, "-m", "msdbench", "clean"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert forward_rules(tag) == [], r.stdout + r.stderr


# -- ssh: a real remote host (an sshd in the test's own namespace) -----------------------------

@pytest.fixture
def remote(tmp_path):
    """A "remote host": a network namespace with a real sshd in it (throwaway host and user keys,
    root login by key only). Yields its ssh host entry; kills everything in it afterwards."""
    d = tmp_path / "ssh"
    sshd_bin = throwaway_sshd(d, None, 2222)  # every address of its namespace: lo and the link
    ns = NetnsHost("remote", {"kind": "netns", "range": "10.216.0.0/16"})
    ns.up()
    sshd = subprocess.Popen(["ip", "netns", "exec", ns.netns, sshd_bin, "-D", "-e", "-f",
                             str(d / "sshd_config")], stderr=open(d / "sshd.log", "wb"))
    (d / "known_hosts").write_text(
        f"[{ns.address}]:2222 " + " ".join((d / "hostkey.pub").read_text().split()[:2]) + "\n")
    entry = {"kind": "ssh", "url": f"ssh://root@{ns.address}:2222",
             "options": ["-i", str(d / "userkey"), "-o", f"UserKnownHostsFile={d}/known_hosts",
                         "-o", "IdentitiesOnly=yes"],
             "python": f"env PYTHONPATH={ROOT} {sys.executable}"}
    _wait_for(lambda: subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-p", "2222", *entry["options"], f"root@{ns.address}", "true"],
        capture_output=True).returncode == 0 or sshd.poll() is not None, 20)
    assert sshd.poll() is None, (d / "sshd.log").read_text()
    yield {"entry": entry, "ns": ns, "sshd": sshd, "dir": d}
    for pid in _pids_in(ns.netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sshd.wait(10)
    ns.down()


def _pids_in(netns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def _remote_domains(remote) -> list[str]:
    """Processes on the remote host other than its sshd listener."""
    out = []
    for pid in _pids_in(remote["ns"].netns):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "msdbench" in cmd:
            out.append(cmd)
    return out


def far(remote, **changes) -> dict:
    return {"client_host": "far", "hosts": {"far": remote["entry"] | changes}}


@pytest.mark.parametrize("platform", ["linux", "specialized"])
def test_micro_cell_with_the_client_over_ssh(tmp_path, nothing_left, remote, platform):
    m = plan(Cell("micro", platform, "process", "isolated", 5, 64), MICRO | far(remote))
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok"
    host = meta["hosts"]["far"]
    assert host["kind"] == "ssh" and host["address"] == remote["ns"].address
    assert host["msdbench"] == "0.1.0" and host["kernel"] and host["python"]
    sock = meta["placement"]["client_driver"]["socket"]
    assert sock["local"].split(":")[0] == remote["ns"].address
    assert sock["peer"].split(":")[0] == remote["ns"].local_address
    _wait_for(lambda: not _remote_domains(remote), 15)


def test_beps_cell_with_the_client_over_ssh(tmp_path, nothing_left, remote):
    m = plan(Cell("beps", "linux", "process", "co-located", 5), BEPS | far(remote))
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok", meta.get("driver", {}).get("problems")
    _wait_for(lambda: not _remote_domains(remote), 15)


def test_remote_host_dies_mid_cell(nothing_left, remote):
    m = plan(Cell("micro", "linux", "process", "isolated", 5, 0), MICRO | far(remote))
    with ProcessBackend().up(m) as dep:
        assert _remote_domains(remote), "the client domain runs on the remote host"

        def die():  # the host goes away: every process on it, sshd and the session included
            time.sleep(1.0)
            for pid in _pids_in(remote["ns"].netns):
                os.kill(pid, signal.SIGKILL)

        threading.Thread(target=die).start()
        with pytest.raises(BackendError, match=r"domain 'client' on host 'far' \(ssh://root@"):
            dep.run_driver({"driver": "micro", "payload": 0, "requests": 10_000_000, "warmup": 0,
                            "deadline_s": 120})
    assert not _remote_domains(remote)


def test_harness_sigkill_stops_the_remote_domain(tmp_path, no_leftovers, remote):
    e = remote["entry"]
    extra = ("\nhosts:\n  far: " + json.dumps(e) + "\ndeployments:\n  5: {client_host: far}\n")
    proc = _cell_process(tmp_path, extra)
    _wait_for(lambda: _remote_domains(remote) or proc.poll() is not None, 60)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=30)
    # ssh died with the harness; the remote domain's stdin (its lifeline) closed: it stops.
    _wait_for(lambda: not _remote_domains(remote), 20)


def test_unreachable_host_skips_the_cell_with_the_reason(tmp_path, nothing_left, remote):
    url = remote["entry"]["url"].replace(":2222", ":2223")
    m = plan(Cell("micro", "linux", "process", "isolated", 5, 0), MICRO | far(remote, url=url))
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "skipped"
    assert "host 'far'" in meta["reason"] and "unreachable" in meta["reason"]
    assert "hosts.far.url" in meta["reason"] and "\n" not in meta["reason"]


def test_wrong_or_missing_msdbench_there_is_one_line_naming_the_field(tmp_path, nothing_left, remote):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(ROOT / "msdbench", other / "msdbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(other / "msdbench/services/poll.py", "a") as f:
        f.write("\n# a different version\n")
    for python, match in [
            (f"env PYTHONPATH={other} {sys.executable}", "msdbench there is 0.1.0 .*install the same"),
            (f"{sys.executable} -S", "msdbench is not installed for")]:
        m = plan(Cell("micro", "linux", "process", "isolated", 5, 0),
                 MICRO | far(remote, python=python))
        with pytest.raises(HostError) as e:
            ProcessBackend().up(m)
        msg = str(e.value)
        assert "host 'far'" in msg and "hosts.far.python" in msg and "\n" not in msg, msg
        import re
        assert re.search(match, msg), msg


@pytest.mark.docker
def test_docker_backend_with_the_ssh_hosts_engine(tmp_path, nothing_left, engine, remote, monkeypatch):
    """The docker backend given that host's engine URL (ssh://): the engine's socket is reachable
    on that "host" (its sshd shares this machine's filesystem), so the cell runs through it. The
    containers are on this machine's engine, so the control ports are reached at their IPs."""
    pytest.importorskip("paramiko", reason="ssh:// needs paramiko: pip install -e '.[docker-ssh]'")
    from msdbench.backends import docker_image

    from conftest import copy_project

    _ssh_home(tmp_path, remote, monkeypatch)
    image = docker_image.ensure_image(copy_project(tmp_path / "proj"))
    url = remote["entry"]["url"]
    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), MICRO)
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json",
                    {"docker_host": url, "image": image["id"], "control_access": "ip"})
    assert meta["status"] == "ok"
    assert meta["backend_info"]["engine"]["host"] == url


@pytest.mark.docker
def test_hosts_check_reports_an_ssh_hosts_docker_engine(tmp_path, nothing_left, engine, remote,
                                                         monkeypatch):
    """`hosts check` reaches each ssh host's engine as the docker backend would: here that
    host's engine is this machine's own (said so); an engine that does not answer leaves the host
    usable (the process backend needs no engine) and its line says what the docker backend lacks."""
    pytest.importorskip("paramiko", reason="ssh:// needs paramiko: pip install -e '.[docker-ssh]'")
    import yaml

    _ssh_home(tmp_path, remote, monkeypatch)
    cfg = tmp_path / "config.yaml"
    settings = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    settings["hosts"] |= {"far": remote["entry"],
                          "nodock": remote["entry"] | {"docker_host": "tcp://127.0.0.1:1"}}
    cfg.write_text(yaml.safe_dump(settings))
    r = subprocess.run([sys.executable, "-m", "msdbench", "hosts", "check", "--config", str(cfg)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    lines = r.stdout.splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("far "))
    version = engine.version()["Version"]
    assert " ok " in lines[i], out
    assert f"docker engine {version} at {remote['entry']['url']}" in lines[i + 1], out
    assert "this machine's own engine" in lines[i + 1], out
    j = next(i for i, x in enumerate(lines) if x.startswith("nodock "))
    assert " ok " in lines[j], out
    assert "docker: not usable" in lines[j + 1] and "tcp://127.0.0.1:1" in lines[j + 1], out


# -- the workflow with deployment 5 -------------------------------------------------------------

@pytest.mark.slow
def test_workflow_with_deployment_5_on_an_emulated_host(workflow_copy, nothing_left):
    """Snakemake on a tiny matrix with deployment 5 on a netns host: the tables say where the
    client ran, the ratio table has d5/d2 per request type labelled "emulated host", and the
    throughput sweep runs with its clients on that host."""
    import yaml

    from conftest import snakemake

    from test_workflow import TINY

    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["micro"].update(isolations=["isolated"], deployments=[2, 5], payloads=[0])
    config["beps"]["deployments"] = [2, 5]
    config["hosts"] = {"edge1": {"kind": "netns", "rate": "1gbit"}}
    config["deployments"] = {5: {"client_host": "edge1"}}
    config["throughput"]["deployment"] = 5
    (workflow_copy / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workflow_copy, "results/figures/", "results/tables/ratios.csv")
    tables = workflow_copy / "results/tables"
    for suite in ("micro", "beps"):
        t = pd.read_csv(tables / f"{suite}.csv")
        assert set(t["status"]) == {"ok"}
        kinds = dict(zip(t["deployment"], t["client_host_kind"]))
        assert kinds == {2: "local", 5: "netns"}, kinds
    ratios = pd.read_csv(tables / "ratios.csv")
    dep = ratios[ratios["comparison"] == "deployment"]
    assert set(dep["op"]) == {"poll", "create_user", "subscribe", "publish", "unsubscribe",
                              "delete_user"}
    assert set(dep["host"]) == {"emulated host"} and (dep["ratio"] > 0).all()
    sweep = pd.read_csv(tables / "throughput.csv")
    assert len(sweep) and set(sweep[["deployment", "client_host_kind", "status"]].itertuples(
        index=False, name=None)) == {(5, "netns", "ok")}
    raw = next((workflow_copy / "results/raw/micro").rglob("d5/p0.json"))
    hosts = json.loads(raw.read_text())["hosts"]
    assert hosts["edge1"]["link"]["rate"] == "1gbit" and hosts["edge1"]["link"]["qdisc"] == "tbf"


# -- the docker backend with the client's container on another host -----------------------------

def _ip_of(address: str):
    import ipaddress

    return ipaddress.ip_address(address.rsplit(":", 1)[0])


def _crossed_the_link(meta: dict, host: str) -> None:
    """The client's socket ran from the other host's address to this machine's end of its link:
    not loopback, not a docker bridge (the server containers' addresses)."""
    import ipaddress

    link = meta["hosts"][host]["link"]
    sock = meta["placement"]["client_driver"]["socket"]
    peer = _ip_of(sock["peer"])
    assert str(_ip_of(sock["local"])) == meta["hosts"][host]["address"]
    assert str(peer) == link["local_address"] and peer in ipaddress.ip_network(link["subnet"])
    servers = {c["ip"] for d, c in meta["backend_info"]["containers"].items() if d != "client"}
    assert not peer.is_loopback and str(peer) not in servers, (peer, servers)


@pytest.mark.parametrize("platform", ["linux", "specialized"])
def test_docker_micro_cell_with_the_client_container_in_a_namespace(
        tmp_path, nothing_left, no_docker_leftovers, engine, image, platform):
    m = plan(Cell("micro", platform, "docker", "isolated", 5, 512), MICRO | edge(rate="1gbit"))
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", {"image": image["id"]})
    assert meta["status"] == "ok", meta.get("failure")
    ops = pd.read_parquet(tmp_path / "c.parquet")["op"]
    assert (ops == "poll").sum() == 350 and (ops == "echo").sum() > 0  # the echo crossed it too
    _crossed_the_link(meta, "edge1")
    host, info = meta["hosts"]["edge1"], meta["backend_info"]
    assert host["namespace_of"] == f"container msdbench-{info['run_id']}-host-edge1"
    assert host["link"]["qdisc"] == "tbf" and host["link"]["rate"] == "1gbit"
    away = info["client_host"]
    assert away["kind"] == "netns" and away["engine"] == "this machine's"
    assert len(away["entry_published"]) == 2 and all(
        a.startswith(host["link"]["local_address"] + ":") for a in away["entry_published"].values())
    assert info["containers"]["client"]["ip"] == host["address"]


def test_docker_client_container_lives_in_the_hosts_namespace_and_nowhere_else(
        nothing_left, no_docker_leftovers, engine, image):
    """The client's container *is* in the netns host's namespace (same inode, the veth and its tbf
    inside); the entry service is published on the link's local end only; what is not published
    is not reachable from the client (Docker's FORWARD policy)."""
    from msdbench.backends.docker import DockerBackend
    from msdbench.backends.docker_engine import CONTROL_PORT
    from msdbench.backends.docker_hosts import ENTRY_PORT

    m = plan(Cell("micro", "linux", "docker", "isolated", 5, 0), MICRO | edge(rate="50mbit"))
    with DockerBackend(image=image["id"]).up(m) as dep:
        h = dep.hosts["edge1"]
        client = dep.handles["client"].native
        client.reload()
        pid = client.attrs["State"]["Pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{h.netns}").st_ino
        inside = subprocess.run(["ip", "netns", "exec", h.netns, "tc", "qdisc", "show", "dev",
                                 "eth0"], capture_output=True, text=True).stdout
        assert "tbf" in inside and "50Mbit" in inside, inside
        code, out = client.exec_run(["python", "-c", "print(open('/proc/net/dev').read())"])
        devices = {line.split(":")[0].strip() for line in out.decode().splitlines()[2:] if ":" in line}
        assert devices == {"lo", "eth0"}, devices
        poll = dep.handles["poll"].native
        poll.reload()
        bindings = poll.attrs["NetworkSettings"]["Ports"]
        assert {b["HostIp"] for p in (ENTRY_PORT, ENTRY_PORT + 1) for b in bindings[f"{p}/tcp"]} \
            == {h.local_address}
        server_ip = dep.backend.containers["poll"]["ip"]
        probe = ("import socket\ntry:\n    socket.create_connection((%r, %d), timeout=2)\n"
                 "    print('reached')\nexcept OSError as e:\n    print('blocked', e)\n")
        # Not published (its control port): Docker's FORWARD policy drops it. (Docker before 28
        # accepts forwarding to a *published* port at the container's address too; the client
        # is given the link's address, and its one interface is the veth either way.)
        _, direct = client.exec_run(["python", "-c", probe % (server_ip, CONTROL_PORT)])
        assert direct.decode().startswith("blocked"), direct
        at, port = dep.backend.away.outside[f"{poll.name}:{ENTRY_PORT}"].rsplit(":", 1)
        assert at == h.local_address
        _, published = client.exec_run(["python", "-c", probe % (at, int(port))])
        assert published.decode().startswith("reached"), published
        r = dep.run_driver({"driver": "micro", "payload": 0, "requests": 50, "warmup": 0})
        assert len(r["samples"]["poll"]["e2e_ns"]) == 50
    assert not os.path.exists(f"/sys/class/net/{h.link}")


def test_docker_beps_cell_with_the_client_container_in_a_namespace(
        tmp_path, nothing_left, no_docker_leftovers, engine, image):
    m = plan(Cell("beps", "linux", "docker", "tiered", 5), BEPS | edge())
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", {"image": image["id"]})
    assert meta["status"] == "ok", meta.get("driver", {}).get("problems")
    ops = set(pd.read_parquet(tmp_path / "c.parquet")["op"])
    assert {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"} <= ops
    _crossed_the_link(meta, "edge1")


def test_docker_client_container_killed_mid_cell_is_named(
        tmp_path, nothing_left, no_docker_leftovers, engine, image):
    from msdbench.cell import CellFailed

    m = plan(Cell("micro", "linux", "docker", "isolated", 5, 0),
             MICRO | edge() | {"requests": 10_000_000, "warmup": 0, "deadline_s": 120})
    killed = []

    def kill_client(dep):
        def kill():
            time.sleep(1.0)
            dep.handles["client"].native.kill()
            killed.append(dep.handles["client"].native.name)

        threading.Thread(target=kill, daemon=True).start()

    with pytest.raises(CellFailed) as err:
        run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", {"image": image["id"]},
                 on_up=kill_client)
    assert killed
    assert f"container {killed[0]} on host 'edge1' (netns)" in str(err.value), str(err.value)
    assert json.loads((tmp_path / "c.json").read_text())["status"] == "failed"


def _docker_cell_process(tmp_path, image) -> subprocess.Popen:
    cfg = tmp_path / "config.yaml"
    cfg.write_text((ROOT / "config/config.yaml").read_text() + NETNS_CONFIG)
    return subprocess.Popen(
        [sys.executable, "-m", "msdbench", "run", "micro", "--backend", "docker", "--isolation",
         "isolated", "--deployment", "5", "--config", str(cfg), "--requests", "10000000",
         "--warmup", "0", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), MSDBENCH_DOCKER_IMAGE=image["id"]))


def _containers_of(engine, pid) -> list[str]:
    from conftest import objects_of

    return [o for o in objects_of(engine, pid) if o.startswith("container")]


def test_docker_sigterm_mid_cell_removes_containers_and_namespace(
        tmp_path, no_docker_leftovers, engine, image):
    from conftest import objects_of

    proc = _docker_cell_process(tmp_path, image)
    tag = owner_tag(proc.pid)
    # the holder, the poll container and the client's
    _wait_for(lambda: len(_containers_of(engine, proc.pid)) == 3 or proc.poll() is not None, 120)
    _wait_for(lambda: ours(tag)["namespaces"] or proc.poll() is not None)
    time.sleep(2.0)  # mid-measurement
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert ours(tag) == {"namespaces": [], "links": []}
    assert objects_of(engine, proc.pid) == []


def test_docker_clean_removes_what_a_sigkill_left(tmp_path, no_docker_leftovers, engine, image):
    from conftest import objects_of

    proc = _docker_cell_process(tmp_path, image)
    tag = owner_tag(proc.pid)
    _wait_for(lambda: len(_containers_of(engine, proc.pid)) == 3 or proc.poll() is not None, 120)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=30)
    left = ours(tag)
    assert left["namespaces"] and left["links"] and objects_of(engine, proc.pid)
    r = subprocess.run([sys.executable, "-m", "msdbench", "clean"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert left["namespaces"][0] in r.stdout
    assert ours(tag) == {"namespaces": [], "links": []}
    assert objects_of(engine, proc.pid) == []


def _ssh_home(tmp_path, remote, monkeypatch) -> None:
    """A HOME whose ~/.ssh knows the remote host and its key: the SDK's ssh:// transport reads it."""
    d, address = remote["dir"], remote["ns"].address
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/known_hosts").write_text((d / "known_hosts").read_text())
    (home / ".ssh/config").write_text(f"Host {address}\n  IdentityFile {d}/userkey\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_HOST", raising=False)


def test_docker_micro_cell_with_the_client_container_on_an_ssh_hosts_engine(
        tmp_path, nothing_left, no_docker_leftovers, engine, image, remote, monkeypatch):
    pytest.importorskip("paramiko", reason="ssh:// needs paramiko: pip install -e '.[docker-ssh]'")
    _ssh_home(tmp_path, remote, monkeypatch)
    logins = lambda: (remote["dir"] / "sshd.log").read_text().count("Accepted publickey")  # noqa: E731
    before = logins()
    m = plan(Cell("micro", "linux", "docker", "isolated", 5, 0), MICRO | far(remote))
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json",
                    {"image": image["id"], "control_access": "ip"})
    assert meta["status"] == "ok", meta.get("failure")
    away = meta["backend_info"]["client_host"]
    assert away["kind"] == "ssh" and away["engine"] == remote["entry"]["url"]
    assert logins() > before, "the client's container was made through the host's sshd"
    # That host's engine is this machine's own (its sshd shares our filesystem, so the engine's
    # socket), its containers in this machine's network stack: recorded as such. The container's
    # packets here do not cross the namespace link; on a real remote host they cross the wire.
    assert away["same_engine_as_server"] is True
    sock = meta["placement"]["client_driver"]["socket"]
    # the entry service as published on this machine's address facing that host
    assert sock["peer"].split(":")[0] == remote["ns"].local_address
    assert all(a.startswith(remote["ns"].local_address + ":")
               for a in away["entry_published"].values())


def test_clean_kills_a_remote_domain_whose_harness_is_gone(tmp_path, remote):
    """A domain on an ssh host that outlived its harness (no lifeline: its manifest from a file)
    is killed by `msdbench clean --config`; one whose harness lives is kept."""
    import socket

    from msdbench.hosts.ssh import SshHost
    from msdbench.lifetime import owner_label

    dead_pid = subprocess.Popen(["true"])  # its pid: a harness that ended
    dead_pid.wait()
    dead = f"{socket.gethostname()}:{dead_pid.pid}:{int(time.time()) - 5}"
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), MICRO)
    m.save(tmp_path / "m.yaml")
    host = SshHost("far", remote["entry"])
    host.check_spec()
    for owner in (dead, owner_label()):
        start = (f"setsid env PYTHONPATH={ROOT} {sys.executable} -m msdbench.domain --manifest "
                 f"{tmp_path}/m.yaml --domain poll --bind {remote['ns'].address} --owner {owner} "
                 "</dev/null >/dev/null 2>&1 &")
        subprocess.run(host.ssh(["sh", "-c", start]), check=True, timeout=30)
    _wait_for(lambda: len(_remote_domains(remote)) == 2, 30)
    import yaml

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["hosts"]["far"] = remote["entry"]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    dry = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--dry-run", "--config",
                          str(cfg)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "would remove process" in dry.stdout and f"owner {dead}, gone" in dry.stdout, dry
    assert len(_remote_domains(remote)) == 2
    r = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert f"owner {dead}, gone" in r.stdout and f"owner {owner_label()}: still running" in r.stdout
    _wait_for(lambda: len(_remote_domains(remote)) == 1, 10)
    assert owner_label() in _remote_domains(remote)[0]


def test_docker_throughput_sweep_with_the_clients_container_in_a_namespace(
        tmp_path, nothing_left, no_docker_leftovers, engine, image):
    """The throughput study's docker sweeps on deployment 5: the clients' container on the
    emulated host drives the load balancer through its published port."""
    from msdbench.throughput import run_sweep

    settings = {"pinning": "same-core", "workers": 2, "deadline_s": 120,
                "throughput": {"mode": "closed", "clients": [1, 2], "pairs_per_client": 50,
                               "warmup_pairs": 5, "point_deadline_s": 60}}
    m = plan(Cell("throughput", "linux", "docker", "co-located", 5), settings | edge())
    meta = run_sweep(m, tmp_path / "s.parquet", tmp_path / "s.json", {"image": image["id"]},
                     workdir=tmp_path / "w", log=lambda _: None)
    assert meta["status"] == "ok" and [p["status"] for p in meta["points"]] == ["ok", "ok"]
    assert meta["points"][1]["completed"] == 2 * 2 * 50
    (edge_,) = m.edges_from("client")
    published = meta["backend_info"]["client_host"]["entry_published"]
    assert edge_.address in published.values()
    assert edge_.address.split(":")[0] == meta["hosts"]["edge1"]["link"]["local_address"]
