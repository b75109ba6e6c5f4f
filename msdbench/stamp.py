"""The process backend's "image": a stamp of the environment the cells ran in.

Snakemake reruns the cells when this file changes; its rule reruns when the measured code or the
dependency list changes (its inputs), and the stamp records versions for the record.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from msdbench.metadata import package_versions
from msdbench.results import atomic_write_json

PACKAGE_DIR = Path(__file__).resolve().parent
# The code on the measured path: services, transports, drivers, the domain runtime, the IDL.
MEASURED = ["idl/*.thrift", "services/*.py", "transports/*.py", "drivers/*.py", "backends/base.py",
            "backends/process.py",
            "domain.py", "pinning.py", "manifest.py", "hosts/*.py"]


def measured_files() -> list[Path]:
    return sorted(p for pat in MEASURED for p in PACKAGE_DIR.glob(pat))


def code_sha256() -> str:
    """A hash of the measured code: two installations with the same hash measure the same thing."""
    h = hashlib.sha256()
    for p in measured_files():
        h.update(p.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def write_stamp(out: str | Path) -> dict:
    stamp = {"backend": "process", "python": sys.version.split()[0], "executable": sys.executable,
             "packages": package_versions(), "code_sha256": code_sha256()}
    atomic_write_json(out, stamp)
    return stamp
