"""Boards: where the board program runs, and the serial port that reaches it.

- `serial`: a real MicroPython board on a serial port (`device: {board: serial, port: ...}`);
  the program is deployed with `mpremote run --no-follow`.
- `emulated`: MicroPython's qemu port (board MPS2_AN385) in qemu-system-arm with its UART on a
  pty, driven exactly like a real board (mpremote, then the link).
- `unix`: MicroPython's unix port with its stdin/stdout on a pty: a fast stand-in for tests.

Every process started here dies with the harness (PR_SET_PDEATHSIG) and is ended by `stop()`.
"""

from __future__ import annotations

import functools
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from msdbench.device import bundle, firmware
from msdbench.lifetime import die_with_parent, end_group, exit_status

BOARDS = ("emulated", "serial", "unix")
START_TIMEOUT_S = 20.0
QEMU = "qemu-system-arm"
PTY_LINE = re.compile(r"char device redirected to (\S+)")


class BoardError(RuntimeError):
    pass


def _spawn(cmd, log_path: Path, **kw) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stderr=log, start_new_session=True,
                                preexec_fn=functools.partial(die_with_parent, os.getpid()), **kw)
    finally:
        log.close()


def _end(proc: subprocess.Popen | None) -> None:
    end_group(proc)   # also a stopped board (a test's fault)


def _read_line(proc: subprocess.Popen, stream, pattern, what: str, log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline().decode(errors="replace")
            seen.append(line)
            m = pattern.search(line)
            if m:
                return m.group(1)
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    status = exit_status(proc.poll()) or f"nothing within {START_TIMEOUT_S:.0f} s"
    _end(proc)
    log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise BoardError(f"{what} did not start ({status}): {''.join(seen)[-500:]}{log}")


def mpremote_run(port: str, script: Path, log_path: Path) -> None:
    """Send the board program with mpremote (the MicroPython project's tool); it keeps running."""
    cmd = [sys.executable, "-m", "mpremote", "connect", port, "run", "--no-follow", str(script)]
    with open(log_path, "ab") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=60)
    if r.returncode:
        raise BoardError(f"mpremote could not run the board program on {port} (exit {r.returncode}): "
                         f"{log_path.read_text(errors='replace')[-800:]}")


class Board:
    kind = "abstract"

    def __init__(self, settings: dict, workdir: Path):
        self.settings = settings
        self.workdir = workdir
        self.port: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"board-{self.kind}.log"

    def unavailable_reason(self) -> str | None:
        return None

    def start(self) -> str:
        """Start the board with the program running; returns its serial port."""
        raise NotImplementedError

    def alive(self) -> str | None:
        """None while it runs, else how it ended."""
        return exit_status(self.proc.poll()) if self.proc else None

    def stop(self) -> None:
        _end(self.proc)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def describe(self) -> dict:
        return {"board": self.kind, "port": self.port}

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class UnixBoard(Board):
    kind = "unix"

    def start(self) -> str:
        built = firmware.build(("unix",), self.settings.get("source"))
        self.firmware = built
        master, slave = os.openpty()
        self.port = os.ttyname(slave)
        script = bundle.write(self.workdir)
        # The host opens the pty's slave side like any serial port; the program owns the master.
        self.proc = _spawn([built["unix"], str(script)], self.log_path, stdin=master, stdout=master)
        os.close(master)
        self._slave = slave  # held until stop(): the pty lives while the host reconnects
        return self.port

    def stop(self) -> None:
        super().stop()
        if getattr(self, "_slave", None) is not None:
            os.close(self._slave)
            self._slave = None

    def describe(self) -> dict:
        return {"board": "unix", "port": self.port, "label": "MicroPython unix port (stand-in)",
                "firmware": self.firmware}


class EmulatedBoard(Board):
    kind = "emulated"

    def unavailable_reason(self) -> str | None:
        if not _which(QEMU):
            return f"{QEMU} is not installed (Debian: apt-get install qemu-system-arm)"
        return None

    def emulation(self) -> dict:
        icount = self.settings.get("icount")
        align = "on" if self.settings.get("icount_align", True) else "off"
        return {"machine": "mps2-an385", "cpu": "cortex-m3", "accel": "tcg",
                "icount": None if icount is None else f"shift={icount},align={align},sleep=on"}

    def start(self) -> str:
        built = firmware.build(("qemu",), self.settings.get("source"))
        self.firmware = built
        cmd = [QEMU, "-machine", "mps2-an385", "-nographic", "-monitor", "null", "-semihosting",
               "-serial", "pty", "-kernel", built["qemu"]]
        if self.emulation()["icount"]:
            cmd += ["-icount", self.emulation()["icount"]]
        self.proc = _spawn(cmd, self.log_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.port = _read_line(self.proc, self.proc.stdout, PTY_LINE, "qemu-system-arm",
                               self.log_path)
        mpremote_run(self.port, bundle.write(self.workdir), self.log_path)
        return self.port

    def describe(self) -> dict:
        return {"board": "emulated", "port": self.port, "label": "emulated board (QEMU MPS2-AN385)",
                "emulation": self.emulation(), "firmware": self.firmware}


class SerialBoard(Board):
    kind = "serial"

    def unavailable_reason(self) -> str | None:
        port = self.settings.get("port")
        if not port:
            return "device.port is not set (the serial port of a MicroPython board, e.g. /dev/ttyACM0)"
        if not os.path.exists(_port_path(port)):
            return f"serial port {_port_path(port)} does not exist (no board connected?)"
        return None

    def start(self) -> str:
        self.port = _port_path(self.settings["port"])
        mpremote_run(self.port, bundle.write(self.workdir), self.log_path)
        return self.port

    def describe(self) -> dict:
        return {"board": "serial", "port": self.port, "label": self.settings.get("label")
                or f"board on {self.port}"}


def _port_path(port: str) -> str:
    return port if port.startswith("/") else f"/dev/{port}"


def _which(name: str) -> bool:
    return any(os.access(os.path.join(d, name), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep))


def make_board(settings: dict, workdir: Path) -> Board:
    kind = settings.get("board", "emulated")
    cls = {"emulated": EmulatedBoard, "serial": SerialBoard, "unix": UnixBoard}.get(kind)
    if cls is None:
        raise BoardError(f"device.board: {kind!r} is not one of {', '.join(map(repr, BOARDS))}")
    return cls(settings, workdir)
