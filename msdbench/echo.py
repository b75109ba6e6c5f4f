"""A raw Python TCP echo: the floor below which no Python service on sockets can go.

Length-prefixed (4-byte big-endian length, then the payload); the whole message comes back.
One thread per connection, one recv_into (usually) and one sendall per message. `msdbench bench`
compares every binding's path with it in the same run, and every latency cell measures it in each
repetition, from the client's domain to the entry service's, under the same pinning
(`round_trips`): the machine's speed at that moment, which its tables divide latencies by.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np

_LEN = struct.Struct("!I")


def frame(payload: bytes) -> bytes:
    """The message for `payload` (build it once, outside the timed loop)."""
    return _LEN.pack(len(payload)) + payload


def _serve_conn(conn: socket.socket) -> None:
    buf = bytearray(4 << 20)
    mv = memoryview(buf)
    recv_into, sendall = conn.recv_into, conn.sendall
    while True:
        got, need = 0, 4
        while got < need:
            r = recv_into(mv[got:])
            if not r:
                return
            got += r
            if got >= 4:
                need = 4 + _LEN.unpack_from(buf)[0]
        sendall(mv[:need])


def start_server(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening echo socket served by a daemon thread; close it to stop accepting."""
    lst = socket.create_server((host, port))

    def accept():
        while True:
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return lst


class EchoClient:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self.buf = bytearray(4 << 20)
        self.mv = memoryview(self.buf)

    def call(self, message: bytes) -> int:
        """Send a framed message, wait for it to come back whole; returns its length."""
        self.sock.sendall(message)
        mv, recv_into, got, need = self.mv, self.sock.recv_into, 0, 4
        while got < need:
            r = recv_into(mv[got:])
            if not r:
                raise ConnectionError("echo server closed")
            got += r
            if got >= 4:
                need = 4 + _LEN.unpack_from(self.buf)[0]
        return got

    def close(self) -> None:
        self.sock.close()


def round_trips(address: str, calls: int, payload: bytes = b"") -> np.ndarray:
    """`calls` timed echo round trips (ns) to the echo server at host:port, one at a time."""
    host, port = address.rsplit(":", 1)
    client = EchoClient(int(port), host)
    message, out, clock = frame(payload), np.empty(calls, dtype=np.int64), time.perf_counter_ns
    try:
        for i in range(calls):
            t0 = clock()
            client.call(message)
            out[i] = clock() - t0
    finally:
        client.close()
    return out
