"""A booted guest, saved: what each cell restores instead of booting (seconds, not a minute).

One snapshot per (guest image, accelerator, QEMU version): the guest is booted once, its agent
has imported the domain runtime and the drivers, and QEMU writes the whole machine state to
``~/.cache/msdbench/vm/project-<hash>/snapshot-<accel>.state`` (beside the project disk it was
made with). Cells restore it read-only; nothing of a cell's guest flows back into it. Making a
snapshot removes those of other images unused for an hour (they are ~160 MB each; checkouts of
different code on one machine each keep theirs while they use it).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from msdbench.vm.accel import qemu_version
from msdbench.vm.guest import Guest
from msdbench.vm.image import build_lock, vm_cache

STALE_S = 3600.0


def snapshot_path(image: dict, accel: str) -> Path:
    return Path(image["project_disk"]).parent / f"snapshot-{accel}.state"


def ensure_snapshot(image: dict, accel: str, log=print) -> tuple[Path, dict]:
    """(path, description) of the snapshot for this image and accelerator; made if missing."""
    path = snapshot_path(image, accel)
    meta_path = path.with_suffix(".json")
    with build_lock():
        if path.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("qemu") == qemu_version():
                os.utime(path)  # in use: not stale (see below)
                return path, meta | {"cached": True}
        log(f"guest snapshot ({accel}): booting the guest once to save it")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="msdbench-vm-snapshot-") as work:
            guest = Guest("snapshot", image, accel, Path(work))
            try:
                guest.boot()
                boot_s = guest.boot_s
                guest.save(path)
            finally:
                guest.shutdown()
        meta = {"accel": accel, "qemu": qemu_version(), "hash": image["hash"], "boot_s": boot_s,
                "save_s": round(time.monotonic() - started - boot_s, 2), "size_bytes": path.stat().st_size,
                "made": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        meta_path.write_text(json.dumps(meta, indent=2))
        for old in vm_cache().glob("project-*/snapshot-*.state"):
            if old.parent != path.parent and time.time() - old.stat().st_mtime > STALE_S:
                old.unlink(missing_ok=True)
                old.with_suffix(".json").unlink(missing_ok=True)
        log(f"guest snapshot ({accel}): {path.stat().st_size / 1e6:.0f} MB, booted in {boot_s:.0f} s")
        return path, meta | {"cached": False}
