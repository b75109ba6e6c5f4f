"""What a cell records about where and how it ran, so that a number can be traced and redone."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

PACKAGES = ("msdbench", "thriftpy2", "cython", "numpy", "pandas", "pyarrow", "snakemake",
            "docker", "pyyaml", "psutil", "scipy")


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_hash(settings: dict) -> str:
    """A short, stable hash of the settings that shape a cell's numbers."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def environment() -> dict:
    u = os.uname()
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "kernel": f"{u.sysname} {u.release} {u.version}",
        "machine": u.machine,
        "hostname": u.nodename,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "harness_affinity": sorted(os.sched_getaffinity(0)),
        "packages": package_versions(),
        "git_revision": git_revision(),
    }
