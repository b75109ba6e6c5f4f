"""`msdbench image device` (rule build_image): the firmware the board kind needs, built from the
MicroPython source and cached (firmware.py), and a stamp of what the cells will run: the
firmware, the board program's digest, the emulator's version. A change to any of them changes
the stamp, and so reruns the device cells."""

from __future__ import annotations

import subprocess
from pathlib import Path

from msdbench.device import boards, bundle, firmware
from msdbench.results import atomic_write_json

PACKAGE_DIR = Path(__file__).resolve().parent


def device_files() -> list[Path]:
    """What the board runs and how the host drives it: inputs of the device stamp."""
    return sorted([*PACKAGE_DIR.glob("*.py"), *PACKAGE_DIR.glob("board/*.py"),
                   *(PACKAGE_DIR.parent / "idl").glob("*.thrift")])


def write_stamp(out: str | Path, board: str = "emulated", source: str | None = None) -> dict:
    stamp = {"backend": "device", "board": board, "board_program_sha256": bundle.digest()}
    port = {"emulated": "qemu", "unix": "unix"}.get(board)
    if board == "emulated" and not boards._which(boards.QEMU):
        stamp["unavailable"] = f"{boards.QEMU} is not installed"
    elif port:
        built = firmware.build((port,), source)
        stamp["firmware"] = {"key": built["key"], "source": built["source"], "path": built[port],
                             "build_s": built["build_s"][port]}
        if board == "emulated":
            stamp["qemu"] = subprocess.run([boards.QEMU, "--version"], capture_output=True,
                                           text=True).stdout.splitlines()[0]
    atomic_write_json(out, stamp)
    return stamp
