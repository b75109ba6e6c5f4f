"""The registry-free container image (msdbench/backends/docker_image.py).

The tag tests need no engine. The `docker` tests build for real: the base image (debootstrap, about a
minute, needs root) once per machine, kept by tag across runs; the service image when the project's
content changed. They work on a copy of the project, so edits made while they run cannot race them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from msdbench.backends import docker_image as di

from conftest import copy_project

ROOT = Path(__file__).resolve().parents[1]
CHECK = (
    "import os, msdbench, thriftpy2, numpy; "
    "from thriftpy2.protocol.cybin import TCyBinaryProtocol; "
    "from msdbench.transports import codec; "
    "print(thriftpy2.__version__, os.getuid(), os.getgid(), codec.COMPILED)"
)




def run_in(client, image: str, cmd: list[str], timeout: int = 120) -> tuple[int, str]:
    """Run cmd in a fresh container the way the docker backend will (init, read-only root), then remove it."""
    container = client.containers.create(
        image, cmd, init=True, read_only=True, tmpfs={"/tmp": "rw,size=16m"}, network_disabled=True
    )
    try:
        container.start()
        code = container.wait(timeout=timeout)["StatusCode"]
        return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


# --- no engine needed -----------------------------------------------------------------------


def test_tags_follow_content_not_mtime_or_location(tmp_path):
    proj = copy_project(tmp_path / "a")
    first = di.image_tags(proj)
    assert first["tag"].startswith("msdbench-svc:") and first["base_tag"].startswith("msdbench-base:")
    assert di.image_tags(copy_project(tmp_path / "b")) == first  # where the project lives does not count

    init = proj / "msdbench" / "__init__.py"
    os.utime(init, (1, 1))  # touched: same content, same tag
    (proj / "msdbench" / "__pycache__").mkdir(exist_ok=True)
    (proj / "msdbench" / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"x")
    assert di.image_tags(proj)["tag"] == first["tag"]

    (proj / "msdbench" / "_new_module.py").write_text("")  # a new (even empty) file: new tag
    added = di.image_tags(proj)
    assert added["tag"] != first["tag"] and added["base_tag"] == first["base_tag"]

    init.write_text(init.read_text() + "\n# changed\n")  # changed content: new tag again
    assert di.image_tags(proj)["tag"] not in {first["tag"], added["tag"]}


def test_requirements_leave_host_only_packages_out_unless_imported(tmp_path):
    proj = copy_project(tmp_path / "p")
    reqs = {di._req_name(r) for r in di.container_requirements(proj)}
    assert {"thriftpy2", "numpy", "pyyaml", "psutil", "cython", "jsonschema"} <= reqs
    assert not reqs & {"snakemake", "matplotlib", "docker", "pyarrow"}

    # A module that runs in containers and imports a host-only package brings that package in.
    (proj / "msdbench" / "drivers" / "_uses_pyarrow.py").write_text("import pyarrow\n")
    assert "pyarrow" in {di._req_name(r) for r in di.container_requirements(proj)}


def test_unreachable_engine_names_the_host():
    with pytest.raises(di.DockerUnavailable, match=r"unix:///nonexistent/docker\.sock"):
        di.connect("unix:///nonexistent/docker.sock")
    with pytest.raises(di.DockerUnavailable, match=r"tcp://127\.0\.0\.1:9"):
        di.ensure_image(ROOT, docker_host="tcp://127.0.0.1:9")


def test_cli_reports_an_unreachable_engine(capsys, tmp_path):
    """For the workflow, an unreachable engine is a stamp that says so (the docker cells are then
    recorded as skipped); by hand, without --stamp, it is an error naming the host."""
    stamp = tmp_path / "stamp.json"
    assert di.main(["--docker-host", "unix:///nonexistent/docker.sock", "--stamp", str(stamp)]) == 0
    assert "nonexistent" in json.loads(stamp.read_text())["unavailable"]
    capsys.readouterr()
    assert di.main(["--docker-host", "unix:///nonexistent/docker.sock"]) == 2
    assert "nonexistent" in capsys.readouterr().err


# --- with the Docker Engine -----------------------------------------------------------------




@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("proj") / "msdbench-project")


@pytest.mark.docker
def test_image_builds_runs_and_is_cached(engine, project, tmp_path, capsys):
    info = di.ensure_image(project)
    assert info["tag"] == di.image_tags(project)["tag"]
    image = engine.images.get(info["tag"])
    assert image.id == info["id"]
    assert image.labels.get("msdbench") == "1" and engine.images.get(info["base_tag"]).labels.get("msdbench") == "1"
    assert image.attrs["Config"]["User"] == di.IMAGE_USER

    code, out = run_in(engine, info["tag"], ["python", "-c", CHECK])
    assert code == 0, out
    version, uid, gid, compiled = out.split()
    assert version[0].isdigit() and (uid, gid) == ("10001", "10001")
    assert compiled == "True"  # the project's wheel carries the compiled wire path
    assert engine.containers.list(all=True, filters={"ancestor": info["id"]}) == []  # nothing left behind

    again = di.ensure_image(project)
    assert again["cached"] is True and again["id"] == info["id"] and again["tag"] == info["tag"]
    assert again["build_seconds"] < 30

    stamp = tmp_path / "out" / "image.json"
    capsys.readouterr()
    assert di.main(["--project-root", str(project), "--stamp", str(stamp)]) == 0
    written = json.loads(stamp.read_text())
    assert written["tag"] == info["tag"] and written["id"] == info["id"]
    assert written["base_tag"] == info["base_tag"] and written["hash"] == info["hash"]
    assert json.loads(capsys.readouterr().out)["cached"] is True
    assert [p.name for p in stamp.parent.iterdir()] == ["image.json"]  # no temporary file left


@pytest.mark.docker
def test_changed_code_builds_a_new_image(engine, project, tmp_path):
    original = di.ensure_image(project)  # cached by the test above (or built here when run alone)
    changed = copy_project(tmp_path / "changed")
    (changed / "msdbench" / "_docker_image_test_marker.py").write_text("MARK = 'rebuilt'\n")
    info = di.ensure_image(changed)
    try:
        assert info["tag"] != original["tag"] and info["id"] != original["id"]
        assert info["cached"] is False and info["base_tag"] == original["base_tag"]
        code, out = run_in(engine, info["tag"], ["python", "-c", "import msdbench._docker_image_test_marker as m; print(m.MARK)"])
        assert (code, out.strip()) == (0, "rebuilt")
    finally:
        engine.images.remove(info["tag"], force=True)
