"""The shared-memory channel's server: one slot, two eventfds and a thread per client; a
selector over the setup sockets notices dead clients. The design is in msdbench/transports/shm.py."""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import secrets
import selectors
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable

from msdbench.transports.shm_link import (_DATA, _HDR, _HELLO, _MAGIC, _OFF_CLIENT, _OFF_SERVER,
                                          K_ERROR, K_REPLY, K_REQUEST, MAX_MESSAGE,
                                          PROTOCOL_VERSION, PeerDied, _as_bytes, _efd_read,
                                          _efd_write, _encode_error, _Link, _prefix, _recv_exact,
                                          _send_json)

log = logging.getLogger("msdbench.transports.shm")

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
