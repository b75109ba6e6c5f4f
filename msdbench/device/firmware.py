"""MicroPython builds for the device tier, cached by what they are built from.

Two ports build from one MicroPython source (a release tarball or a git clone):
  qemu: board MPS2_AN385 (a Cortex-M3), `firmware.elf` for qemu-system-arm: the emulated board;
  unix: the `micropython` executable, a fast stand-in for a board in unit tests.
The cache key is the tarball's SHA-256 (or, for a tree, its path and git revision); the outputs
live in `<cache>/<key>/` and are reused from then on. A build runs in a temporary directory that is
removed whatever happens (success, failure, Ctrl-C). `nice -n 10 make -j2`: the machine is shared.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from msdbench.lifetime import end_group

PORTS = ("qemu", "unix")
QEMU_BOARD = "MPS2_AN385"
# The heap the qemu firmware gives MicroPython (its default): about what an nRF52840 (256 KB RAM)
# leaves to MicroPython.
MAKE_ARGS = {
    "qemu": ["-C", "ports/qemu", f"BOARD={QEMU_BOARD}", "FROZEN_MANIFEST="],
    "unix": ["-C", "ports/unix", "VARIANT=standard", "FROZEN_MANIFEST=", "MICROPY_PY_FFI=0",
             "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0"],
}
OUTPUTS = {"qemu": f"ports/qemu/build-{QEMU_BOARD}/firmware.elf",
           "unix": "ports/unix/build-standard/micropython"}
ARTIFACT = {"qemu": "firmware.elf", "unix": "micropython"}
SOURCE_ENV = "MSDBENCH_MICROPYTHON"
DEFAULT_SOURCE = "../shared/third_party/micropython-1.29.0-preview.tar.gz"  # relative to the repo


class FirmwareError(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("MSDBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "msdbench")
    return Path(base) / "micropython"


def default_source() -> Path:
    if os.environ.get(SOURCE_ENV):
        return Path(os.environ[SOURCE_ENV]).expanduser()
    return (Path(__file__).resolve().parents[2] / DEFAULT_SOURCE).resolve()


def source_key(source: Path) -> str:
    if source.is_file():
        h = hashlib.sha256()
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "tar-" + h.hexdigest()[:16]
    if (source / "py" / "mpconfig.h").is_file():
        rev = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                             text=True).stdout.strip() or "norev"
        return "tree-" + hashlib.sha256(f"{source.resolve()}:{rev}".encode()).hexdigest()[:16]
    raise FirmwareError(f"MicroPython source {source}: not a tarball and not a MicroPython tree "
                        f"(no py/mpconfig.h); give a release tarball or a `git clone` of "
                        f"https://github.com/micropython/micropython (config device.source or "
                        f"${SOURCE_ENV})")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)   # two builds of one key wait for each other
        yield


def _make(tree: Path, port: str, log) -> None:
    cmd = ["nice", "-n", "10", "make", "-j2", *MAKE_ARGS[port]]
    log.write(f"$ {' '.join(cmd)}\n".encode())
    log.flush()
    # Its own process group: on an error or Ctrl-C, make and every compiler it started end
    # before the temporary tree is removed.
    proc = subprocess.Popen(cmd, cwd=tree, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        rc = proc.wait()
    except BaseException:
        end_group(proc, grace_s=10)
        raise
    if rc:
        raise FirmwareError(f"building the MicroPython {port} port failed (make exit {rc}); "
                            f"see {log.name}")


def build(ports=PORTS, source: str | Path | None = None) -> dict:
    """Build (or find in the cache) the ports; returns {"key", "source", port: path, ...}."""
    source = Path(source).expanduser() if source else default_source()
    if not source.exists():
        raise FirmwareError(f"MicroPython source {source} does not exist (config device.source or "
                            f"${SOURCE_ENV}: a release tarball or a git clone)")
    key = source_key(source)
    out_dir = cache_root() / key
    info_path = out_dir / "build.json"
    with _locked(cache_root() / f"{key}.lock"):
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        missing = [p for p in ports if not (out_dir / p / ARTIFACT[p]).exists()]
        if missing:
            out_dir.mkdir(parents=True, exist_ok=True)
            info.update(_build_into(source, missing, out_dir))
            info_path.write_text(json.dumps(info, indent=2))
    result = {"key": key, "source": str(source), "cache": str(out_dir),
              "build_s": {p: info.get(f"{p}_build_s") for p in ports}}
    for p in ports:
        result[p] = str(out_dir / p / ARTIFACT[p])
    return result


def _build_into(source: Path, ports, out_dir: Path) -> dict:
    info = {}
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir.parent))
    try:
        if source.is_file():
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            tops = [p for p in tmp.iterdir() if p.is_dir()]
            if len(tops) != 1:
                raise FirmwareError(f"{source}: expected one top directory, found {len(tops)}")
            tree = tops[0]
        else:
            tree = source
        # The frozen-manifest step wants the micropython-lib submodule (not in release subsets);
        # nothing of it is frozen here.
        lib = tree / "lib" / "micropython-lib"
        if not (lib / "README.md").exists():
            lib.mkdir(parents=True, exist_ok=True)
            (lib / "README.md").write_text("placeholder: no micropython-lib packages are frozen\n")
        with open(out_dir / "build.log", "ab") as log:
            for port in ports:
                t0 = time.monotonic()
                _make(tree, port, log)
                (out_dir / port).mkdir(exist_ok=True)
                shutil.copy2(tree / OUTPUTS[port], out_dir / port / ARTIFACT[port])
                info[f"{port}_build_s"] = round(time.monotonic() - t0, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info
