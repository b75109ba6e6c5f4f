"""The host's end of the serial link (pyserial), and thriftpy2 clients that call over it.

One request in flight: a call sends its frame and waits for the reply with its sequence number.
Frames that fail their CRC are dropped and counted (board/link.py); a reply with another sequence
number (a duplicate, or the answer to an earlier retry) is dropped and counted. No reply within
`retry_s`: the same frame (same sequence number) is sent again, and the board answers a repeat
from its cache, so nothing runs twice. No reply before the call's deadline: LinkTimeout, naming
the port. Nothing here ever waits without a deadline.
"""

from __future__ import annotations

import io
import random
import time

import serial
from thriftpy2.protocol.binary import TBinaryProtocol
from thriftpy2.protocol.multiplex import TMultiplexedProtocol
from thriftpy2.thrift import TClient

from msdbench import idl
from msdbench.device import bundle

K_REQUEST, K_REPLY = 1, 2


class LinkTimeout(TimeoutError):
    pass


class SerialLink:
    def __init__(self, port: str, deadline_s: float = 10.0, retry_s: float = 1.0):
        self.port = port
        self.deadline_s = deadline_s
        self.retry_s = retry_s
        # Baud rate is meaningless on a pty and on USB CDC; a UART board needs 115200.
        self.ser = serial.Serial(port, baudrate=115200, timeout=0, exclusive=True)
        ns = bundle.namespace()
        self._encode = ns["encode_frame"]
        self.parser = ns["FrameParser"]()
        self.seq = random.randrange(1 << 16)
        self.counts = {"calls": 0, "retries": 0, "stale_replies": 0}

    def stats(self) -> dict:
        return dict(self.counts, bad_frames=self.parser.bad, junk_bytes=self.parser.junk)

    def call(self, payload: bytes, deadline_s: float | None = None,
             retry_s: float | None = None) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        seq = self.seq
        frame = self._encode(seq, K_REQUEST, payload)
        deadline_s = deadline_s or self.deadline_s
        retry_s = retry_s or self.retry_s
        start = time.monotonic()
        deadline = start + deadline_s
        attempts = 1
        self.counts["calls"] += 1
        self.ser.write(frame)
        resend = start + retry_s
        while True:
            got = self.parser.next()
            if got is not None:
                rseq, kind, body = got
                if kind == K_REPLY and rseq == seq:
                    return body
                self.counts["stale_replies"] += 1
                continue
            now = time.monotonic()
            if now >= deadline:
                raise LinkTimeout(
                    f"serial port {self.port}: no reply within the call's deadline of {deadline_s} s "
                    f"({attempts} attempt(s); link: {self.stats()})")
            if now >= resend:
                attempts += 1
                self.counts["retries"] += 1
                self.ser.write(frame)
                resend = now + retry_s
            self.ser.timeout = max(0.0, min(deadline, resend) - now)
            data = self.ser.read(max(1, self.ser.in_waiting))
            if data:
                self.parser.feed(data)

    def close(self) -> None:
        self.ser.close()


class _LinkTransport:
    """What a thriftpy2 protocol reads and writes: a message out on flush, its reply in."""

    def __init__(self, link: SerialLink, deadline_s=None, retry_s=None):
        self.link, self.deadline_s, self.retry_s = link, deadline_s, retry_s
        self._out = bytearray()
        self._in = io.BytesIO()

    def write(self, data):
        self._out += data

    def flush(self):
        out, self._out = bytes(self._out), bytearray()
        self._in = io.BytesIO(self.link.call(out, self.deadline_s, self.retry_s))

    def read(self, n):
        data = self._in.read(n)
        if len(data) != n:
            raise EOFError(f"serial port {self.link.port}: reply ended {n - len(data)} bytes early")
        return data

    def close(self):
        pass


def client(link: SerialLink, idl_name: str, service: str, target: str,
           deadline_s: float | None = None, retry_s: float | None = None):
    """A thriftpy2 client of `service` (in `<idl_name>.thrift`) for the board's `target`."""
    proto = TMultiplexedProtocol(TBinaryProtocol(_LinkTransport(link, deadline_s, retry_s)), target)
    c = TClient(getattr(idl.load(idl_name), service), proto)
    c.close = lambda: None
    return c
