"""The `board` host kind: a MicroPython board, real (on a serial port) or emulated (QEMU's
MPS2-AN385), or MicroPython's unix port standing in for one (msdbench/device/boards.py).

A board runs no Linux and no Python of ours: only the device backend places domains on it (as
groups of services in the board program, driven over the serial line). Its address is the serial
port the board answers on. An absent port or a missing emulator makes the host unavailable (the
cells are skipped, with the reason)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from msdbench.hosts import Host, HostError, HostUnavailable

BOARD_DEFAULTS = {"board": "emulated", "icount": 4, "icount_align": True}


class BoardHost(Host):
    kind = "board"
    FIELDS = {
        "board": "emulated (qemu-system-arm, MPS2-AN385) | serial (a real board) | unix (a stand-in)",
        "port": "serial: the board's serial port, e.g. /dev/ttyACM0",
        "label": "how tables and figures name the board",
        "source": "MicroPython source for the firmware (a tarball or a git clone)",
        "icount": "emulated: QEMU -icount shift (null: free-running TCG)",
        "icount_align": "emulated: keep board time near real time",
        "address": "the serial port, once up (written by the harness)",
    }

    def __init__(self, name: str, spec: dict):
        super().__init__(name, BOARD_DEFAULTS | dict(spec))
        self.board = None
        self._workdir: str | None = None

    def check_spec(self) -> None:
        from msdbench.device.boards import BOARDS

        if self.spec["board"] not in BOARDS:
            raise HostError(f"{self.field('board')}: {self.spec['board']!r} is not one of "
                            f"{', '.join(map(repr, BOARDS))}")

    def up(self) -> None:
        from msdbench.device.boards import make_board

        self._workdir = tempfile.mkdtemp(prefix="msdbench-board-")
        self.board = make_board(self.spec, Path(self._workdir))
        reason = self.board.unavailable_reason()
        if reason:
            raise HostUnavailable(f"{self.where()}: {reason}")
        self.address = self.board.start()

    def down(self) -> None:
        if self.board is not None:
            self.board.stop()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def command(self, args: list[str]) -> list[str]:
        raise HostError(f"{self.where()}: a board runs MicroPython, not Linux; only the device "
                        "backend places domains on it")

    def facts(self) -> dict:
        info = self.board.describe() if self.board is not None else {}
        return {"kind": self.kind, "address": self.address, **info}
