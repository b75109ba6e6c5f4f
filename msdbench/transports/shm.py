"""A request/response channel between two processes of one host, through shared memory.

The `specialized` platform's binding between isolation domains on one host (the idea of Ambience's
lidl: a protected copy through shared memory instead of a TCP socket). It carries opaque bytes: the
caller sends request bytes and gets reply bytes; serialization is the layer above's job.

How it works
------------
* `ShmServer` listens on a Unix stream socket: its path is the channel's **address** (a plain str,
  e.g. ``/tmp/msdbench-12345-1f2e3d4c.sock``). The socket is used to set a client up and then only
  as a liveness link; no request ever goes through it.
* On connect the server makes, for that client alone, one shared-memory segment (a sealed memfd
  named ``msdbench-...``: a 128-byte header and a ``slot_size`` data area) and two eventfds
  (request-ready, reply-ready), and passes the three descriptors over the socket (SCM_RIGHTS).
  Each client thus has its own slot: concurrent clients never share memory.
* A call: the client copies the request into the slot, writes a header (length, kind, sequence
  number; `struct.pack_into`), and writes the request eventfd; a server thread blocked in a read of
  that eventfd (one thread per client) copies the request out (the protected copy: the handler
  never sees memory the peer can still change), runs the handler, and answers the same way. A
  round trip is two eventfd writes and two blocking eventfd reads, no socket and no poll().
* A message larger than the slot is carried whole in slot-sized chunks, each acknowledged by the
  receiver before the next is written.
* Optional bounded spinning (`spin_us`): before blocking, the waiting side polls the sequence
  number in shared memory. It pays off only when the two ends run on different CPUs; with both ends
  on one CPU it only delays the peer, so the default is off. (Relies on x86-64 store ordering.)

Dead peers: both sides keep the setup socket open. The kernel closes it when a process dies, so a
client-side watchdog thread blocked in ``recv`` sees EOF, marks the link dead and writes the reply
eventfd: a caller blocked in a call wakes at once and gets `PeerDied`. On the server, a selector
over all setup sockets does the same for each client, and the client's thread ends and frees its
slot. (EOF comes when the last copy of the socket closes: a child forked by the dying process and
still alive keeps the link up.)
A peer that is alive but stuck (SIGSTOP, an endless handler) is not detected: bound a whole run by
shutting down `ShmClient.sock` (what `thrift_tcp.Deadline.watch` does); the caller then gets
`PeerDied`.

Why memfds and not `multiprocessing.shared_memory`: the descriptor has to cross the setup socket
anyway (with the eventfds), and a memfd needs no name that a killed process could leave in
/dev/shm, no resource-tracker process, and no shared IPC namespace or /dev/shm between
containers. It is the same kind of memory (shmem pages, mapped MAP_SHARED by both).

Clean-up: nothing is ever named in /dev/shm. The segments are memfds, which exist only as long as
a process maps them or holds their descriptor, so even a SIGKILLed server leaves no shared memory
behind. Only the socket file of a killed server stays (``<socket_dir>/msdbench-*.sock``);
`close()` removes it.

What the environment must give
------------------------------
* Linux (memfd_create, eventfd, SCM_RIGHTS), Python >= 3.10.
* Both processes must reach the socket path: across Docker containers, put the socket in a volume
  mounted in both (``socket_dir=``/``path=``; the address is the path as the *server* sees it,
  so mount it at the same path in both, or translate). No shared IPC namespace and no shared
  /dev/shm are needed: the memory travels as a descriptor, which works across mount, IPC and PID
  namespaces. Docker's default seccomp profile allows memfd_create and eventfd2.
* The client's user must be allowed to connect to the socket (same uid, or loosen its mode).
* Unix socket paths are limited to 107 bytes.
* A `ShmClient` belongs to the process that made it: in a child forked afterwards it refuses to
  call (make a new one there); `close()` in the child does not disturb the parent's link.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import mmap
import os
import secrets
import selectors
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable

__all__ = ["ShmServer", "ShmClient", "PeerDied", "RemoteError", "bench"]

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------- server


class _Conn:
    """A connected client, as the server sees it."""

    __slots__ = ("n", "pid", "sock", "link", "lock", "dropped", "released", "thread")

    def __init__(self, n: int, pid: int, sock: socket.socket, link: _Link):
        self.n, self.pid, self.sock, self.link = n, pid, sock, link
        self.lock = threading.Lock()  # guards rx_fd and sock against being closed while used
        self.dropped = self.released = False
        self.thread: threading.Thread | None = None


class ShmServer:
    """Serves `handler(request: bytes) -> bytes` to clients of other processes.

    The socket is bound and listening when the constructor returns, so `address` can be handed
    out at once. Then either call `serve_forever()` (blocks until `close()` from another thread or
    a signal handler) or `start()` (runs it in a daemon thread and returns self).

    The handler is called from one thread per connected client, so it runs concurrently when
    several clients call at once: it must be thread-safe. An exception in it is sent to the caller
    as `RemoteError`; the server and the client's connection carry on. The handler may return any
    C-contiguous bytes-like object.

    `name_prefix` names the socket file and the segments (``msdbench-`` is put in front when it does
    not start with it). `path` sets the socket path (default: a fresh name in `socket_dir`, default
    the temp dir). `spin_us` > 0 spins that long for the next request before blocking.
    """

    def __init__(self, handler: Callable[[bytes], bytes], name_prefix: str | None = None,
                 slot_size: int = 64 * 1024, max_clients: int = 64, *, path: str | None = None,
                 socket_dir: str | None = None, spin_us: float = 0.0,
                 handshake_timeout: float = 5.0, max_message: int = MAX_MESSAGE):
        if slot_size < 1:
            raise ValueError("slot_size must be positive")
        if max_clients < 1:
            raise ValueError("max_clients must be positive")
        self.handler = handler
        self.prefix = _prefix(name_prefix)
        self.slot_size = slot_size
        self.max_clients = max_clients
        self.max_message = max_message
        self.spin_us = spin_us
        self.handshake_timeout = handshake_timeout
        if path is None:
            path = os.path.join(socket_dir or tempfile.gettempdir(),
                                f"{self.prefix}-{os.getpid()}-{secrets.token_hex(4)}.sock")
        else:
            _remove_stale_socket(path)
        if len(os.fsencode(path)) > 107:
            raise ValueError(f"Unix socket path too long ({len(os.fsencode(path))} > 107): {path}")
        self._path = path
        self._lock = threading.Lock()
        self._clients: dict[int, _Conn] = {}
        self._count = 0
        self._closed = False
        self._serving = False
        self._fds_closed = False
        self._loop_thread: threading.Thread | None = None
        self._loop_done = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(path)
            self._listener.listen(max(16, max_clients))
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake, selectors.EVENT_READ, "wake")

    @property
    def address(self) -> str:
        """The socket path: what a client of any process passes to `ShmClient`."""
        return self._path

    @property
    def n_clients(self) -> int:
        """Clients connected now (a dead client counts until its drop is noticed)."""
        with self._lock:
            return len(self._clients)

    def start(self) -> ShmServer:
        threading.Thread(target=self.serve_forever, name=f"shm-accept:{self._path}",
                         daemon=True).start()
        return self

    def serve_forever(self) -> None:
        with self._lock:
            if self._serving:
                raise RuntimeError("ShmServer is already serving")
            self._serving = True
            self._loop_thread = threading.current_thread()
            if self._closed:
                self._loop_done.set()
                return
        try:
            while not self._closed:
                for key, _ in self._sel.select():
                    what = key.data
                    if what == "accept":
                        self._accept()
                    elif what == "wake":
                        try:
                            _efd_read(self._wake)
                        except BlockingIOError:
                            pass
                    else:
                        self._on_readable(what)
        finally:
            self._loop_done.set()
            if self._closed:
                self._close_descriptors()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            if self._closed:
                return
            raise
        try:
            conn = self._handshake(sock)
        except Exception as e:  # a client that went away or spoke nonsense: only it is refused
            log.debug("shm: handshake failed: %s", e)
            sock.close()
            return
        if conn is None:
            sock.close()
            return
        self._sel.register(sock, selectors.EVENT_READ, conn)
        conn.thread = threading.Thread(target=self._serve_client, args=(conn,),
                                       name=f"shm-client{conn.n}:{conn.pid}", daemon=True)
        conn.thread.start()

    def _handshake(self, sock: socket.socket) -> _Conn | None:
        sock.settimeout(self.handshake_timeout)
        magic, version, _flags, pid = _HELLO.unpack(_recv_exact(sock, _HELLO.size))
        if magic != _MAGIC or version != PROTOCOL_VERSION:
            _send_json(sock, {"error": f"bad hello (magic {magic!r}, version {version})"})
            return None
        with self._lock:
            full = len(self._clients) >= self.max_clients
            self._count += 1
            n = self._count
        if full:
            _send_json(sock, {"error": f"server full ({self.max_clients} clients)"})
            return None
        size = _DATA + self.slot_size
        fds: list[int] = []
        mm = None
        try:
            name = f"{self.prefix}-{os.getpid()}-{n}-{pid}"  # shows in /proc/PID/maps
            memfd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            fds.append(memfd)
            os.ftruncate(memfd, size)
            # Neither side can resize it afterwards (a shrink would SIGBUS the other).
            fcntl.fcntl(memfd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            mm = mmap.mmap(memfd, size)
            fds.append(os.eventfd(0, os.EFD_CLOEXEC))  # request ready (client -> server)
            fds.append(os.eventfd(0, os.EFD_CLOEXEC))  # reply ready (server -> client)
            _send_json(sock, {"version": PROTOCOL_VERSION, "size": size, "slot": self.slot_size,
                              "pid": os.getpid(), "name": name}, fds)
        except BaseException:
            if mm is not None:
                mm.close()
            for fd in fds:
                os.close(fd)
            raise
        os.close(fds[0])  # the mapping keeps the memory
        sock.settimeout(None)
        link = _Link(mm, self.slot_size, _OFF_SERVER, _OFF_CLIENT, tx_fd=fds[2], rx_fd=fds[1],
                     spin_us=self.spin_us)
        link.max_message = self.max_message
        conn = _Conn(n, pid, sock, link)
        with self._lock:
            if self._closed:
                link.release()
                os.close(fds[1])
                os.close(fds[2])
                return None
            self._clients[n] = conn
        return conn

    def _on_readable(self, conn: _Conn) -> None:
        # Clients never write after the handshake: this is EOF (the client closed or died).
        try:
            data = conn.sock.recv(64)
        except OSError:
            data = b""
        if data:
            return
        self._sel.unregister(conn.sock)
        self._drop(conn, f"client pid {conn.pid} gone")
        with conn.lock:
            conn.sock.close()

    def _drop(self, conn: _Conn, why: str) -> None:
        """Mark the client gone, wake its thread, and end the link (the client sees EOF)."""
        with conn.lock:
            if conn.dropped:
                return
            conn.dropped = True
            conn.link.why = why
            conn.link.dead = True
            if not conn.released:
                _efd_write(conn.link.rx_fd, 1)
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve_client(self, conn: _Conn) -> None:
        link, handler = conn.link, self.handler
        mm, slot, rx_fd, tx_fd = link.mm, link.slot, link.rx_fd, link.tx_fd
        unpack_from, pack_into = _HDR.unpack_from, _HDR.pack_into
        why = "client thread ended"
        try:
            while True:
                # The common case inlined (what link.recv and link.send do).
                if link.spin_ns or link.dead:
                    kind, request = link.recv()
                else:
                    _efd_read(rx_fd)
                    h = unpack_from(mm, _OFF_CLIENT)
                    want = link.rx_seq + 1
                    if h[3] != (want if want <= 0xFFFFFFFF else 1):
                        continue  # a wake-up for a death or close: the loop top sees it
                    link.rx_seq = h[3]
                    if h[0] == h[1] and h[1] <= slot:
                        kind, request = h[2], mm[_DATA:_DATA + h[1]]
                    else:
                        kind, request = link.take(h)
                if kind != K_REQUEST:
                    raise link.violation(f"expected a request, got kind {kind}")
                try:
                    reply = handler(request)
                    if type(reply) is not bytes:
                        reply = _as_bytes(reply)
                    kind = K_REPLY
                except Exception as e:
                    reply, kind = _encode_error(e), K_ERROR
                    log.debug("shm: handler raised for client %d", conn.n, exc_info=True)
                n = len(reply)
                if n <= slot:
                    mm[_DATA:_DATA + n] = reply
                    s = link.tx_seq + 1
                    link.tx_seq = s = s if s <= 0xFFFFFFFF else 1
                    pack_into(mm, _OFF_SERVER, n, n, kind, s)
                    _efd_write(tx_fd, 1)
                else:
                    link.send(kind, reply)
        except PeerDied as e:
            why = str(e)
        except BaseException as e:  # a bug here must not leave the client waiting forever
            why = f"server error: {e!r}"
            log.exception("shm: client %d thread failed", conn.n)
        finally:
            self._drop(conn, why)
            with conn.lock:
                conn.released = True
                link.release()
                os.close(link.rx_fd)
                os.close(link.tx_fd)
            with self._lock:
                self._clients.pop(conn.n, None)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every client's link (their calls raise PeerDied), wait up to
        `timeout` for the client threads (a handler still running is left to finish in its
        daemon thread), and remove the socket file. Idempotent; may be called from any thread,
        a handler or a signal handler included."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            serving = self._serving
            clients = list(self._clients.values())
            if not self._fds_closed:
                _efd_write(self._wake, 1)  # under the lock: the loop can't close it meanwhile
        here = threading.current_thread()
        for conn in clients:
            self._drop(conn, "server closed")
        try:
            os.unlink(self._path)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        for conn in clients:
            if conn.thread is not None and conn.thread is not here:
                conn.thread.join(max(0.0, deadline - time.monotonic()))
        if not serving:
            self._close_descriptors()
        elif self._loop_thread is not here:
            self._loop_done.wait(max(0.0, deadline - time.monotonic()))
        # else the loop closes them when it sees _closed (we are a signal handler inside it)

    def _close_descriptors(self) -> None:
        with self._lock:
            if self._fds_closed:
                return
            self._fds_closed = True
        for key in list(self._sel.get_map().values()):
            if isinstance(key.data, _Conn):
                with key.data.lock:
                    key.data.sock.close()
        self._sel.close()
        self._listener.close()
        os.close(self._wake)

    def __enter__(self) -> ShmServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a killed server; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise FileExistsError(f"a server is listening on {path}")


# --------------------------------------------------------------------------------------- client

_live_clients: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for c in list(_live_clients):
        c._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


class ShmClient:
    """One connection (one slot) to a `ShmServer`, possibly of another process.

    `call` is serialized by a lock, so threads may share a client (they take turns); give each
    thread its own client to have calls run in parallel. `connect_timeout` bounds the wait for the
    server's socket to appear and the handshake. `spin_us` > 0 spins that long for the reply
    before blocking (useful only when the server runs on another CPU).

    `sock` is the setup socket: shutting it down (e.g. `thrift_tcp.Deadline.watch(client.sock)`)
    makes a blocked call raise `PeerDied`.
    """

    def __init__(self, address: str, connect_timeout: float = 5.0, *, spin_us: float = 0.0):
        self.address = address
        deadline = time.monotonic() + connect_timeout
        sock = _connect_unix(address, deadline)
        try:
            info, fds = self._handshake(sock, deadline)
        except BaseException:
            sock.close()
            raise
        memfd, req_fd, rep_fd = fds
        try:
            size = int(info["size"])
            if os.fstat(memfd).st_size < size or int(info["slot"]) + _DATA > size:
                raise ConnectionError("shm server sent a segment smaller than announced")
            mm = mmap.mmap(memfd, size)
        except BaseException:
            for fd in fds:
                os.close(fd)
            sock.close()
            raise
        os.close(memfd)
        self.sock = sock
        self.server_pid: int = info["pid"]
        self.slot_size: int = info["slot"]
        self.name: str = info.get("name", "")
        self._link = _Link(mm, self.slot_size, _OFF_CLIENT, _OFF_SERVER, tx_fd=req_fd,
                           rx_fd=rep_fd, spin_us=spin_us)
        self._link.why = f"shm server (pid {self.server_pid}, {address}) is gone"
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._closed = False
        self._forked = False
        self._watchdog = threading.Thread(target=self._watch, name=f"shm-watch:{address}",
                                          daemon=True)
        self._watchdog.start()
        _live_clients.add(self)

    @staticmethod
    def _handshake(sock: socket.socket, deadline: float) -> tuple[dict, list[int]]:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            sock.sendall(_HELLO.pack(_MAGIC, PROTOCOL_VERSION, 0, os.getpid()))
            msg, fds, flags, _ = socket.recv_fds(sock, 65536, 3)
        except TimeoutError as e:
            raise ConnectionError("shm server did not answer the handshake in time "
                                  "(is it serving?)") from e
        try:
            if flags & socket.MSG_CTRUNC:
                raise ConnectionError("shm handshake: descriptors truncated (fd limit?)")
            if len(msg) < _LEN.size:
                raise ConnectionError("shm server closed the connection during the handshake")
            (n,) = _LEN.unpack_from(msg)
            body = msg[_LEN.size:]
            if len(body) < n:
                body += _recv_exact(sock, n - len(body))
            info = json.loads(body)
            if "error" in info:
                raise ConnectionError(f"shm server refused the connection: {info['error']}")
            if info.get("version") != PROTOCOL_VERSION or len(fds) != 3:
                raise ConnectionError(f"shm handshake: unexpected answer {info}, {len(fds)} fds")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        sock.settimeout(None)
        return info, fds

    def _watch(self) -> None:
        try:
            while self.sock.recv(64):
                pass
        except OSError:
            pass
        link = self._link
        if self._closed:
            link.why = "ShmClient closed"
        link.dead = True
        _efd_write(link.rx_fd, 1)  # close() joins this thread before closing the descriptor

    def call(self, request: bytes) -> bytes:
        """Send `request` (any bytes-like), return the reply. Raises `RemoteError` when the
        handler raised, `PeerDied` when the server is gone (then every later call does too)."""
        with self._lock:
            if self._closed or self._forked:
                raise ConnectionError("ShmClient is closed" if self._closed else
                                      "ShmClient was made before a fork: make a new one here")
            link = self._link
            if type(request) is not bytes:
                request = _as_bytes(request)
            # The common case inlined (what link.send + link.recv do): ~1 us less per call.
            n = len(request)
            if n <= link.slot:
                mm = link.mm
                mm[_DATA:_DATA + n] = request
                s = link.tx_seq + 1
                link.tx_seq = s = s if s <= 0xFFFFFFFF else 1
                _HDR.pack_into(mm, _OFF_CLIENT, n, n, K_REQUEST, s)
                _efd_write(link.tx_fd, 1)
            else:
                link.send(K_REQUEST, request)
            if link.spin_ns or link.dead:
                kind, reply = link.recv()
            else:
                _efd_read(link.rx_fd)
                h = _HDR.unpack_from(link.mm, _OFF_SERVER)
                want = link.rx_seq + 1
                if h[3] == (want if want <= 0xFFFFFFFF else 1):
                    link.rx_seq = h[3]
                    kind, reply = link.take(h)
                else:  # a wake-up for a death or close: the general path sorts it out
                    kind, reply = link.recv()
            if kind == K_REPLY:
                return reply
            if kind == K_ERROR:
                raise _decode_error(reply)
            raise link.violation(f"expected a reply, got kind {kind}")

    @property
    def alive(self) -> bool:
        return not (self._link.dead or self._closed)

    def close(self) -> None:
        """End the link and free the mapping. Never raises, even when the server is gone.
        A call blocked in another thread gets PeerDied."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        _live_clients.discard(self)
        link = self._link
        if self._forked:  # the socket and eventfds are shared with the parent: only let go of ours
            self._release(link, join=False)
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the watchdog, which wakes a caller
        except OSError:
            pass
        self._release(link, join=True)

    def _release(self, link: _Link, join: bool) -> None:
        watchdog_done = True
        if join and self._watchdog is not threading.current_thread():
            self._watchdog.join(5.0)
            watchdog_done = not self._watchdog.is_alive()
        # In a forked child the lock may have been copied held (a parent thread was mid-call).
        lock = self._lock if join else contextlib.nullcontext()
        with lock:
            link.dead = True
            try:
                link.release()
            except Exception:
                pass
            if watchdog_done:
                for fd in (link.tx_fd, link.rx_fd):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> ShmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _connect_unix(path: str, deadline: float) -> socket.socket:
    """Connect, retrying while the server is not there yet, until `deadline`."""
    delay = 0.002
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            if time.monotonic() + delay > deadline:
                raise ConnectionError(f"no shm server at {path}: {e}") from e
        except BaseException:
            sock.close()
            raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


# -------------------------------------------------------------------------------------- bench


def _echo(request: bytes) -> bytes:
    return request


def _load_handler(spec: str) -> Callable[[bytes], bytes]:
    if spec == "echo":
        return _echo
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "handler")


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _serve_main(args) -> None:
    _pin(args.cpu)  # before any thread exists, so that every thread inherits it
    server = ShmServer(_load_handler(args.handler), args.prefix, args.slot_size,
                       args.max_clients, path=args.path, socket_dir=args.socket_dir,
                       spin_us=args.spin_us)
    server.start()
    print(server.address, flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin (or kills us)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _spawn(argv: list[str]) -> tuple[object, str]:
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "msdbench.transports.shm", *argv],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise RuntimeError(f"{argv[0]} server did not start (exit {proc.wait()})")
    return proc, line


def _stop(proc) -> None:
    try:
        proc.stdin.close()
        proc.wait(5)
    except Exception:
        proc.kill()
        proc.wait()


def _summary(samples: list[int]) -> tuple[float, float]:
    s = sorted(samples)
    return s[len(s) // 2] / 1000, s[min(len(s) - 1, int(len(s) * 0.99))] / 1000


def bench(sizes=(0, 8192), n: int = 10000, cpu: int = 0, server_cpu: int | None = None,
          spin_us: float = 0.0, warmup: int = 1000) -> list[dict]:
    """Round trips (us) of this channel and of a raw Python TCP echo, measured in one run.

    Each server runs in its own process pinned to `server_cpu` (default: `cpu`), this process's
    calling thread to `cpu`. Returns one dict per (transport, size); the shm rows carry
    `ratio_to_tcp` (shm median / tcp median). Samples of the two transports are taken in
    alternating blocks so that drift of the machine hits both alike.
    """
    from msdbench.bench import sample_interleaved
    from msdbench.echo import EchoClient, frame

    server_cpu = cpu if server_cpu is None else server_cpu
    before = os.sched_getaffinity(0)
    procs = []
    try:
        shm_proc, address = _spawn(["serve", "--cpu", str(server_cpu), "--spin-us", str(spin_us),
                                    "--slot-size", str(max(64 * 1024, max(sizes, default=0)))])
        procs.append(shm_proc)
        tcp_proc, port = _spawn(["tcp-echo", "--cpu", str(server_cpu)])
        procs.append(tcp_proc)
        _pin(cpu)
        shm = ShmClient(address, spin_us=spin_us)
        tcp = EchoClient(int(port))
        rows = []
        for size in sizes:
            payload = os.urandom(size)
            framed = frame(payload)
            if shm.call(payload) != payload or tcp.call(framed) != len(framed):
                raise RuntimeError("echo mismatch")
            calls = {"shm": (shm.call, payload), "tcp": (tcp.call, framed)}
            samples = sample_interleaved(calls, n, warmup)
            med = {}
            for name in calls:
                p50, p99 = _summary(samples[name])
                med[name] = p50
                rows.append({"transport": name, "size": size, "n": n, "median_us": round(p50, 2),
                             "p99_us": round(p99, 2), "client_cpu": cpu, "server_cpu": server_cpu,
                             "spin_us": spin_us if name == "shm" else 0.0})
            rows[-2]["ratio_to_tcp"] = round(med["shm"] / med["tcp"], 3)
        shm.close()
        tcp.close()
        return rows
    finally:
        os.sched_setaffinity(0, before)
        for p in procs:
            _stop(p)


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m msdbench.transports.shm")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a handler; print the address; stop at stdin EOF")
    s.add_argument("--handler", default="echo", help="'echo' or module:function")
    s.add_argument("--prefix", default=None)
    s.add_argument("--slot-size", type=int, default=64 * 1024)
    s.add_argument("--max-clients", type=int, default=64)
    s.add_argument("--path", default=None)
    s.add_argument("--socket-dir", default=None)
    s.add_argument("--spin-us", type=float, default=0.0)
    s.add_argument("--cpu", type=int, default=None)
    t = sub.add_parser("tcp-echo", help="raw TCP echo server for the comparison")
    t.add_argument("--cpu", type=int, default=None)
    b = sub.add_parser("bench", help="shm vs raw TCP echo round trips")
    b.add_argument("--sizes", default="0,8192")
    b.add_argument("-n", type=int, default=10000)
    b.add_argument("--cpu", type=int, default=0)
    b.add_argument("--server-cpu", type=int, default=None)
    b.add_argument("--spin-us", type=float, default=0.0)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        _serve_main(args)
    elif args.cmd == "tcp-echo":
        from msdbench.echo import start_server

        _pin(args.cpu)
        print(start_server().getsockname()[1], flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin
    else:
        rows = bench(tuple(int(x) for x in args.sizes.split(",")), args.n, args.cpu,
                     args.server_cpu, args.spin_us)
        print(f"{'transport':>9} {'size':>7} {'median_us':>10} {'p99_us':>8} {'ratio':>6}  cpus")
        for r in rows:
            print(f"{r['transport']:>9} {r['size']:>7} {r['median_us']:>10.2f} {r['p99_us']:>8.2f}"
                  f" {r.get('ratio_to_tcp', ''):>6}  {r['client_cpu']}/{r['server_cpu']}")


if __name__ == "__main__":
    _main()
