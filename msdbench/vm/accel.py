"""Which accelerator runs a guest here: KVM when a real guest boots under it, else TCG.

A KVM device can exist and still not run a stock guest kernel (nested virtualisation on some
clouds: SeaBIOS starts, the kernel hangs), so the probe boots the real guest image under KVM with
a short deadline and calls it working only when the guest's agent answers. The verdict is cached
per (host kernel, QEMU version, guest base image) in ~/.cache/msdbench/vm/accel-<key>.json, so a
machine pays the probe once. Every cell records the accelerator it ran with.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from msdbench.vm.guest import ACCELS, QEMU, Guest, GuestError
from msdbench.backends.docker_recipe import _sha
from msdbench.vm.image import vm_cache

PROBE_DEADLINE_S = 30.0  # a working KVM boots this guest in a few seconds
CHOICES = ("auto",) + ACCELS


def qemu_version() -> str:
    try:
        return subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def kvm_device_problem() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    return None


def probe(image: dict, log=print, refresh: bool = False) -> dict:
    """{"accel": "kvm"|"tcg", "kvm": {"works": bool, "reason": str, "boot_s": float|None}, ...}."""
    key = _sha(json.dumps([os.uname().release, qemu_version(), image["base_hash"]]))[:16]
    cache = vm_cache() / f"accel-{key}.json"
    if cache.is_file() and not refresh:
        return json.loads(cache.read_text())
    problem = kvm_device_problem()
    boot_s = None
    if problem is None:
        log(f"probing KVM: booting the guest under KVM (deadline {PROBE_DEADLINE_S:.0f} s)")
        with tempfile.TemporaryDirectory(prefix="msdbench-kvm-probe-") as work:
            guest = Guest("kvm-probe", image, "kvm", Path(work), boot_timeout_s=PROBE_DEADLINE_S)
            t0 = time.monotonic()
            try:
                guest.boot()
                boot_s = round(time.monotonic() - t0, 2)
            except GuestError as e:
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                problem = f"{lines[0]}; console ended with: {lines[-1][:200] if len(lines) > 1 else '-'}"
            finally:
                guest.shutdown()
    verdict = {"accel": "kvm" if problem is None else "tcg",
               "kvm": {"works": problem is None, "reason": problem or "a guest booted", "boot_s": boot_s},
               "host_kernel": os.uname().release, "qemu": qemu_version(), "base_hash": image["base_hash"],
               "probed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(verdict, indent=2))
    os.replace(tmp, cache)
    return verdict


def resolve(wanted: str, image: dict, log=print) -> tuple[str, dict]:
    """The accelerator a guest uses: `wanted` ("auto", "kvm" or "tcg") checked against the probe.

    "kvm" where KVM does not work is an error (never a silent fall back to TCG)."""
    if wanted not in CHOICES:
        raise ValueError(f"accel: {wanted!r} is not one of {CHOICES}")
    if wanted == "tcg":
        return "tcg", {"accel": "tcg", "reason": "asked for"}
    verdict = probe(image, log)
    if wanted == "kvm" and verdict["accel"] != "kvm":
        raise GuestError(f"accel: 'kvm' was asked for, but KVM does not run a guest here: "
                         f"{verdict['kvm']['reason']} (use accel: auto or tcg)")
    return verdict["accel"], verdict
