"""Building the docker backend's two images through the engine, with no registry: the base image
(Debian by debootstrap, imported) and the service image (the project and its container-side
dependencies, installed offline from wheels the host downloads). What goes in, and the tags, are
msdbench/backends/docker_recipe.py; when to build is `docker_image.ensure_image`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

from msdbench.backends.docker_recipe import (BASE_CHANGES, BASE_CLEANUP, BASE_PACKAGES,
                                             DEFAULT_MIRROR, GLIBC, IMAGE_HOME, IMAGE_USER,
                                             IMAGE_VENV, LABEL, PYTHON_VERSION,
                                             SERVICE_BUILDER_VERSION, SERVICE_DOCKERFILE, SUITE,
                                             VARIANT, Log, _base_tag, _deb_arch, _host_machine,
                                             _sha, _snapshot, _tags, _wheel_arch)

BUILD_TIMEOUT = 1800  # seconds the engine may stay silent during a build step or an import


class ImageBuildError(RuntimeError):
    """Building the base or the service image failed; the message carries the tail of the build log."""


def _cache_dir() -> Path:
    root = os.environ.get("MSDBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "msdbench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _build_lock(name: str = "docker-image.lock") -> Iterator[None]:
    """One image build per machine at a time (two debootstraps in parallel only waste the 2 cores)."""
    import fcntl

    with open(_cache_dir() / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], log: Log, what: str, **kw) -> str:
    """Run a command, return its output; on failure raise ImageBuildError with the output's tail."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _image_or_none(client, ref: str):
    import docker

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _engine_machine(client) -> str:
    try:
        return _wheel_arch(client.info().get("Architecture") or _host_machine())
    except Exception:
        return _host_machine()


# --- the base image -------------------------------------------------------------------------


def _apt_mirror() -> str:
    """The Debian mirror apt uses here for bookworm (not -security); $MSDBENCH_DEBIAN_MIRROR wins."""
    env = os.environ.get("MSDBENCH_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    candidates: list[tuple[str, list[str]]] = []
    sources = Path("/etc/apt/sources.list.d")
    if sources.is_dir():
        for path in sorted(sources.glob("*.sources")):
            for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "deb").split():
                    for uri in fields.get("uris", "").split():
                        candidates.append((uri, fields.get("suites", "").split()))
    lists = [Path("/etc/apt/sources.list")] + (sorted(sources.glob("*.list")) if sources.is_dir() else [])
    for path in lists:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb":
                    candidates.append((words[1], [words[2]]))
    for uri, suites in candidates:
        if SUITE in suites and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def _ensure_debootstrap(log: Log) -> str:
    found = shutil.which("debootstrap") or (Path("/usr/sbin/debootstrap").exists() and "/usr/sbin/debootstrap")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise ImageBuildError("debootstrap is missing and there is no apt-get: build docker/Dockerfile with a registry")
    log("installing debootstrap with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], log, "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"], log, "apt-get install", env=env)
    found = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(found).exists():
        raise ImageBuildError("apt-get installed debootstrap but it cannot be found")
    return found


def debootstrap(root: Path, packages: Iterable[str], machine: str, log: Log, env: dict | None = None) -> None:
    """Debian SUITE (variant VARIANT) plus `packages` into root, from the configured mirror.
    Needs root; installs debootstrap with apt-get if it is missing."""
    tool = _ensure_debootstrap(log)
    _run([tool, f"--variant={VARIANT}", f"--arch={_deb_arch(machine)}", f"--include={','.join(packages)}",
          SUITE, str(root), _apt_mirror()], log, "debootstrap", env=env)
    _unmount_under(root)


def _unmount_under(root: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside root (deepest first)."""
    prefix = str(root.resolve())
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def remove_globs(root: Path, patterns: Iterable[str]) -> None:
    """Delete what matches each glob under root (docs, caches, apt lists an image does not need)."""
    for pattern in patterns:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _remove_tree(path: Path) -> None:
    _unmount_under(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], stderr=subprocess.DEVNULL)


def build_base_image(client, log: Log = print) -> str:
    """The offline base image's tag, ``msdbench-base:<hash>``; built (debootstrap + docker import) if missing.

    Needs root, and debootstrap (installed with apt-get if missing) and the host's apt mirror.
    """
    machine = _engine_machine(client)
    base_tag = _base_tag(machine)
    if _image_or_none(client, base_tag) is not None:
        log(f"base image {base_tag}: present")
        return base_tag
    if machine != _host_machine():
        raise ImageBuildError(f"the engine runs {machine}, this host {_host_machine()}: cannot debootstrap its base here")
    if os.geteuid() != 0:
        raise ImageBuildError(f"building {base_tag} with debootstrap needs root")
    mirror = _apt_mirror()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="msdbench-base-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        log(f"base image {base_tag}: debootstrap {VARIANT} {SUITE} from {mirror} + {' '.join(BASE_PACKAGES)}")
        debootstrap(rootfs, BASE_PACKAGES, machine, log)
        # The virtualenv the service image fills (pip only: setuptools is not needed at run time). Made
        # here, once per machine: ensurepip inside a build container costs ~10 s on fuse-overlayfs.
        _run(["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", IMAGE_VENV], log, "python3 -m venv")
        _run(
            ["chroot", str(rootfs), f"{IMAGE_VENV}/bin/python", "-m", "pip", "uninstall", "--yes",
             "--disable-pip-version-check", "setuptools"],
            log,
            "removing setuptools from the venv",
        )
        remove_globs(rootfs, BASE_CLEANUP)
        log(f"base image {base_tag}: rootfs ready in {time.monotonic() - started:.1f} s, importing")
        tarball = work / "rootfs.tar"
        _run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs),
             "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "-cf", str(tarball), "."],
            log,
            "tar of the rootfs",
        )
        repo, _, tag = base_tag.partition(":")
        changes = [*BASE_CHANGES, f"LABEL {LABEL}=1 msdbench.role=base msdbench.hash={tag}"]
        # A path as src: the SDK streams the file and waits without a timeout.
        result = client.api.import_image(src=str(tarball), repository=repo, tag=tag, changes=changes)
        if _image_or_none(client, base_tag) is None:
            raise ImageBuildError(f"docker import did not produce {base_tag}: {str(result)[-500:]}")
        log(f"base image {base_tag}: built in {time.monotonic() - started:.1f} s")
        return base_tag
    finally:
        _remove_tree(work)


# --- the service image ----------------------------------------------------------------------


def _wheelhouse(requirements: list[str], machine: str, log: Log) -> Path:
    """Wheels for the image's CPython of every requirement, downloaded from PyPI once per requirement list.

    Cached in ~/.cache/msdbench/wheelhouse/<hash> ($MSDBENCH_CACHE overrides ~/.cache/msdbench): the same
    requirement list reuses the same wheels, so the dependency layers of the image are reused too.
    """
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    # Every manylinux level the image's glibc runs, spelled out: older pips do not expand them.
    glibc_minor = int(GLIBC.split("_")[1])
    platforms = []
    for tag in [f"manylinux_2_{m}" for m in range(glibc_minor, 4, -1)] + ["manylinux2014", "manylinux2010", "manylinux1"]:
        platforms += ["--platform", f"{tag}_{machine}"]
    key = _sha(json.dumps([requirements, PYTHON_VERSION, GLIBC, machine]))[:16]
    parent = _cache_dir() / "wheelhouse"
    parent.mkdir(parents=True, exist_ok=True)
    dest = parent / key
    if (dest / ".complete").is_file():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=parent))
    try:
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n")
        started = time.monotonic()
        log(f"downloading wheels for CPython {PYTHON_VERSION} manylinux_{GLIBC}_{machine}: {' '.join(requirements)}")
        _run(
            [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
             "--dest", str(tmp), "--only-binary=:all:", "--implementation", "cp",
             "--python-version", PYTHON_VERSION, "--abi", abi, *platforms, "-r", str(tmp / "requirements.txt")],
            log,
            "pip download of the image's wheels",
        )
        (tmp / ".complete").write_text(f"{time.monotonic() - started:.1f} s\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
        return dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_context(ctx: Path, files: dict[str, bytes], tags: dict, log: Log) -> None:
    labels = {
        LABEL: "1",
        "msdbench.role": "service",
        "msdbench.hash": tags["hash"],
        "msdbench.base": tags["base_tag"],
        "msdbench.requirements": " ".join(tags["requirements"]),
    }
    (ctx / "Dockerfile").write_text(
        SERVICE_DOCKERFILE.format(
            version=SERVICE_BUILDER_VERSION, base=tags["base_tag"], venv=IMAGE_VENV, home=IMAGE_HOME,
            user=IMAGE_USER, labels=" ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()),
        )
    )
    (ctx / "requirements.txt").write_text("\n".join(tags["requirements"]) + "\n")
    wheels = _wheelhouse(tags["requirements"], tags["machine"], log)
    (ctx / "wheels").mkdir()
    for whl in sorted(wheels.glob("*.whl")):
        try:
            os.link(whl, ctx / "wheels" / whl.name)
        except OSError:
            shutil.copy2(whl, ctx / "wheels" / whl.name)
    # The project's own wheel, built here from exactly the files that were hashed.
    src = ctx.parent / "src"
    for rel, content in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (ctx / "project").mkdir()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-input", "--no-deps",
         *_no_build_isolation(), "--wheel-dir", str(ctx / "project"), str(src)],
        log,
        "pip wheel of the project",
    )


def _no_build_isolation() -> list[str]:
    """["--no-build-isolation"] when this interpreter's setuptools can build the wheel (>= 70.1, which has
    bdist_wheel built in): saves pip the ~5 s of fetching setuptools into an isolated environment."""
    from importlib import metadata

    try:
        version = tuple(int(x) for x in re.findall(r"\d+", metadata.version("setuptools"))[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if version >= (70, 1) else []


def build_service_image(client, project_root: Path, log: Log = print) -> tuple[str, str]:
    """(tag, image id) of ``msdbench-svc:<hash>`` for project_root; built on the base if missing.

    The build runs with network_mode="none": everything it installs comes from the build context.
    Intermediate containers are removed whether the build succeeds or not.
    """
    files = _snapshot(Path(project_root))
    tags = _tags(files, _engine_machine(client), log)
    tag = tags["tag"]
    image = _image_or_none(client, tag)
    if image is not None:
        log(f"service image {tag}: present")
        return tag, image.id
    build_base_image(client, log=log)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="msdbench-svc-"))
    try:
        ctx = work / "context"
        ctx.mkdir()
        _write_context(ctx, files, tags, log)
        log(f"service image {tag}: context ready in {time.monotonic() - started:.1f} s, building")
        lines: list[str] = []
        image_id = None
        stream = client.api.build(
            path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False, decode=True,
            network_mode="none", timeout=BUILD_TIMEOUT,
        )
        for chunk in stream:
            if "error" in chunk:
                tail = "\n".join(lines[-30:])
                raise ImageBuildError(f"building {tag} failed: {chunk['error'].strip()}\n{tail}")
            for line in chunk.get("stream", "").splitlines():
                if line.strip():
                    lines.append(line)
                    if line.startswith("Step "):
                        log(f"  [{time.monotonic() - started:6.1f} s] {line[:160]}")
            if isinstance(chunk.get("aux"), dict) and chunk["aux"].get("ID"):
                image_id = chunk["aux"]["ID"]
        image = _image_or_none(client, tag)
        if image is None:
            raise ImageBuildError(f"the build of {tag} ended without the image (last: {lines[-1:]}, id {image_id})")
        log(f"service image {tag}: built in {time.monotonic() - started:.1f} s")
        return tag, image.id
    finally:
        shutil.rmtree(work, ignore_errors=True)
