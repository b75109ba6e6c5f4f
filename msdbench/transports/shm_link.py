"""The shared-memory channel's wire: a slot's layout and headers, one side of a slot (`_Link`:
post, wait, send, receive in chunks), errors as they cross, and the setup socket's messages.
The design is in msdbench/transports/shm.py."""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import time
import traceback

PREFIX = "msdbench"
PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 31  # a header announcing more than this is a protocol violation

# Layout of a client's segment: the client's header, the server's header (each on its own cache
# line), then the data area, which the two sides use in turn (a call is strictly request, reply).
_OFF_CLIENT = 0
_OFF_SERVER = 64
_DATA = 128
# total length, this chunk's length, kind, sequence number. Native mode: aligned fields, and the
# sequence number is written last, with one 4-byte store (spinning readers rely on both).
_HDR = struct.Struct("@QQII")
_SEQ_AT = 20
_SEQ = struct.Struct("@I")
assert _HDR.size == 24 and _SEQ_AT + _SEQ.size == _HDR.size

K_REQUEST = 1
K_REPLY = 2
K_ERROR = 3
K_ACK = 4  # "chunk copied, send the next"

_HELLO = struct.Struct("!4sHHI")  # magic, version, flags, pid
_MAGIC = b"MSDB"
_LEN = struct.Struct("!I")

_now = time.perf_counter_ns
_efd_read = os.eventfd_read
_efd_write = os.eventfd_write


class PeerDied(ConnectionError):
    """The other end of the channel is gone (its process died, or the link was shut down)."""


class RemoteError(RuntimeError):
    """The server's handler raised: its exception type, message and traceback, as text."""

    def __init__(self, remote_type: str, message: str, remote_traceback: str = ""):
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback


def _prefix(name_prefix: str | None) -> str:
    if not name_prefix:
        return PREFIX
    return name_prefix if name_prefix.startswith(PREFIX) else f"{PREFIX}-{name_prefix}"


class _Link:
    """One side of one client's slot: post a header and wake the peer, wait for the peer's."""

    __slots__ = ("mm", "mv", "slot", "tx_off", "rx_off", "tx_fd", "rx_fd", "tx_seq", "rx_seq",
                 "spin_ns", "dead", "why", "max_message")

    def __init__(self, mm: mmap.mmap, slot: int, tx_off: int, rx_off: int, tx_fd: int, rx_fd: int,
                 spin_us: float):
        self.mm = mm
        self.mv = memoryview(mm)
        self.slot = slot
        self.tx_off, self.rx_off = tx_off, rx_off
        self.tx_fd, self.rx_fd = tx_fd, rx_fd
        self.tx_seq = self.rx_seq = 0
        self.spin_ns = int(spin_us * 1000)
        self.dead = False  # set (then rx_fd written) by whoever learns the peer is gone
        self.why = "peer gone"
        self.max_message = MAX_MESSAGE  # a server lowers it to its limit (checked before allocating)

    def post(self, kind: int, total: int, chunk: int) -> None:
        # Sequence numbers run 1..2**32-1: pack_into zero-fills the header before writing it, so a
        # spinning reader must never wait for 0.
        s = self.tx_seq + 1
        if s > 0xFFFFFFFF:
            s = 1
        self.tx_seq = s
        _HDR.pack_into(self.mm, self.tx_off, total, chunk, kind, s)
        _efd_write(self.tx_fd, 1)

    def wait(self) -> tuple[int, int, int, int]:
        """The peer's next header: (total, chunk, kind, seq). Raises PeerDied."""
        want = self.rx_seq + 1
        if want > 0xFFFFFFFF:
            want = 1
        mm, off = self.mm, self.rx_off
        if self.spin_ns:
            seq_at, end = off + _SEQ_AT, _now() + self.spin_ns
            while _SEQ.unpack_from(mm, seq_at)[0] != want:
                if _now() > end:
                    break
            else:
                # The peer's eventfd write for this message is left pending: the next blocking
                # wait reads it, finds no new sequence number and blocks again (one extra read).
                self.rx_seq = want
                return _HDR.unpack_from(mm, off)
        while True:
            if self.dead:
                h = _HDR.unpack_from(mm, off)
                if h[3] == want:  # it answered, then died: the answer is whole, take it
                    self.rx_seq = want
                    return h
                raise PeerDied(self.why)
            _efd_read(self.rx_fd)
            h = _HDR.unpack_from(mm, off)
            if h[3] == want:
                self.rx_seq = want
                return h
            # a wake-up for a death or close, or a stale count left by a spin: look again

    def violation(self, what: str) -> PeerDied:
        self.dead = True
        self.why = f"protocol violation by the peer: {what}"
        return PeerDied(self.why)

    def send(self, kind: int, data) -> None:
        """Copy `data` (bytes or a byte-format memoryview) to the peer, in chunks if it must."""
        n = len(data)
        slot = self.slot
        if n <= slot:
            self.mm[_DATA:_DATA + n] = data
            self.post(kind, n, n)
            return
        src, mv, off = memoryview(data), self.mv, 0
        try:
            while True:
                c = min(slot, n - off)
                mv[_DATA:_DATA + c] = src[off:off + c]
                self.post(kind, n, c)
                off += c
                if off >= n:
                    return
                if self.wait()[2] != K_ACK:
                    raise self.violation("expected an ack between chunks")
        finally:
            src.release()

    def recv(self) -> tuple[int, bytes]:
        """The peer's next message, whole: (kind, payload)."""
        return self.take(self.wait())

    def take(self, header: tuple[int, int, int, int]) -> tuple[int, bytes]:
        """The message that `header` (just waited for) starts, whole: (kind, payload)."""
        total, chunk, kind, _ = header
        if total == chunk:
            if chunk > self.slot:
                raise self.violation(f"chunk of {chunk} bytes in a {self.slot}-byte slot")
            return kind, self.mm[_DATA:_DATA + chunk]
        if total > self.max_message:
            raise self.violation(f"message of {total} bytes (at most {self.max_message})")
        out = bytearray(total)
        om, mv, got = memoryview(out), self.mv, 0
        try:
            while True:
                if chunk > self.slot or got + chunk > total or chunk == 0:
                    raise self.violation(f"bad chunk ({chunk} bytes at {got} of {total})")
                om[got:got + chunk] = mv[_DATA:_DATA + chunk]
                got += chunk
                if got == total:
                    break
                self.post(K_ACK, 0, 0)
                total2, chunk, kind2, _ = self.wait()
                if total2 != total or kind2 != kind:
                    raise self.violation("message changed between chunks")
        finally:
            om.release()
        return kind, bytes(out)

    def release(self) -> None:
        self.mv.release()
        self.mm.close()


def _as_bytes(data) -> bytes | memoryview:
    if type(data) is bytes or type(data) is bytearray:
        return data
    mv = memoryview(data)
    if not mv.c_contiguous:
        return mv.tobytes()
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _encode_error(exc: BaseException) -> bytes:
    try:
        message = str(exc)
    except Exception:  # a __str__ that raises
        message = repr(exc)
    return json.dumps({"type": type(exc).__qualname__, "message": message,
                       "traceback": traceback.format_exc()}).encode()


def _decode_error(payload: bytes) -> RemoteError:
    try:
        d = json.loads(payload)
        return RemoteError(d["type"], d["message"], d.get("traceback", ""))
    except Exception:
        return RemoteError("Error", payload.decode("utf-8", "replace"))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("peer closed the socket during the handshake")
        buf += part
    return buf


def _send_json(sock: socket.socket, obj: dict, fds: list[int] = ()) -> None:
    body = json.dumps(obj).encode()
    socket.send_fds(sock, [_LEN.pack(len(body)) + body], list(fds))
