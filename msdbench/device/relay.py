"""A link process between the host and a board: `python -m msdbench.device.relay --board PORT`.

It opens the board's serial port, makes a pty of its own, prints `MSDBENCH-RELAY <pty path>`, and
relays bytes both ways until either side closes or it is signalled:

- `--rate-bps R` paces each direction at R bit/s (the paper's 802.15.4 radio: 250,000): a byte
  leaves no earlier than the line could have carried it, so a frame of n bytes takes n*8/R
  seconds, as on the radio (its per-packet MAC overhead is not modelled).
- `--corrupt N`, `--truncate N`, `--duplicate N` damage every Nth frame (each direction counted on
  its own): one payload byte flipped, the frame's last 3 bytes dropped, the frame sent twice.
  What was injected goes to `--stats FILE` (JSON), rewritten after each injection, so a test
  compares it with what both ends counted.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import termios
import time
import tty
from collections import deque

from msdbench.device import bundle
from msdbench.lifetime import die_with_parent

READY_LINE = "MSDBENCH-RELAY"
PIECE = 16  # bytes released at a time when pacing (0.5 ms at 250 kbit/s)


class Direction:
    def __init__(self, name, src, dst, rate_bps, faults, stats):
        self.name, self.src, self.dst = name, src, dst
        self.rate = rate_bps
        self.faults = faults          # {"corrupt": N, ...}: every Nth frame
        self.stats = stats
        self.queue = deque()          # (release time, bytes)
        self.line_free = 0.0
        self.frames = 0
        self.parser = bundle.namespace()["FrameParser"]() if any(faults.values()) else None

    def take(self, data: bytes, now: float) -> None:
        if self.parser is None:
            self._send(data, now)
            return
        self.parser.feed(data)
        encode = bundle.namespace()["encode_frame"]
        while (frame := self.parser.next()) is not None:
            raw = encode(*frame)
            self.frames += 1
            out = [raw]
            for fault, every in self.faults.items():
                if every and self.frames % every == 0:
                    self.stats[f"{self.name}_{fault}"] = self.stats.get(f"{self.name}_{fault}", 0) + 1
                    if fault == "corrupt":
                        i = len(raw) - 6 if len(raw) > 15 else 4
                        out = [raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:]]
                    elif fault == "truncate":
                        out = [raw[:-3]]
                    elif fault == "duplicate":
                        out = [raw, raw]
                    self.stats["changed"] = True
                    break
            for piece in out:
                self._send(piece, now)

    def _send(self, data: bytes, now: float) -> None:
        if not self.rate:
            self.queue.append((now, data))
            return
        for i in range(0, len(data), PIECE):
            piece = data[i:i + PIECE]
            self.line_free = max(now, self.line_free) + len(piece) * 8 / self.rate
            self.queue.append((self.line_free, piece))

    def flush_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            os.write(self.dst, self.queue.popleft()[1])

    def next_due(self) -> float | None:
        return self.queue[0][0] if self.queue else None


def _raw(fd: int) -> None:
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--board", required=True, help="the board's serial port")
    p.add_argument("--rate-bps", type=float, default=0, help="pace each direction (0: no pacing)")
    for fault in ("corrupt", "truncate", "duplicate"):
        p.add_argument(f"--{fault}", type=int, default=0, metavar="N", help=f"{fault} every Nth frame")
    p.add_argument("--stats", help="write the injected faults here (JSON)")
    a = p.parse_args(argv)
    die_with_parent(os.getppid())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    board = os.open(a.board, os.O_RDWR | os.O_NOCTTY)
    _raw(board)
    master, slave = os.openpty()
    _raw(slave)
    print(f"{READY_LINE} {os.ttyname(slave)}", flush=True)
    stats = {}
    faults = {"corrupt": a.corrupt, "truncate": a.truncate, "duplicate": a.duplicate}
    up = Direction("to_board", master, board, a.rate_bps, faults, stats)
    down = Direction("to_host", board, master, a.rate_bps, faults, stats)
    by_src = {master: up, board: down}
    try:
        while True:
            now = time.monotonic()
            dues = [d for d in (x.next_due() for x in (up, down)) if d is not None]
            timeout = max(0.0, min(dues) - now) if dues else None
            ready, _, _ = select.select([master, board], [], [], timeout)
            now = time.monotonic()
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:   # the host closed its end of the pty: nothing more to relay
                    data = b""
                if not data:
                    if fd == board:
                        return 0
                    continue      # no host on the pty (yet, or between sessions)
                by_src[fd].take(data, now)
            for d in (up, down):
                d.flush_due(now)
            if a.stats and stats.pop("changed", False):
                tmp = a.stats + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(stats, f)
                os.replace(tmp, a.stats)
    finally:
        os.close(slave)
        os.close(master)
        os.close(board)


if __name__ == "__main__":
    sys.exit(main())
