"""Shared fixtures: every test that starts services checks that none outlives it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tiers that must run, not skip: MSDBENCH_REQUIRE=docker,hosts,... names pytest marks or test
# modules (tests/test_hosts.py is `hosts`); MSDBENCH_REQUIRE_DOCKER=1 adds `docker`. CI sets them
# (.ci/run). A test of such a tier that skips (no engine, no root, a missing package, ...) fails
# instead, with the skip's reason, so a green run means the tier really ran.
REQUIRED = {m for m in os.environ.get("MSDBENCH_REQUIRE", "").replace(" ", "").split(",") if m}
if os.environ.get("MSDBENCH_REQUIRE_DOCKER", "") not in ("", "0"):
    REQUIRED.add("docker")


def pytest_collection_modifyitems(config, items):
    for item in items:  # whatever talks to the engine is a docker test, marked or not
        if "engine" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    module = Path(str(item.fspath)).stem.removeprefix("test_")
    marks = ({m.name for m in item.iter_markers()} | {module}) & REQUIRED
    if rep.skipped and marks and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (f"skipped, but MSDBENCH_REQUIRE asks for the {', '.join(sorted(marks))} "
                        f"tier to run: {reason}")


def domain_processes() -> list[psutil.Process]:
    """msdbench domain processes started by this test session (children of this process)."""
    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            if "msdbench.domain" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture
def no_leftovers():
    """Fails the test if any domain process it started is still alive afterwards."""
    yield
    deadline = time.monotonic() + 5
    while domain_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = domain_processes()
    assert not left, f"domain processes left running: {[p.pid for p in left]}"


@pytest.fixture
def workflow_copy(tmp_path):
    """A copy of the workflow (Snakefile, rules, config, profile) in a scratch directory, so that a
    test's snakemake run writes its own results/ and .snakemake/."""
    # The package is copied too (and put first on PYTHONPATH by `snakemake()`), so that the run
    # measures a fixed snapshot of the code even while the working tree changes.
    for name in ("Snakefile", "workflow", "profiles", "config", "pyproject.toml", "envs",
                 "msdbench"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, tmp_path / name)
    # The schema link points into the package; the copy must point at the real one.
    link = tmp_path / "workflow/schemas/config.schema.yaml"
    if link.is_symlink():
        link.unlink()
        shutil.copy2(ROOT / "msdbench/schemas/config.schema.yaml", link)
    return tmp_path


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PYTHONPATH=str(workdir)))
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


def copy_project(dest: Path) -> Path:
    """What a container image is built from (pyproject, setup.py, README, the package), copied, so
    that edits made while a test runs cannot race its build."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "msdbench", dest / "msdbench",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="session")
def engine():
    """A client of the Docker Engine; the test is skipped, with the reason, where none answers."""
    from msdbench.backends import docker_image as di

    try:
        client = di.connect()
    except di.DockerUnavailable as exc:
        pytest.skip(f"no reachable Docker Engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def image(engine, tmp_path_factory):
    """The service image of a snapshot of the project, built once per session (reused when present)."""
    from msdbench.backends import docker_image as di

    proj = copy_project(tmp_path_factory.mktemp("proj") / "msdbench-project")
    return di.ensure_image(proj, log=lambda msg: print(f"[image] {msg}", file=sys.stderr))


def objects_of(client, owner_pid: int | None = None) -> list[str]:
    """The containers, networks and volumes (names) of runs started by owner_pid on this machine."""
    import socket

    from msdbench.backends.docker import OWNER_LABEL, _labels_of, _name_of, _objects

    prefix = f"{socket.gethostname()}:{owner_pid or os.getpid()}:"
    return sorted(f"{kind[:-1]} {_name_of(o)}" for kind, objs in _objects(client).items() for o in objs
                  if (_labels_of(o).get(OWNER_LABEL) or "").startswith(prefix))


@pytest.fixture
def no_docker_leftovers(engine):
    yield
    left = objects_of(engine)
    assert not left, f"left behind: {left}"


def throwaway_sshd(d: Path, address: str | None, port: int) -> str:
    """Keys (host, user) and an sshd_config in `d` for a test's own sshd: root login by this key
    only, on `port` of `address` (None: every address it has). Returns the sshd binary; skips
    without openssh-server."""
    import textwrap

    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists() or not shutil.which("ssh-keygen"):
        pytest.skip("needs openssh-server (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the throwaway sshd logs in as root: needs root")
    d.mkdir(parents=True, exist_ok=True)
    for key in ("hostkey", "userkey"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress {address or "0.0.0.0"}
        HostKey {d}/hostkey
        AuthorizedKeysFile {d}/userkey.pub
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        PidFile {d}/sshd.pid
        """))
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    return sshd_bin
