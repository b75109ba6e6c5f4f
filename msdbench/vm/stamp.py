"""`msdbench image vm`: build (or reuse) the guest image, probe the accelerator, make (or reuse)
the snapshot cells restore; write what was used as the stamp the VM cells depend on. Where a VM
cannot run here (not root, no QEMU, no debootstrap), the stamp says why and the cells on a VM
host are recorded as skipped with that reason."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from msdbench.results import atomic_write_json


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "a VM host needs root (debootstrap, tap devices, bridges)"
    from msdbench.vm.guest import QEMU

    missing = [t for t in (QEMU, "mkfs.ext4", "ip") if not shutil.which(t)]
    if missing:
        return f"missing here: {', '.join(missing)} (Debian: qemu-system-x86, e2fsprogs, iproute2)"
    return None


def write_stamp(out: str | Path, log=lambda m: print(m, file=sys.stderr, flush=True)) -> dict:
    from msdbench.vm import accel
    from msdbench.vm.image import ensure_image, project_root
    from msdbench.vm.snapshot import ensure_snapshot

    reason = unavailable_reason()
    if reason:
        log(f"warning: {reason}; writing an 'unavailable' stamp")
        stamp = {"unavailable": reason}
        atomic_write_json(out, stamp)
        return stamp
    t0 = time.monotonic()
    image = ensure_image(project_root(), log=log)
    verdict = accel.probe(image, log=log)
    t1 = time.monotonic()
    _, snap = ensure_snapshot(image, verdict["accel"], log=log)
    stamp = {"hash": image["hash"], "base_hash": image["base_hash"], "kernel": image["kernel_version"],
             "requirements": image["requirements"], "image_cached": image["cached"],
             "image_seconds": round(t1 - t0, 1), "accel": verdict["accel"], "kvm": verdict["kvm"],
             "qemu": verdict["qemu"], "snapshot": snap}
    atomic_write_json(out, stamp)
    return stamp
