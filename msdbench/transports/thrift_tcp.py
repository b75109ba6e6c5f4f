"""Thrift RPC over TCP: the `linux` platform's transport for every edge (and the control plane).

Wire format: Thrift binary protocol over a TCP stream (see README, "Wire format"). The server
detects per connection what a peer speaks: buffered (unframed) or framed (a 4-byte big-endian
length before each message), strict or non-strict binary; it answers strict, framed when asked
framed. Our client speaks buffered strict, as thriftpy2 and Apache Thrift do by default.

Both sides use the per-method codec generated from the IDL (`codec.py`): one recv_into a
preallocated buffer and one send per message on each side, no struct objects on the hot path, no
socket timeout on the measured path (a timeout makes CPython poll() before every recv; callers
bound a whole run with `deadline.Deadline`, which shuts the sockets down when it expires).

Server: one epoll loop per service, no thread per connection (an idle connection costs a socket
and a small buffer). `threads=1` (every service but one that forwards to several callees) serves
in the loop's thread itself: the thread that wakes on a readable socket decodes, runs the
handler, and sends, with no hand-off between threads. `threads=N` runs N such loops on one epoll
with one-shot readiness (a connection is served by one thread at a time, N calls at once): the
load balancer needs that, so that calls to different workers overlap as with a thread per
connection. Limits (codec.Limits) are enforced before anything is allocated: a violating peer gets
a TApplicationException when its message header was readable, its connection is closed, and the
service logs one line with the peer's address and the reason; other connections never wait for
it. At most `max_connections` at once; one more is told so and closed.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading
import time

from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TTransportException

from msdbench.transports import codec as _codec
from msdbench.transports.codec import (CALL, DEFAULT_LIMITS, ONEWAY, Incomplete, Limits,
                                       WireError, positional, read_header, service_codec, skip)

DEFAULT_MAX_CONNECTIONS = 1024
RECV_SIZE = 64 * 1024      # a connection's buffer to start with, and what it shrinks back to
KEEP_SIZE = 1 << 20        # a buffer grown up to this stays (a 64 KiB list call every time must not
                           # cost an mmap/munmap pair per call); a larger one shrinks after use
_EPOLLIN, _EPOLLOUT, _ONESHOT = select.EPOLLIN, select.EPOLLOUT, select.EPOLLONESHOT
_STRUCT = 12


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def log(service: str, peer, reason: str) -> None:
    """The one line a service writes about a misbehaving peer (no traceback)."""
    host, port = (peer[0], peer[1]) if isinstance(peer, tuple) else (peer, "")
    print(f"msdbench wire: {service}: peer {host}:{port}: {reason}", file=sys.stderr, flush=True)


class _Conn:
    __slots__ = ("sock", "fd", "peer", "buf", "have", "framed", "pending")

    def __init__(self, sock: socket.socket, peer):
        self.sock, self.fd, self.peer = sock, sock.fileno(), peer
        self.buf = bytearray(RECV_SIZE)
        self.have = 0
        self.framed: bool | None = None  # decided by the first message
        self.pending = b""               # reply bytes the socket did not take yet


class ThriftServer:
    """One service handler on one listening socket, served by an epoll loop (see module doc).

    Bound and listening from the constructor on; connections wait in the backlog until
    `start(handler)`, so peers may connect before this side's handler exists (two-phase bring-up).
    """

    def __init__(self, thrift_service, host: str = "127.0.0.1", port: int = 0, *,
                 limits: Limits = DEFAULT_LIMITS, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 threads: int = 1):
        self.thrift_service = thrift_service
        self.name = thrift_service.__name__
        self.codec = service_codec(thrift_service, limits)
        self.limits = limits
        self.max_connections = max_connections
        self.threads = threads
        self.handler = None
        self.listener = socket.create_server((host, port), backlog=128, reuse_port=False)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()[:2]
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._ep = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._table: dict[bytes, tuple] = {}
        self._threads: list[threading.Thread] = []

    def start(self, handler) -> "ThriftServer":
        self.handler = handler
        self._table = {wire: (m, getattr(handler, m.name)) for wire, m in
                       self.codec.by_wire.items()}
        self._flags = _EPOLLIN | (_ONESHOT if self.threads > 1 else 0)
        self._ep.register(self._wake_r, _EPOLLIN)  # level-triggered: wakes every loop at close
        self._ep.register(self.listener.fileno(), self._flags)
        loop = self._compiled_loop if _codec.compiled is not None else self._loop
        self._threads = [threading.Thread(target=loop, daemon=True,
                                          name=f"serve:{self.name}:{self.address[1]}:{i}")
                         for i in range(self.threads)]
        for t in self._threads:
            t.start()
        return self

    # -- the loop ---------------------------------------------------------------------------
    def _compiled_loop(self) -> None:
        """The same loop in C (codec.compiled.serve_loop): the common call served without the
        interpreter between the syscalls, the rest through the methods below."""
        _codec.compiled.serve_loop(self, self._ep.fileno(), self.listener.fileno(), self._wake_r,
                                   1 if self.threads > 1 else 64, self._table,
                                   self._flags if self.threads > 1 else 0)

    def _loop(self) -> None:
        poll, conns, lfd, wake = self._ep.poll, self._conns, self.listener.fileno(), self._wake_r
        maxevents = 1 if self.threads > 1 else 64
        readable, writable = self._readable, self._writable
        while True:
            try:
                events = poll(-1, maxevents)
            except OSError:
                return
            for fd, ev in events:
                if fd == wake:
                    return
                if fd == lfd:
                    self._accept()
                    continue
                c = conns.get(fd)
                if c is None:
                    continue
                try:
                    if ev & _EPOLLOUT:
                        writable(c)
                    else:
                        readable(c)
                except Exception as e:  # a bug here must not end the loop for everyone
                    self._drop(c, f"internal error: {type(e).__name__}: {e}")

    def _rearm(self, c: _Conn, flags: int) -> None:
        try:
            self._ep.modify(c.fd, flags)
        except (OSError, ValueError):
            pass  # closed meanwhile

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return  # closed
            _tune(sock)
            sock.setblocking(False)
            with self._lock:
                full = len(self._conns) >= self.max_connections
                if not full:
                    c = self._conns[sock.fileno()] = _Conn(sock, peer)
            if full:
                reason = (f"refused: {self.max_connections} connections open "
                          f"(max_connections={self.max_connections})")
                log(self.name, peer, reason)
                o = bytearray()
                self.codec.encode_app_exception(o, b"", 0, TApplicationException(
                    TApplicationException.INTERNAL_ERROR, f"{self.name} {reason}"))
                try:
                    sock.send(o)
                except OSError:
                    pass
                sock.close()
                continue
            self._ep.register(c.fd, self._flags)
        if self.threads > 1 and not self._closed:
            self._rearm_listener()

    def _rearm_listener(self) -> None:
        try:
            self._ep.modify(self.listener.fileno(), self._flags)
        except (OSError, ValueError):
            pass

    def _drop(self, c: _Conn, reason: str | None = None) -> None:
        if reason:
            log(self.name, c.peer, reason + "; connection closed")
        with self._lock:
            if self._conns.pop(c.fd, None) is None:
                return
        try:
            self._ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        c.sock.close()
        c.buf = bytearray()

    def _readable(self, c: _Conn) -> None:
        buf = c.buf
        try:
            n = c.sock.recv_into(memoryview(buf)[c.have:])
        except (BlockingIOError, InterruptedError):
            n = -1
        except OSError:
            return self._drop(c)
        if not n:
            return self._drop(c)
        if n > 0:
            c.have += n
            if c.framed is False and not c.pending and self._serve_one(c):
                return
        self._after_read(c, n > 0)

    def _serve_one(self, c: _Conn) -> bool:
        """The common case, as the compiled loop serves it: the buffer holds exactly one whole
        unframed call of a known method. False (nothing done) for anything else."""
        b, have, lim = c.buf, c.have, self.limits.max_message_bytes
        try:
            name, mtype, seqid, q = read_header(b, 0, have, lim)
            m, fn = self._table[name]
            args, q = m.decode_args(b, q, have, lim)
        except (Incomplete, WireError, KeyError):
            return False  # _process parses it again and says what is wrong
        if q != have or mtype != CALL:
            return False
        c.have = 0
        try:
            reply = self._call(m, fn, args, seqid)
        except _Broken:
            self._drop(c)
            return True
        if reply is not None:
            self._send(c, reply)
        if c.pending:
            self._rearm(c, _EPOLLOUT | (_ONESHOT if self.threads > 1 else 0))
        elif self.threads > 1:
            self._rearm(c, self._flags)
        return True

    def _after_read(self, c: _Conn, got: bool) -> None:
        """Serve what arrived, then wait for the socket again (for reading, or for writing while
        a reply is still pending)."""
        if got and not self._process(c):
            return
        if c.pending:
            self._rearm(c, _EPOLLOUT | (_ONESHOT if self.threads > 1 else 0))
        elif self.threads > 1:
            self._rearm(c, self._flags)

    def _writable(self, c: _Conn) -> None:
        try:
            n = c.sock.send(c.pending)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return self._drop(c)
        c.pending = c.pending[n:]
        if c.pending:
            self._rearm(c, _EPOLLOUT | (_ONESHOT if self.threads > 1 else 0))
            return
        self._rearm(c, self._flags)
        if c.have and self._process(c) and c.pending:  # requests that came meanwhile
            self._rearm(c, _EPOLLOUT | (_ONESHOT if self.threads > 1 else 0))

    def _process(self, c: _Conn) -> bool:
        """Serve every complete message in the buffer. False when the connection was dropped."""
        b, have, p, lim_bytes = c.buf, c.have, 0, self.limits.max_message_bytes
        table = self._table
        while p < have and not c.pending:
            try:
                framed = c.framed
                if framed is None:
                    framed = c.framed = self._detect(b, p, have)
                if framed:
                    if have - p < 4:
                        raise Incomplete(p + 4)
                    size = int.from_bytes(b[p:p + 4], "big", signed=True)
                    if size <= 0 or size > lim_bytes:
                        raise WireError(f"frame of {size} bytes (max_message_bytes={lim_bytes})",
                                        limit=size > 0)
                    start, end = p + 4, p + 4 + size
                    if end > have:
                        raise Incomplete(end)
                    lim = end
                else:
                    start, end, lim = p, have, p + lim_bytes
                name, mtype, seqid, q = read_header(b, start, end, lim)
                entry = table.get(name)
                if entry is None:
                    q = skip(b, q, end, lim, _STRUCT, 0, self.limits)
                    reply = bytearray()
                    self.codec.encode_app_exception(reply, name, seqid, TApplicationException(
                        TApplicationException.UNKNOWN_METHOD,
                        f"{self.name} has no method {name.decode('utf-8', 'replace')!r}"))
                else:
                    if mtype != CALL and mtype != ONEWAY:
                        raise WireError(f"message type {mtype} where a call was expected")
                    m, fn = entry
                    try:
                        args, q = m.decode_args(b, q, end, lim)
                    except WireError as e:
                        e.header = (m.name, seqid)
                        raise
                    reply = self._call(m, fn, args, seqid)
                if framed and q != end:
                    raise WireError(f"frame of {end - start} bytes holds a message of {q - start}")
                p = q
            except Incomplete as e:
                if e.need - p > lim_bytes + 4:
                    return self._violation(c, WireError(
                        f"message exceeds max_message_bytes={lim_bytes}", limit=True))
                self._make_room(c, p, e.need)
                return True
            except WireError as e:
                return self._violation(c, e)
            except _Broken:
                self._drop(c)
                return False
            if reply is not None:
                if framed:
                    reply[0:0] = len(reply).to_bytes(4, "big")
                self._send(c, reply)
        self._make_room(c, p, 0)
        return True

    def _make_room(self, c: _Conn, p: int, need: int) -> None:
        """Drop the consumed bytes [0:p]; make the buffer larger when it is full and the message
        needs more (at most twice its size: memory follows the bytes that really arrived, never
        a declared length), or shrink it back after a large message."""
        left = c.have - p
        size = len(c.buf)
        if left >= size and need - p > size:
            new = bytearray(min(need - p, 2 * size))
        elif size > KEEP_SIZE and max(need - p, left) <= RECV_SIZE:
            new = bytearray(RECV_SIZE)
        else:
            new = None
        if new is not None:
            new[:left] = c.buf[p:c.have]
            c.buf = new
        elif p and left:
            c.buf[:left] = c.buf[p:c.have]
        c.have = left

    def _send(self, c: _Conn, data: bytearray) -> None:
        try:
            n = c.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = len(data)  # the peer is gone: the next read says so
        if n < len(data):
            c.pending = bytes(data[n:])

    def _call(self, m, fn, args, seqid: int):
        """Run the handler: the reply message, or None for a oneway call."""
        try:
            value = fn(*args)
        except Exception as e:
            return self._error_reply(m, seqid, e)
        if m.oneway:
            return None
        reply = bytearray()
        m.encode_reply(reply, seqid, value)
        return reply

    def _error_reply(self, m, seqid: int, e: Exception):
        if isinstance(e, _TRANSPORT_FAILURES):
            # A callee's connection broke (a peer died): drop ours too, so the failure travels
            # up to the client as a broken call and ends the cell, as on every platform.
            raise _Broken() from e
        return None if m.oneway else self.codec.error_reply(m, seqid, e)

    def _sent_partly(self, c: _Conn, data: bytearray, n: int) -> None:
        """The compiled loop's send took `n` bytes of a reply (n < 0: none, or the socket failed):
        the rest waits until the socket takes it (or says it is broken)."""
        c.pending = bytes(data[max(n, 0):])
        self._after_read(c, False)

    def _handler_failed(self, c: _Conn, m, seqid: int, e: Exception) -> None:
        """The compiled fast path's handler raised `e`: answer as `_call` would, or drop."""
        try:
            reply = self._error_reply(m, seqid, e)
        except _Broken:
            return self._drop(c)
        if reply is not None:
            self._send(c, reply)
        self._after_read(c, False)

    def _detect(self, b, p: int, have: int) -> bool:
        """Framed or not, from a connection's first bytes (as Apache Thrift servers can)."""
        if have - p < 1:
            raise Incomplete(p + 1)
        if b[p] == 0x80:
            return False  # strict binary, unframed
        if have - p < 8:
            raise Incomplete(p + 8)
        if b[p + 4] == 0x80 and b[p + 5] == 0x01:
            return True   # a frame length, then strict binary
        n = int.from_bytes(b[p:p + 4], "big", signed=True)
        if 0 < n <= 1024:
            if have - p < 4 + n:
                raise Incomplete(p + 4 + n)
            if bytes(b[p + 4:p + 4 + n]) in self._table:
                return False  # non-strict binary, unframed
        return True

    def _violation(self, c: _Conn, e: WireError) -> bool:
        if e.header is not None:
            o = bytearray()
            name, seqid = e.header
            self.codec.encode_app_exception(o, name, seqid, TApplicationException(
                TApplicationException.PROTOCOL_ERROR, e.reason))
            if c.framed:
                o[0:0] = len(o).to_bytes(4, "big")
            try:
                c.sock.send(o)
            except OSError:
                pass
        self._drop(c, e.reason)
        return False

    def close(self, timeout: float = 1.0) -> None:
        """Stop serving: wake every loop, close the listener and every connection. Waits up to
        `timeout` for the loops (a handler still running, e.g. stuck, is left to its daemon
        thread, and then the loop's descriptors are left open for it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        others = [t for t in self._threads if t is not threading.current_thread()]
        for t in others:
            t.join(max(0.0, deadline - time.monotonic()))
        if len(others) < len(self._threads) or any(t.is_alive() for t in others):
            return
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.sock.close()
        self._ep.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def n_connections(self) -> int:
        return len(self._conns)


class _Broken(Exception):
    """The handler met a broken connection further down: drop this one."""


_TRANSPORT_FAILURES = (OSError, TTransportException)
try:  # shm's failures are transport failures too (its RemoteError is not an OSError)
    from msdbench.transports.shm import RemoteError as _RemoteError

    _TRANSPORT_FAILURES += (_RemoteError,)
except ImportError:  # pragma: no cover
    pass


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _client_method(codec, m, sock: socket.socket, state: list):
    """One IDL method as a plain function over `sock`: encode, one sendall, recv until the reply
    decodes, the value or the declared exception. `state` = [buffer] shared by the methods."""
    encode_call, decode_result = m.encode_call, m.decode_result
    sendall, recv_into = sock.sendall, sock.recv_into
    prefix = m.reply_prefix
    plen = len(prefix) + 4
    nargs, oneway, name = m.nargs, m.oneway, m.name
    lim = codec.limits.max_message_bytes

    def call(*a, **kw):
        if kw or len(a) != nargs:
            a = positional(m, a, kw)
        o = bytearray()
        encode_call(o, *a)
        sendall(o)
        if oneway:
            return None
        buf = state[0]
        have = recv_into(buf)
        while True:
            if not have:
                raise TTransportException(TTransportException.END_OF_FILE,
                                          "peer closed the connection")
            try:
                if buf[:plen - 4] == prefix:
                    return decode_result(buf, plen, have, lim)[0]
                return codec.unusual_reply(name, buf, have, lim)
            except Incomplete as e:
                if have == len(buf):  # full: grow with what arrives, at most twice
                    if e.need > lim + 4:
                        raise TTransportException(TTransportException.UNKNOWN,
                                                  f"{name}: reply exceeds {lim} bytes")
                    new = bytearray(min(e.need, 2 * len(buf)))
                    new[:have] = buf[:have]
                    buf = state[0] = new
                n = recv_into(memoryview(buf)[have:])
                have = have + n if n else 0

    call.__name__ = call.__qualname__ = name
    return call


class ThriftClient:
    """The IDL methods of one service over one persistent TCP connection (not thread-safe: one
    caller at a time). `sock` is kept so a Deadline can cut a blocked call."""

    def __init__(self, thrift_service, host: str, port: int, connect_timeout: float = 10.0,
                 timeout: float | None = None, *, limits: Limits = DEFAULT_LIMITS):
        raw = socket.create_connection((host, port), timeout=connect_timeout)
        _tune(raw)
        raw.settimeout(timeout)  # None on measured paths; the control plane sets one
        self.sock = raw
        codec = service_codec(thrift_service, limits)
        state = [bytearray(RECV_SIZE)]
        fast = _codec.compiled if timeout is None else None  # compiled: blocking sockets only
        for name, m in codec.methods.items():
            setattr(self, name, fast.TcpMethod(codec, m, raw, state, positional) if fast
                    else _client_method(codec, m, raw, state))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


from msdbench.transports.deadline import Deadline  # noqa: E402,F401  (its old home)
