"""The container image of the docker backend, built with no registry.

Nothing can be pulled on the testbeds, so the image is made from parts that *are* reachable:

1. a **base image** ``msdbench-base:<hash>``: Debian bookworm made by ``debootstrap --variant=minbase``
   from the host's apt mirror, plus Debian's python3 (3.11) and an empty virtualenv in ``/opt/venv``,
   imported with ``docker import`` (the SDK's ``import_image``). Built once per machine (1-1.5 min).
2. a **service image** ``msdbench-svc:<hash>``: ``FROM`` the base, a virtualenv in ``/opt/venv`` with the
   project's container-side dependencies and the project itself, installed **offline** inside the build
   from wheels that the host downloads from PyPI (for CPython 3.11 / manylinux of the engine's
   architecture, whatever the host's own Python is) and a wheel of the project built on the host.
   So a build container needs no network.

Both tags carry a hash of what goes in: unchanged inputs reuse the image, a changed project file
(its content, or the set of files) gives a new tag. Everything built carries the label ``msdbench=1``.

Inside the service image: Python is ``/opt/venv/bin/python`` (``python`` on ``PATH``), the user is
``msd`` (uid:gid 10001:10001, home ``/home/msd``, the working directory), ``PYTHONDONTWRITEBYTECODE=1``
(bytecode is precompiled at install, so a read-only root works), and the default command is
``python -m msdbench.domain``. Writable: ``/tmp`` and ``/home/msd`` (mount tmpfs there with a read-only root).
No init inside: run containers with ``init=True`` (``--init``), or a stop waits 10 s.

Modules: docker_recipe.py (what goes in, the tags: pure), docker_build.py (the two builds), this
one (the engine, when to build, the command line). They use the standard library only at import
time (the ``docker`` SDK is imported when a client is made), so they run from a source tree that
is not installed, e.g. from ``docker/Dockerfile``:
``PYTHONPATH=. python -m msdbench.backends.docker_image --print-requirements --project-root .``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from msdbench.backends.docker_build import (ImageBuildError, _build_lock,  # noqa: F401
                                            _engine_machine, _image_or_none,
                                            build_base_image, build_service_image)
from msdbench.backends.docker_recipe import (IMAGE_HOME, IMAGE_PYTHON, IMAGE_USER,  # noqa: F401
                                             LABEL, Log, _req_name, _snapshot, _tags,
                                             container_requirements, image_tags)

__all__ = [
    "DockerUnavailable",
    "ImageBuildError",
    "connect",
    "container_requirements",
    "image_tags",
    "build_base_image",
    "build_service_image",
    "ensure_image",
    "prune_images",
    "IMAGE_USER",
    "IMAGE_PYTHON",
    "IMAGE_HOME",
]


class DockerUnavailable(RuntimeError):
    """The Docker Engine cannot be reached (or the SDK is missing); the message names the host tried."""


# --- the engine -----------------------------------------------------------------------------


def connect(docker_host: str | None = None, timeout: int = 60):
    """A docker.DockerClient that answered a ping, or DockerUnavailable naming the host tried.

    docker_host: e.g. "unix:///var/run/docker.sock" or "tcp://10.0.0.2:2375"; None means $DOCKER_HOST
    or the default socket (the SDK's from_env).
    """
    tried = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (default)"
    try:
        import docker
    except ImportError as exc:
        raise DockerUnavailable(f"cannot reach the Docker Engine at {tried}: the docker SDK is not installed ({exc})")
    # ssh://: the SDK's paramiko transport (one SSH connection, a channel per request; needs the
    # `docker-ssh` extra) unless MSDBENCH_DOCKER_SSH=openssh: the ssh binary and all of ~/.ssh/config,
    # but a new SSH login per request (~0.6 s each here).
    ssh_binary = tried.startswith("ssh://") and os.environ.get("MSDBENCH_DOCKER_SSH") == "openssh"
    try:
        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=timeout, use_ssh_client=ssh_binary)
        else:
            client = docker.from_env(timeout=timeout, use_ssh_client=ssh_binary)
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, bad URL, permission denied...
        reason = f"{type(exc).__name__}: {exc}"
        raise DockerUnavailable(f"cannot reach the Docker Engine at {tried}: {reason}") from exc
    return client


def engine_facts(docker_host: str | None, timeout: int = 10) -> dict:
    """{"id", "version"} of the engine at docker_host (None: this machine's default), which tell
    two URLs of one engine apart from two engines; DockerUnavailable when it cannot be reached."""
    engine = connect(docker_host, timeout=timeout)
    try:
        info = engine.info()  # one request: each is an SSH login with MSDBENCH_DOCKER_SSH=openssh
    finally:
        engine.close()
    return {"id": info.get("ID"), "version": info.get("ServerVersion")}


def engine_id(docker_host: str | None = None) -> str | None:
    """The ID of the engine at docker_host (None: this machine's default), or None when it cannot
    be reached."""
    try:
        return engine_facts(docker_host)["id"]
    except DockerUnavailable:
        return None


def ensure_image(project_root: Path, docker_host: str | None = None, log: Log = print) -> dict:
    """Build what is missing of the service image for project_root; describe it.

    {"tag", "id", "base_tag", "build_seconds", "cached", "hash", "base_hash", "requirements",
    "size_bytes", "docker_host"}; cached is True when nothing had to be built. Raises DockerUnavailable
    (engine unreachable) or ImageBuildError. Builds on one machine are serialised by a file lock.
    """
    started = time.monotonic()
    client = connect(docker_host)
    try:
        with _build_lock():
            tags = _tags(_snapshot(Path(project_root)), _engine_machine(client), log)
            cached = _image_or_none(client, tags["tag"]) is not None
            tag, image_id = build_service_image(client, project_root, log=log)
            if tag != tags["tag"]:  # the project changed while we built: describe what was built
                tags = image_tags(project_root, tags["machine"])
            size = client.images.get(image_id).attrs.get("Size")
        return {
            "tag": tag,
            "id": image_id,
            "base_tag": tags["base_tag"],
            "build_seconds": round(time.monotonic() - started, 3),
            "cached": cached,
            "hash": tags["hash"],
            "base_hash": tags["base_hash"],
            "requirements": tags["requirements"],
            "size_bytes": size,
            "docker_host": docker_host or os.environ.get("DOCKER_HOST") or None,
        }
    finally:
        client.close()


def prune_images(docker_host: str | None, keep: set[str], dry_run: bool = False, out: Log = print,
                 match=lambda tag: True) -> list[str]:
    """`msdbench clean --images`: remove the msdbench images (label msdbench=1) none of whose tags
    is in `keep` (this checkout's service image and its base); service images first, so that the
    bases they were built on become free. An image a container still uses stays, and is said so.
    `match` narrows the candidates by tag (tests prune only their own). Returns the tags removed."""
    import docker

    client = connect(docker_host)
    removed: list[str] = []
    try:
        images = client.images.list(filters={"label": f"{LABEL}=1"})
        role = {"service": 0, "build-stage": 1, "base": 2}
        images.sort(key=lambda i: role.get((i.labels or {}).get("msdbench.role"), 1))
        for img in images:
            tags = img.tags or [img.short_id]
            if keep.intersection(tags) or not any(match(t) for t in tags):
                continue
            size = f"{(img.attrs.get('Size') or 0) / 2**20:.0f} MiB"
            if dry_run:
                out(f"would remove image {', '.join(tags)} ({size})")
                continue
            try:
                client.images.remove(img.id, force=False)
            except docker.errors.APIError as e:  # in use by a container, or a parent of a kept one
                out(f"kept    image {', '.join(tags)}: {e.explanation or e}")
                continue
            out(f"removed image {', '.join(tags)} ({size})")
            removed.extend(tags)
        if not images:
            out(f"no msdbench images on {docker_host or os.environ.get('DOCKER_HOST') or 'the local engine'}")
        return removed
    finally:
        client.close()


# --- command line ---------------------------------------------------------------------------


def _default_project_root() -> Path:
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file() and (here / "msdbench").is_dir():
        return here
    return Path.cwd()


def write_json_atomic(path: Path, data: dict) -> None:
    """The stamp, written as every result is (msdbench.results: temp file, fsync, rename, 0644)."""
    from msdbench.results import atomic_write_json

    atomic_write_json(path, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m msdbench.backends.docker_image",
        description="Build (or reuse) the msdbench container image without a registry; print its description.",
    )
    parser.add_argument("--docker-host", help="engine URL, e.g. unix:///var/run/docker.sock (default: $DOCKER_HOST)")
    parser.add_argument("--stamp", type=Path, help="write {tag, id, hashes} as JSON here, atomically")
    parser.add_argument("--project-root", type=Path, default=None, help="the project (default: this checkout)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--print-requirements", action="store_true", help="print the image's requirements; build nothing")
    what.add_argument("--print-tags", action="store_true", help="print the tags that would be used; build nothing")
    args = parser.parse_args(argv)
    root = (args.project_root or _default_project_root()).resolve()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.print_requirements:
        print("\n".join(container_requirements(root, log=log)))
        return 0
    if args.print_tags:
        print(json.dumps(image_tags(root, log=log), indent=2))
        return 0
    try:
        info = ensure_image(root, docker_host=args.docker_host, log=log)
    except DockerUnavailable as exc:
        if args.stamp:  # the workflow goes on: the docker cells are recorded as skipped, with this reason
            log(f"warning: {exc}; writing an 'unavailable' stamp")
            write_json_atomic(args.stamp, {"unavailable": str(exc)})
            return 0
        log(f"error: {exc}")
        return 2
    except ImageBuildError as exc:
        log(f"error: {exc}")
        return 1
    if args.stamp:
        keys = ("tag", "id", "base_tag", "hash", "base_hash", "requirements")
        write_json_atomic(args.stamp, {k: info[k] for k in keys})
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
