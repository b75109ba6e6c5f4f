"""The guest image of the `vm` host kind, built offline like the docker image (no registry, no ISO).

Two parts, each cached by a hash of what goes in (``~/.cache/msdbench/vm/``, ``$MSDBENCH_CACHE``
overrides ``~/.cache/msdbench``):

1. the **base** ``base-<hash>/``: Debian bookworm by ``debootstrap --variant=minbase`` from the
   configured mirror (``$MSDBENCH_DEBIAN_MIRROR`` or apt's own) with Debian's kernel
   (linux-image-amd64), python3, iproute2, a virtualenv ``/opt/venv`` holding the project's
   guest-side dependencies (installed offline from the same host-downloaded wheels the docker
   image uses) and the guest's init. Out of it come ``vmlinuz`` and a small ``initrd.img`` (only
   the virtio and ext4 modules) for direct kernel boot, and ``rootfs.img`` (ext4, opened
   read-only by every guest, so nothing per cell is written to it). Rebuilt only when the Debian
   packages, the requirements or the init change: ~1.5-3 min here.
2. the **project disk** ``project-<hash>/project.img``: a small ext4 with the project itself
   (a wheel built on the host from exactly the hashed files, installed with ``--target``), mounted
   read-only at ``/opt/msdbench`` in the guest. A code change rebuilds only this (a few seconds).

Needs root (debootstrap, chroot), debootstrap (installed with apt-get if missing) and mkfs.ext4.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from msdbench.backends.docker_build import (ImageBuildError, _apt_mirror, _build_lock, _cache_dir,
                                            _no_build_isolation, _remove_tree, _run, _wheelhouse,
                                            debootstrap, remove_globs)
from msdbench.backends.docker_recipe import (GLIBC, PYTHON_VERSION, SUITE, Log, _deb_arch,
                                             _host_machine, _requirements, _sha, _snapshot)

BASE_BUILDER_VERSION = 1
PROJECT_BUILDER_VERSION = 1
GUEST_PACKAGES = ("linux-image-amd64", "python3", "python3-venv", "iproute2")
# Loaded by the initrd (initramfs-tools MODULES=list): no udev in the guest, so nothing else would.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")
GUEST_VENV = "/opt/venv"
GUEST_PROJECT = "/opt/msdbench"
GUEST_INIT = "/usr/local/sbin/msdbench-init"
# The root file system's init only mounts the project disk and runs the real init from it
# (msdbench/vm/guest-init), so a change to the guest's start-up rebuilds seconds, not the base.
INIT_STUB = f"""#!/bin/sh
# msdbench guest: the real init is msdbench/vm/guest-init on the project disk (/dev/vdb)
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o ro /dev/vdb {GUEST_PROJECT} && exec /bin/sh {GUEST_PROJECT}/msdbench/vm/guest-init
echo "msdbench-guest: cannot mount the project disk /dev/vdb on {GUEST_PROJECT}"
"""
CLEANUP = (  # inside the rootfs, removed before the ext4 is made (globs)
    "var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", "var/log/*",
    "usr/share/doc/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
    "usr/lib/modules/*",  # what the guest needs is in the initrd; the rest is ~400 MB
    "boot/*",
)


def vm_cache() -> Path:
    path = _cache_dir() / "vm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_lock():
    """One guest image or snapshot build per machine at a time (its own lock: a cell only waits
    for a guest build, never for a docker one)."""
    return _build_lock("vm-image.lock")


def _base_spec(requirements: list[str]) -> dict:
    machine = _host_machine()
    return {"builder": BASE_BUILDER_VERSION, "suite": SUITE, "arch": _deb_arch(machine),
            "packages": sorted(GUEST_PACKAGES), "initrd_modules": list(INITRD_MODULES),
            "requirements": requirements, "python": PYTHON_VERSION, "glibc": GLIBC,
            "cleanup": list(CLEANUP), "init": _sha(INIT_STUB)}


def _prune(keep: str, log: Log) -> None:
    """A new base replaces the cached ones (~450 MB each) and every project disk and snapshot made
    on them: a cache, rebuilt on demand (running guests keep their open files)."""
    for path in vm_cache().iterdir():
        if path.is_dir() and path.name != keep and path.name.startswith(("base-", "project-")):
            shutil.rmtree(path, ignore_errors=True)
            log(f"removed the stale guest image {path.name}")


def image_hashes(project_root: Path, log: Log | None = None) -> dict:
    """{"base_hash", "hash", "requirements"}: what ensure_image would reuse or build; pure."""
    files = _snapshot(Path(project_root))
    requirements = _requirements(files, log)
    base_hash = _sha(json.dumps(_base_spec(requirements), sort_keys=True))[:16]
    h = hashlib.sha256(f"project builder {PROJECT_BUILDER_VERSION} {base_hash}".encode())
    for rel, content in files.items():
        h.update(_sha(rel).encode())
        h.update(_sha(content).encode())
    return {"base_hash": base_hash, "hash": h.hexdigest()[:16], "requirements": requirements,
            "files": files}


def _mkfs(src: Path, image: Path, label: str, log: Log, slack_mb: int = 64) -> None:
    """An ext4 image holding src's tree (mkfs.ext4 -d: no loop device, no mount)."""
    used = int(subprocess.run(["du", "-sm", "--apparent-size", str(src)], capture_output=True,
                              text=True, check=True).stdout.split()[0])
    size = int(used * 1.25) + slack_mb
    _run(["mkfs.ext4", "-q", "-F", "-L", label, "-O", "^has_journal", "-E", "root_owner=0:0",
          "-d", str(src), str(image), f"{size}M"], log, f"mkfs.ext4 of {label}")


def _build_base(dest: Path, requirements: list[str], log: Log) -> dict:
    if os.geteuid() != 0:
        raise ImageBuildError("building the guest image (debootstrap, chroot) needs root")
    for tool in ("mkfs.ext4", "chroot"):
        if not shutil.which(tool):
            raise ImageBuildError(f"building the guest image needs {tool} (Debian: e2fsprogs, coreutils)")
    mirror = _apt_mirror()
    machine = _host_machine()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="msdbench-vmbase-", dir="/var/tmp"))
    try:
        root = work / "rootfs"
        log(f"guest base: debootstrap minbase {SUITE} from {mirror} + {' '.join(GUEST_PACKAGES)}")
        # INITRD=No: no initrd with every module now; ours (a few modules) comes next.
        debootstrap(root, GUEST_PACKAGES, machine, log, env=dict(os.environ, INITRD="No"))
        log(f"guest base: rootfs in {time.monotonic() - started:.0f} s; initrd, venv, wheels")
        # A small initrd: just what finds and mounts /dev/vda and brings up eth0.
        (root / "etc/initramfs-tools/modules").write_text("\n".join(INITRD_MODULES) + "\n")
        (root / "etc/initramfs-tools/conf.d/msdbench").write_text("MODULES=list\nCOMPRESS=gzip\n")
        kernels = sorted((root / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise ImageBuildError("debootstrap installed no kernel (boot/vmlinuz-*)")
        kernel_version = kernels[-1].name.removeprefix("vmlinuz-")
        _run(["chroot", str(root), "update-initramfs", "-c", "-k", kernel_version], log, "update-initramfs")
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copy2(kernels[-1], tmp / "vmlinuz")
        shutil.copy2(root / "boot" / f"initrd.img-{kernel_version}", tmp / "initrd.img")
        # The guest-side dependencies, offline, from the wheels the docker image uses too.
        _run(["chroot", str(root), "/usr/bin/python3", "-m", "venv", GUEST_VENV], log, "python3 -m venv")
        wheels = _wheelhouse(requirements, machine, log)
        inside = root / "tmp/wheels"
        shutil.copytree(wheels, inside)
        (inside / "requirements.txt").write_text("\n".join(requirements) + "\n")
        _run(["chroot", str(root), f"{GUEST_VENV}/bin/python", "-m", "pip", "install", "--no-index",
              "--no-cache-dir", "--disable-pip-version-check", "--find-links", "/tmp/wheels",
              "-r", "/tmp/wheels/requirements.txt"], log, "pip install in the guest's venv")
        shutil.rmtree(inside)
        init = root / GUEST_INIT.lstrip("/")
        init.write_text(INIT_STUB)
        init.chmod(0o755)
        (root / GUEST_PROJECT.lstrip("/")).mkdir(parents=True, exist_ok=True)
        remove_globs(root, CLEANUP)
        _mkfs(root, tmp / "rootfs.img", "msdbench-root", log)
        info = {"base_hash": dest.name.removeprefix("base-"), "kernel_version": kernel_version,
                "mirror": mirror, "packages": list(GUEST_PACKAGES), "requirements": requirements,
                "build_seconds": round(time.monotonic() - started, 1)}
        (tmp / "base.json").write_text(json.dumps(info, indent=2) + "\n")
        os.rename(tmp, dest)
        log(f"guest base {dest.name}: built in {time.monotonic() - started:.0f} s")
        return info
    finally:
        _remove_tree(work)
        shutil.rmtree(dest.with_name(dest.name + ".part"), ignore_errors=True)


def _build_project(dest: Path, files: dict[str, bytes], log: Log) -> None:
    """project.img: the project's wheel, installed with --target (byte-compiled by pip), as ext4."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="msdbench-vmproject-"))
    try:
        src = work / "src"
        for rel, content in files.items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        _run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-input",
              "--no-deps", *_no_build_isolation(), "--wheel-dir", str(work / "wheel"), str(src)],
             log, "pip wheel of the project")
        tree = work / "tree"
        _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
              "--no-deps", "--target", str(tree), *map(str, (work / "wheel").glob("*.whl"))],
             log, "pip install --target of the project")
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _mkfs(tree, tmp / "project.img", "msdbench-proj", log, slack_mb=16)
        os.rename(tmp, dest)
        log(f"guest project disk {dest.name}: built in {time.monotonic() - started:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest.with_name(dest.name + ".part"), ignore_errors=True)


def ensure_image(project_root: Path, log: Log = print) -> dict:
    """Build what is missing of the guest image for project_root; describe it.

    {"kernel", "initrd", "rootfs", "project_disk" (paths), "base_hash", "hash", "kernel_version",
    "requirements", "build_seconds", "cached"}. Raises ImageBuildError.
    """
    started = time.monotonic()
    with build_lock():
        h = image_hashes(Path(project_root), log)
        base = vm_cache() / f"base-{h['base_hash']}"
        project = vm_cache() / f"project-{h['hash']}"
        cached = base.is_dir() and project.is_dir()
        if not base.is_dir():
            _build_base(base, h["requirements"], log)
            _prune(keep=base.name, log=log)
        if not project.is_dir():
            _build_project(project, h["files"], log)
    info = json.loads((base / "base.json").read_text())
    return {"kernel": str(base / "vmlinuz"), "initrd": str(base / "initrd.img"),
            "rootfs": str(base / "rootfs.img"), "project_disk": str(project / "project.img"),
            "base_hash": h["base_hash"], "hash": h["hash"], "kernel_version": info["kernel_version"],
            "requirements": h["requirements"], "cached": cached,
            "build_seconds": round(time.monotonic() - started, 3)}



def project_root() -> Path:
    """The checkout this msdbench runs from (the guest gets exactly its files)."""
    from msdbench.backends.docker_image import _default_project_root

    root = _default_project_root()
    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{root} holds no pyproject.toml: the guest image is built from an "
                                "msdbench checkout (pip install -e .)")
    return root
