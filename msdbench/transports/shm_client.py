"""The shared-memory channel's client: one connection (one slot) to a `ShmServer`; a watchdog
thread turns the server's death into `PeerDied`. The design is in msdbench/transports/shm.py."""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import socket
import threading
import time
import weakref

from msdbench.transports.shm_link import (_DATA, _HDR, _HELLO, _LEN, _MAGIC, _OFF_CLIENT,
                                          _OFF_SERVER, K_ERROR, K_REPLY, K_REQUEST,
                                          PROTOCOL_VERSION, _as_bytes, _decode_error, _efd_read,
                                          _efd_write, _Link, _recv_exact)

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

    `sock` is the setup socket: shutting it down (e.g. `deadline.Deadline.watch(client.sock)`)
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
                    with contextlib.suppress(OSError):
                        os.close(fd)
        with contextlib.suppress(OSError):
            self.sock.close()

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
