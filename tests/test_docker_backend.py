"""The docker backend (msdbench/backends/docker.py): real cells in real containers, and nothing left behind.

Every test that needs the engine is marked `docker` and skipped, with the reason, when no engine answers.
The session builds (or reuses) the image once, from a copy of the project, so edits made while the tests
run cannot race them; the cells run that image (backend option `image`).
After each test no container, network or volume made by this test process (label msdbench.owner) remains.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml

from msdbench.backends import docker_image as di
from msdbench.backends.base import BackendError
from msdbench.cell import CellFailed, run_cell
from msdbench.planning import Cell, plan

from conftest import copy_project, objects_of, throwaway_sshd

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "tcp://127.0.0.1:9"




# --- fixtures ---------------------------------------------------------------------------------




def opts(image, **more) -> dict:
    return {"image": image["id"], **more}


# --- real cells -------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize("isolation,deployment", [("co-located", 1), ("isolated", 2)])
def test_micro_cell_in_containers(tmp_path, engine, image, no_docker_leftovers, isolation, deployment):
    m = plan(Cell("micro", "linux", "docker", isolation, deployment, 512),
             {"requests": 300, "warmup": 50, "pinning": "same-core"})
    raw, meta_path = tmp_path / "c.parquet", tmp_path / "c.json"
    run_cell(m, raw, meta_path, opts(image), workdir=tmp_path / "work")
    df = pd.read_parquet(raw)
    df = df[df["op"] == "poll"]  # without the cell's TCP echo reference
    assert len(df) == 350 and df["warmup"].sum() == 50 and (df["e2e_ns"] > 0).all()
    on_disk = json.loads(meta_path.read_text())
    assert on_disk["status"] == "ok" and on_disk["cell"]["backend"] == "docker"
    info = on_disk["backend_info"]
    assert info["backend"] == "docker" and info["image"]["id"] == image["id"]
    assert info["engine"]["version"]
    domains = {d.name for d in m.domains}
    assert set(info["containers"]) == domains
    assert info["memory_limit"] == "1g"  # config.DOCKER_MEMORY: no docker.memory given
    for name, c in info["containers"].items():
        assert c["name"] == f"{info['network']}-{name}" and c["cpuset"] == "0" and c["ip"]
        assert c["start_to_ready_s"] > 0 and c["memory_bytes"] == 1 << 30
    # Pinned as asked, inside the containers too; the client ran where the deployment says.
    assert all(p["affinity"] == [0] for p in on_disk["placement"].values())
    client_domain = m.client_domain().name
    assert client_domain == ("server" if deployment == 1 else "client") and client_domain in info["containers"]
    # Services reach each other by container name, never by a fixed address.
    edge = on_disk["manifest"]["edges"][0]
    poll_domain = m.service("poll").domain
    assert edge["address"].startswith(info["containers"][poll_domain]["name"] + ":")


# Run inside a live domain container: what the process there really has.
INSIDE = (
    "import os, errno\n"
    "caps = {l.split(':')[0]: int(l.split()[1], 16) for l in open('/proc/self/status')"
    " if l.startswith('Cap')}\n"
    "nnp = [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0]\n"
    "try:\n    open('/usr/msdbench-probe', 'w'); root = 'writable'\n"
    "except OSError as e:\n    root = errno.errorcode[e.errno]\n"
    "print(os.getuid(), os.getgid(), caps['CapEff'], caps['CapBnd'], nnp, root)\n"
)


@pytest.mark.docker
def test_running_containers_are_confined(engine, image, no_docker_leftovers):
    """What the engine says about each running domain container, and what a process inside it
    can do: no capabilities, no new privileges, a read-only root, uid 10001, the domain's CPUs."""
    from msdbench.backends.docker import DockerBackend

    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), {"requests": 10, "pinning": "same-core"})
    with DockerBackend(image=image["id"]).up(m) as dep:
        assert set(dep.handles) == {"poll", "client"}
        for name, h in dep.handles.items():
            c = engine.containers.get(h.native.id)
            assert c.status == "running"
            host = c.attrs["HostConfig"]
            assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
            assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
            assert any(o.startswith("no-new-privileges") for o in host["SecurityOpt"])
            assert host["Init"] is True and host["CpusetCpus"] == "0"
            assert c.attrs["Config"]["User"].split(":")[0] == "10001"
            code, out = c.exec_run(["python", "-c", INSIDE])
            assert code == 0, out
            uid, gid, cap_eff, cap_bnd, nnp, root = out.decode().split()
            assert (uid, gid) == ("10001", "10001")
            assert (cap_eff, cap_bnd, nnp) == ("0", "0", "1"), out
            assert root == "EROFS", f"the root file system of {name} is {root}"
        # and confined as they are, they serve: 10 timed calls reach poll
        dep.run_driver({"driver": "micro", "payload": 0, "requests": 10, "warmup": 0, "deadline_s": 60})
        assert dep.counters("poll")["calls"] == 10


@pytest.mark.docker
def test_beps_tiered_d2_in_containers(tmp_path, engine, image, no_docker_leftovers):
    workload = {"users": 60, "active_users": 10, "follows_per_user": 3, "publishes_per_user": 3,
                "name_len": 10, "message_len": 100}
    m = plan(Cell("beps", "linux", "docker", "tiered", 2),
             {"workers": 2, "workload": workload, "pinning": "same-core"})
    meta = run_cell(m, tmp_path / "b.parquet", tmp_path / "b.json", opts(image))
    assert meta["status"] == "ok", meta.get("driver")
    assert meta["driver"]["correct"] and meta["driver"]["problem_count"] == 0
    assert set(meta["backend_info"]["containers"]) == {"front", "data", "read", "client"}
    df = pd.read_parquet(tmp_path / "b.parquet")
    assert set(df["op"]) >= {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"}


@pytest.mark.docker
def test_shm_between_containers(tmp_path, engine, image, no_docker_leftovers):
    """Platform `specialized`, isolated: the client calls poll over shared memory across containers
    (set-up socket in the cell's shared tmpfs volume, memory passed as memfd descriptors)."""
    m = plan(Cell("micro", "specialized", "docker", "isolated", 2, 4096),
             {"requests": 200, "warmup": 20, "pinning": "same-core"})
    assert m.edges[0].transport == "shm"
    meta = run_cell(m, tmp_path / "s.parquet", tmp_path / "s.json", opts(image))
    assert meta["status"] == "ok"
    assert meta["manifest"]["edges"][0]["address"].startswith("/run/msdbench-ipc/")
    assert (pd.read_parquet(tmp_path / "s.parquet")["op"] == "poll").sum() == 220


# --- failures: always torn down ----------------------------------------------------------------


@pytest.mark.docker
def test_container_killed_mid_cell_is_named_and_leaves_nothing(tmp_path, engine, image, no_docker_leftovers):
    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0),
             {"requests": 10_000_000, "warmup": 0, "deadline_s": 120, "pinning": "same-core"})
    raw, meta = tmp_path / "c.parquet", tmp_path / "c.json"
    killed = []

    def kill_poll_while_calling(dep):  # on_up: the deployment is up, the driver about to call
        def kill():
            time.sleep(1.0)
            dep.handle_of("poll").native.kill()  # SIGKILL, through the engine
            killed.append(dep.handle_of("poll").native.name)

        threading.Thread(target=kill, daemon=True).start()

    with pytest.raises(CellFailed) as err:
        run_cell(m, raw, meta, opts(image), on_up=kill_poll_while_calling)
    assert killed, "the poll container was never seen"
    # The message and the record name the service, its container and how it ended (SIGKILL: 137).
    assert f"domain poll (services poll; host local, container {killed[0]} on " in str(err.value)
    assert "exit code 137 (SIGKILL)" in str(err.value) and "last lines of poll's log" in str(err.value)
    record = json.loads(meta.read_text())
    assert record["status"] == "failed"
    (culprit,) = record["failure"]["culprits"]
    assert culprit["domain"] == "poll" and "SIGKILL" in culprit["status"]
    assert pd.read_parquet(raw).empty  # no samples of a failed cell


@pytest.mark.docker
def test_hung_service_hits_the_deadline_and_is_torn_down(engine, image, no_docker_leftovers):
    from msdbench.backends.docker import DockerBackend

    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), {"requests": 100, "warmup": 0})
    with DockerBackend(image=image["id"]).up(m) as dep:
        assert len(objects_of(engine)) == 3  # two containers and the network
        dep.set_fault("poll", "hang", 1)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="deadline of 2 s expired"):
            dep.run_driver({"driver": "micro", "payload": 0, "requests": 10, "warmup": 0, "deadline_s": 2})
        assert time.monotonic() - t0 < 30


@pytest.mark.docker
def test_domain_that_dies_at_start_is_reported_and_removed(engine, image, no_docker_leftovers):
    from msdbench.backends.docker import DockerBackend

    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), {"requests": 10, "warmup": 0})
    m.domains[0].cpus = [4096]  # a CPU that no engine has: the container cannot start
    with pytest.raises(BackendError, match="poll"):
        DockerBackend(image=image["id"]).up(m)


@pytest.mark.docker
def test_sigterm_mid_cell_tears_down(tmp_path, engine, image, no_docker_leftovers):
    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0),
             {"requests": 10_000_000, "warmup": 0, "deadline_s": 600})
    m.save(tmp_path / "m.yaml")
    raw, meta = tmp_path / "c.parquet", tmp_path / "c.json"
    env = dict(os.environ, MSDBENCH_DOCKER_IMAGE=image["id"])
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "measure", str(tmp_path / "m.yaml"),
                             "--raw", str(raw), "--meta", str(meta)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len([o for o in objects_of(engine, proc.pid) if o.startswith("container")]) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the cell never came up"
            time.sleep(0.1)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "torn down" in err
    assert objects_of(engine, proc.pid) == []
    assert not raw.exists() and not meta.exists()


@pytest.mark.docker
def test_clean_removes_a_killed_harness_leftovers_only(tmp_path, engine, image, no_docker_leftovers, caplog):
    """SIGKILL leaves the containers (nothing can run in the dying harness); the next bring-up warns,
    `msdbench clean` removes them, and keeps a run whose owner still lives."""
    from msdbench.backends.docker import DockerBackend

    script = textwrap.dedent(f"""
        import sys, time
        from msdbench.backends.docker import DockerBackend
        from msdbench.planning import Cell, plan
        m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), {{"requests": 10}})
        dep = DockerBackend(image={image["id"]!r}).up(m)
        print("UP", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "UP"
    finally:
        proc.kill()
        proc.wait()
    orphans = objects_of(engine, proc.pid)
    assert len(orphans) == 3, orphans

    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), {"requests": 10})
    with caplog.at_level("WARNING", logger="msdbench.backends.docker"):
        with DockerBackend(image=image["id"]).up(m) as live:
            assert "msdbench clean" in caplog.text
            crashed = [r for r in live.backend.leftovers["orphaned"]]
            assert crashed, live.backend.leftovers
            dry = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--dry-run"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
            assert dry.returncode == 0 and "would remove" in dry.stdout, dry
            assert objects_of(engine, proc.pid) == orphans
            done = subprocess.run([sys.executable, "-m", "msdbench", "clean"], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done
            assert f"kept    run {live.backend.run_id}" in done.stdout
            assert objects_of(engine, proc.pid) == []
            assert len(objects_of(engine)) == 3, "the live run was kept"
            live.run_driver({"driver": "micro", "payload": 0, "requests": 5, "warmup": 0,
                             "deadline_s": 60})
            assert live.counters("poll")["calls"] == 5, "the kept run still answers"


def _listening(container) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket inside a running container (/proc/net/tcp)."""
    code, out = container.exec_run(["python", "-c", "print(open('/proc/net/tcp').read())"])
    assert code == 0, out
    found = set()
    for line in out.decode().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
            addr, port = fields[1].split(":")
            found.add((socket.inet_ntoa(bytes.fromhex(addr)[::-1]), int(port, 16)))
    return found


@pytest.mark.docker
def test_up_in_containers_memory_limit_and_listen_address(tmp_path, engine, image):
    """`msdbench up` with the docker backend: a stock client calls the listed address from the host;
    each container has the configured memory limit and listens on its cell-network address only
    (both read back from the running container); SIGTERM removes everything."""
    import thriftpy2
    from thriftpy2.rpc import make_client

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text()) | {"docker": {"memory": "256m"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    addresses = tmp_path / "a.json"
    proc = subprocess.Popen([sys.executable, "-m", "msdbench", "up", "micro", "--backend", "docker",
                             "--isolation", "isolated", "--deployment", "2", "--config",
                             str(tmp_path / "c.yaml"), "--addresses", str(addresses)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, MSDBENCH_DOCKER_IMAGE=image["id"], TMPDIR=str(tmp_path)))
    try:
        deadline = time.monotonic() + 180
        while not addresses.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        found = json.loads(addresses.read_text())
        host, _, port = found["poll"].rpartition(":")
        poll = thriftpy2.load(found["wire"]["services"]["poll"]["idl"], module_name="up_poll_thrift")
        client = make_client(poll.Poll, host, int(port), timeout=10_000)
        assert client.poll(b"from the host") > 0
        client.close()
        names = [o.split()[1] for o in objects_of(engine, proc.pid) if o.startswith("container")]
        assert len(names) == 2  # poll's domain and the (idle) client's
        for name in names:
            c = engine.containers.get(name)
            assert c.attrs["HostConfig"]["Memory"] == 256 << 20
            assert c.attrs["HostConfig"]["MemorySwap"] == 256 << 20  # no swap beyond it
            (ip,) = [n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values()]
            listening = {(a, p) for a, p in _listening(c) if a != "127.0.0.11"}  # the engine's DNS
            assert listening and {a for a, _ in listening} == {ip}, listening
            if name.endswith("-poll"):
                assert (ip, int(port)) in listening and ip == host
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "torn down" in out, err
    assert objects_of(engine, proc.pid) == []
    assert not addresses.exists()


# --- where the engine is ---------------------------------------------------------------------


def test_unreachable_engine_skips_the_cell_naming_the_host(tmp_path):
    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0), {"requests": 10})
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json", {"docker_host": UNREACHABLE})
    assert meta["status"] == "skipped" and UNREACHABLE in meta["reason"]
    assert json.loads((tmp_path / "c.json").read_text())["reason"] == meta["reason"]
    from msdbench.backends.docker import DockerBackend

    with pytest.raises(BackendError, match=UNREACHABLE):
        DockerBackend(docker_host=UNREACHABLE).up(m)


def test_cli_run_and_stamp_with_an_unreachable_engine(tmp_path):
    stamp = tmp_path / "docker.json"
    assert di.main(["--docker-host", UNREACHABLE, "--stamp", str(stamp)]) == 0
    assert UNREACHABLE in json.loads(stamp.read_text())["unavailable"]
    out = subprocess.run([sys.executable, "-m", "msdbench", "run", "micro", "--backend", "docker",
                          "--isolation", "isolated", "--deployment", "2", "--docker-host", UNREACHABLE,
                          "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped" in out.stdout and UNREACHABLE in out.stdout
    clean = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--docker-host", UNREACHABLE],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 2 and UNREACHABLE in clean.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """An sshd on a free port of 127.0.0.1 with a throwaway host key and client key (root login by key
    only), and a HOME whose ~/.ssh knows them: the user's own ~/.ssh is never touched."""
    d = tmp_path / "ssh"
    port = _free_port()
    sshd_bin = throwaway_sshd(d, "127.0.0.1", port)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=open(d / "sshd.log", "wb"))
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "sshd.log").read_text()
            time.sleep(0.05)
    home = d / "home"
    (home / ".ssh").mkdir(parents=True)
    hostkey = " ".join((d / "hostkey.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {hostkey}\n")
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {d}/userkey\n")
    # For the ssh binary (MSDBENCH_DOCKER_SSH=openssh): it reads the passwd home, not $HOME, so a
    # wrapper first on PATH gives it this config.
    (d / "ssh_config").write_text(f"Host *\n  IdentityFile {d}/userkey\n  IdentitiesOnly yes\n"
                                  f"  UserKnownHostsFile {home}/.ssh/known_hosts\n  BatchMode yes\n")
    (d / "bin").mkdir()
    (d / "bin" / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {d}/ssh_config "$@"\n')
    (d / "bin" / "ssh").chmod(0o755)
    yield {"url": f"ssh://root@127.0.0.1:{port}", "home": home, "bin": d / "bin"}
    proc.terminate()
    proc.wait(10)


@pytest.mark.docker
def test_remote_engine_over_ssh(tmp_path, engine, image, sshd, monkeypatch, no_docker_leftovers):
    pytest.importorskip("paramiko", reason="ssh:// needs paramiko: pip install -e '.[docker-ssh]'")
    from msdbench.backends.docker import DockerBackend

    monkeypatch.setenv("HOME", str(sshd["home"]))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert DockerBackend(docker_host=sshd["url"]).unavailable_reason() is None
    m = plan(Cell("micro", "linux", "docker", "isolated", 2, 0),
             {"requests": 200, "warmup": 20, "pinning": "same-core"})
    for access in ("ip", "published"):  # published: how a harness reaches an engine on another host
        meta = run_cell(m, tmp_path / f"{access}.parquet", tmp_path / f"{access}.json",
                        opts(image, docker_host=sshd["url"], control_access=access))
        assert meta["status"] == "ok"
        info = meta["backend_info"]
        assert info["engine"]["host"] == sshd["url"] and info["control_access"] == access
        if access == "published":
            assert all(c["control"].startswith("127.0.0.1:") and c["control"] != "127.0.0.1:7000"
                       for c in info["containers"].values())
    # The ssh binary instead of paramiko: same engine (a new SSH login per request, so only a ping).
    monkeypatch.setenv("MSDBENCH_DOCKER_SSH", "openssh")
    monkeypatch.setenv("PATH", f"{sshd['bin']}:{os.environ['PATH']}")
    assert DockerBackend(docker_host=sshd["url"]).unavailable_reason() is None
    monkeypatch.setenv("HOME", str(tmp_path))  # no key known: a clear reason naming the host
    monkeypatch.setenv("PATH", os.environ["PATH"].split(":", 1)[1])
    monkeypatch.delenv("MSDBENCH_DOCKER_SSH")
    reason = DockerBackend(docker_host=sshd["url"]).unavailable_reason()
    assert reason and sshd["url"] in reason


# --- the workflow ------------------------------------------------------------------------------

TINY = {
    "platforms": ["linux"],
    "backends": ["process", "docker"],
    "pinning": "same-core",
    "deadline_s": 120,
    "docker_host": None,
    "micro": {"isolations": ["isolated"], "deployments": [2], "payloads": [0],
              "payload_mode": "binary", "requests": 50, "warmup": 10},
    "beps": {"isolations": ["tiered"], "deployments": [2], "workers": 2,
             "workload": {"users": 12, "active_users": 4, "follows_per_user": 2,
                          "publishes_per_user": 2, "name_len": 10, "message_len": 280}},
}


def _workflow(wd: Path, config: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    import yaml

    from conftest import snakemake

    (wd / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(wd, "results/figures/")
    for name in ("micro.png", "beps.png"):
        assert (wd / "results/figures" / name).stat().st_size > 1000
    return pd.read_csv(wd / "results/tables/micro.csv"), pd.read_csv(wd / "results/tables/beps.csv")


@pytest.mark.slow
def test_workflow_with_an_unreachable_engine_skips_docker_cells(workflow_copy):
    micro, beps = _workflow(workflow_copy, {**TINY, "docker_host": UNREACHABLE})
    stamp = json.loads((workflow_copy / "results/images/docker.json").read_text())
    assert UNREACHABLE in stamp["unavailable"]
    for table in (micro, beps):
        by_backend = table.groupby("backend")["status"].agg(set).to_dict()
        assert by_backend == {"process": {"ok"}, "docker": {"skipped"}}, by_backend


@pytest.mark.slow
@pytest.mark.docker
def test_workflow_with_docker(workflow_copy, engine, no_docker_leftovers):
    micro, beps = _workflow(workflow_copy, TINY)
    assert set(micro["backend"]) == {"process", "docker"} and set(micro["status"]) == {"ok"}
    assert set(beps["backend"]) == {"process", "docker"} and set(beps["status"]) == {"ok"}
    stamp = json.loads((workflow_copy / "results/images/docker.json").read_text())
    meta = json.loads((workflow_copy / "results/raw/micro/linux/docker/isolated/d2/p0.json").read_text())
    assert meta["backend_info"]["image"]["id"] == stamp["id"]


# --- podman's Docker-compatible API -----------------------------------------------------------

PODMAN_PARTS = {"podman": "podman", "/usr/libexec/podman/catatonit": "catatonit",
                "/usr/lib/podman/netavark": "netavark", "/usr/lib/podman/aardvark-dns": "aardvark-dns",
                "/usr/bin/fuse-overlayfs": "fuse-overlayfs"}


@contextmanager
def podman_service(tmp_path, root: Path, private: bool = False):
    """`podman system service` on a socket of its own, configured as these machines need (runc,
    cgroupfs, netavark for name resolution, explicit ulimits), its storage under `root`; yields
    the engine URL and the environment podman commands need to see the same storage. A private
    storage is removed afterwards (podman leaves its overlay directory mounted)."""
    missing = [pkg for path, pkg in PODMAN_PARTS.items() if not (shutil.which(path) or Path(path).exists())]
    if missing:
        pytest.skip(f"podman test needs: apt-get install {' '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("rootful podman: needs root")
    (root / "networks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "containers.conf").write_text(textwrap.dedent(f"""\
        [containers]
        default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
        [engine]
        runtime = "runc"
        cgroup_manager = "cgroupfs"
        events_logger = "file"
        tmp_dir = "{root}/libpod-tmp"
        [network]
        network_backend = "netavark"
        network_config_dir = "{root}/networks"
        """))
    (tmp_path / "storage.conf").write_text(textwrap.dedent(f"""\
        [storage]
        driver = "overlay"
        runroot = "{root}/run"
        graphroot = "{root}/graph"
        [storage.options.overlay]
        mount_program = "/usr/bin/fuse-overlayfs"
        """))
    env = dict(os.environ, CONTAINERS_CONF=str(tmp_path / "containers.conf"),
               CONTAINERS_STORAGE_CONF=str(tmp_path / "storage.conf"))
    sock = tmp_path / "podman.sock"
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "podman.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "podman.log").read_text()
            time.sleep(0.1)
        yield f"unix://{sock}", env
    finally:
        proc.terminate()
        proc.wait(30)
        if private:
            overlay = str(root / "graph/overlay")  # a bind mount: os.path.ismount cannot tell
            if any(line.split()[1] == overlay for line in Path("/proc/self/mounts").read_text().splitlines()):
                subprocess.run(["umount", overlay], check=True)
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def podman(tmp_path, image):
    """A podman engine with the service image loaded (docker save | podman load), its storage kept
    in the msdbench cache so the image is loaded once."""
    root = Path(os.environ.get("MSDBENCH_CACHE") or Path.home() / ".cache/msdbench") / "podman"
    with podman_service(tmp_path, root) as (url, env):
        tag = f"localhost/{image['tag']}"
        have = subprocess.run(["podman", "image", "exists", tag], env=env)
        if have.returncode != 0:
            save = subprocess.Popen(["docker", "save", image["tag"]], stdout=subprocess.PIPE)
            subprocess.run(["podman", "load"], stdin=save.stdout, env=env, check=True, capture_output=True)
            assert save.wait() == 0
        yield {"url": url, "image": tag}


@pytest.mark.docker
def test_podman_engine(tmp_path, podman):
    from msdbench.backends.docker import DockerBackend

    client = di.connect(podman["url"])
    try:
        for platform in ("linux", "specialized"):  # thrift-tcp by container name; shm across containers
            m = plan(Cell("micro", platform, "docker", "isolated", 2, 512),
                     {"requests": 200, "warmup": 20, "pinning": "same-core"})
            meta = run_cell(m, tmp_path / f"{platform}.parquet", tmp_path / f"{platform}.json",
                            {"docker_host": podman["url"], "image": podman["image"]})
            assert meta["status"] == "ok" and meta["backend_info"]["engine"]["host"] == podman["url"]
            assert objects_of(client) == []
        assert DockerBackend(docker_host=podman["url"]).unavailable_reason() is None
    finally:
        client.close()


@pytest.mark.docker
def test_clean_all_on_an_engine_of_its_own(tmp_path):
    """`msdbench clean` and `clean --all` against a podman engine this test starts with empty
    storage of its own, so `--all` can only ever meet what the test made: a live run (owned by
    this test process), a crashed run (its owner is dead), another machine's run, and one
    container that is not msdbench's at all."""
    import io
    import tarfile

    from msdbench.backends.docker import LABEL, OWNER_LABEL, RUN_LABEL
    from msdbench.lifetime import owner_label

    with podman_service(tmp_path, tmp_path / "storage", private=True) as (url, env):
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:  # a one-file image: enough to create from
            info = tarfile.TarInfo("marker")
            t.addfile(info, io.BytesIO(b""))
        subprocess.run(["podman", "import", "-", "localhost/msdbench-clean-probe"], input=tar.getvalue(),
                       env=env, check=True, capture_output=True)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        owners = {"live": owner_label(), "crashed": f"{socket.gethostname()}:{dead.pid}:1",
                  "foreign": "elsewhere:1234:1"}
        client = di.connect(url)
        try:
            for run, owner in owners.items():
                labels = {LABEL: "1", RUN_LABEL: f"probe-{run}", OWNER_LABEL: owner}
                client.networks.create(f"msdbench-probe-{run}", labels=labels)
                client.volumes.create(f"msdbench-probe-{run}", labels=labels)
                client.containers.create("localhost/msdbench-clean-probe", ["/marker"],
                                         name=f"msdbench-probe-{run}-server", labels=labels)
            client.containers.create("localhost/msdbench-clean-probe", ["/marker"], name="not-ours")

            def clean(*args):
                r = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--docker-host", url, *args],
                                   cwd=ROOT, capture_output=True, text=True, timeout=120)
                assert r.returncode == 0, r.stderr
                return r.stdout

            def runs_left():
                return sorted({_labels_of_any(o).get(RUN_LABEL) for kind in ("containers", "networks", "volumes")
                               for o in getattr(client, kind).list(**({"all": True} if kind == "containers" else {}))
                               if _labels_of_any(o).get(RUN_LABEL)})

            out = clean()
            assert "removed run probe-crashed" in out and "kept    run probe-live" in out
            assert "kept    run probe-foreign" in out
            assert runs_left() == ["probe-foreign", "probe-live"]
            out = clean("--all", "--dry-run")
            assert "would remove run probe-live" in out and "would remove run probe-foreign" in out
            assert runs_left() == ["probe-foreign", "probe-live"]
            out = clean("--all")
            assert "removed run probe-live" in out and "removed run probe-foreign" in out
            assert runs_left() == []
            assert [c.name for c in client.containers.list(all=True)] == ["not-ours"]
            assert "no msdbench containers" in clean("--all")
        finally:
            client.close()


def _labels_of_any(obj) -> dict:
    from msdbench.backends.docker import _labels_of

    return _labels_of(obj) or {}


@pytest.mark.docker
@pytest.mark.parametrize("suite", ["micro", "beps"])
def test_hostile_input_against_services_in_containers(engine, image, suite):
    """The wire probes of tests/test_wire_hostile.py against poll and the load balancer in their own
    containers: refused, the service keeps answering, its memory stays bounded, one log line each
    naming the peer as the container sees it (the cell network's gateway)."""
    from msdbench.backends.docker import DockerBackend
    from test_wire_hostile import WIRE, check_probes

    settings = {"workers": 2, "wire": WIRE} if suite == "beps" else {"wire": WIRE}
    m = plan(Cell(suite, "linux", "docker", "isolated", 2, 0 if suite == "micro" else None), settings)
    with DockerBackend(image=image["id"]).up(m) as dep:
        (edge,) = dep.manifest.edges_from("client")
        c = engine.containers.get(dep.handle_of(edge.callee).native.id)
        (net,) = c.attrs["NetworkSettings"]["Networks"].values()
        # services name each other by container name; from this machine, the container's address
        edge = dataclasses.replace(edge, address=f"{net['IPAddress']}:{edge.address.rsplit(':', 1)[1]}")
        check_probes(suite, dep, edge, peer=net["Gateway"])
        assert engine.containers.get(c.id).status == "running"


def test_clean_images_prunes_stale_images_and_keeps_the_current_one(engine, image):
    """Each code change builds a new service image; `clean --images` removes the stale ones and keeps
    this checkout's. The stale image is the test's own (an empty import labelled as msdbench's), so
    that the prune touches nothing else on a shared engine."""
    import io
    import tarfile
    import uuid

    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    stale = f"msdbench-svc:stale-{uuid.uuid4().hex[:8]}"
    repo, tag = stale.split(":")
    engine.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                                      changes=["LABEL msdbench=1 msdbench.role=service"])
    try:
        said: list[str] = []
        mine = lambda t: t in (stale, image["tag"])  # noqa: E731
        assert di.prune_images(None, {image["tag"]}, dry_run=True, out=said.append, match=mine) == []
        assert said == [f"would remove image {stale} (0 MiB)"], said
        assert di.prune_images(None, {image["tag"]}, out=said.append, match=mine) == [stale]
        assert not engine.images.list(name=stale), "the stale image is gone"
        assert engine.images.get(image["tag"]), "this checkout's image is kept"
    finally:
        for img in engine.images.list(name=stale):
            engine.images.remove(img.id, force=True)

    cli = subprocess.run([sys.executable, "-m", "msdbench", "clean", "--images", "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli
