"""Hostile input against real services on real sockets: every malformed-input class is refused
cheaply, the service keeps answering a fresh client (and other clients while it happens), its
memory stays bounded, and it logs one line (peer address and reason, no traceback).

Services: poll (micro) and the load balancer (BEPS), each in its own domain of a real deployment
on the process backend; linux reaches them over TCP (thrift_tcp), specialized over the
shared-memory channel (shm_thrift), with the same codec and limits behind both.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time

import pytest

from msdbench.backends.process import ProcessBackend
from msdbench.planning import Cell, plan
from msdbench.services import KINDS
from msdbench.transports import bindings
from msdbench.transports.codec import Limits, message_header
from msdbench.transports.shm import RemoteError, ShmClient

ANSWER_S = 10.0     # a generous hang guard, not a timing assertion
RSS_SLACK = 64 << 20  # what a probe may leave behind, far below the 100 MiB a probe declares
WIRE = {"max_connections": 40}  # low, so that the refusal is testable; the rest at defaults


def _i32(n):
    return struct.pack(">i", n)


def _call(name: str, body: bytes, seqid: int = 1) -> bytes:
    """A strict CALL message: header, then the args struct's bytes as given."""
    return message_header(name, 1, seqid) + body


def _string_field(fid: int, data: bytes, declared: int | None = None) -> bytes:
    return b"\x0b" + struct.pack(">h", fid) + _i32(len(data) if declared is None else declared) + data


# Each probe: (name, bytes, what the peer should see: "closed" or an exception type code).
def probes(method: str, arg: bytes) -> list[tuple[str, bytes]]:
    rnd = random.Random(10)
    nest = b"".join(b"\x0c" + struct.pack(">h", 9) for _ in range(200))  # 200 nested structs
    return [
        ("random bytes", bytes(rnd.randrange(256) for _ in range(4096))),
        ("truncated message", _call(method, _string_field(1, b"abc", declared=10))),
        ("unknown method", _call("no_such_method", b"\x00")),
        ("huge declared string", _call(method, _string_field(1, b"", declared=0x7FFFFFFF))),
        ("negative string length", _call(method, _string_field(1, b"", declared=-5))),
        # The 25-byte message: a list declaring ~2^31 field-less structs, as an unknown field.
        ("container bomb (25 bytes)", _call(method, b"\x0f\x00\x09\x0c" + _i32(0x7FFFFFFF) + b"\x00")),
        ("container over max_container_len", _call(method, b"\x0f\x00\x09\x03" + _i32(2_000_000))),
        ("map bomb", _call(method, b"\x0d\x00\x09\x0b\x0b" + _i32(0x7FFFFFFF) + b"\x00")),
        ("deep nesting", _call(method, nest + b"\x00" * 201)),
        ("bad version word", b"\x80\x02\x00\x01" + _i32(len(method)) + method.encode() + _i32(1)),
        ("method name length 1 GiB", b"\x80\x01\x00\x01" + _i32(1 << 30)),
        ("reply sent to a server", message_header(method, 2, 1) + b"\x00"),
        ("framed, frame of 2 GiB", _i32(0x7FFFFFFF) + b"\x80\x01\x00\x01"),
        ("framed, frame shorter than message", _i32(8) + _call(method, _string_field(1, arg))),
    ]


def _rss(dep, service: str) -> int:
    h = dep.handle_of(service)
    return json.loads(dep.call(h, "stats"))["rss_bytes"]


def _recv_all(sock: socket.socket, timeout: float = ANSWER_S) -> bytes:
    """What the service sends until it closes the connection (bounded by the hang guard)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        return out


def _answers(stub, suite: str) -> bool:
    if suite == "micro":
        return stub.poll(b"fresh") > 0
    return stub.census() is not None


@pytest.fixture(params=["micro", "beps"], scope="module")
def linux_service(request):
    suite = request.param
    cell = Cell(suite, "linux", "process", "isolated", 2, 0 if suite == "micro" else None)
    settings = {"workers": 2, "wire": WIRE} if suite == "beps" else {"wire": WIRE}
    m = plan(cell, settings)
    with ProcessBackend().up(m) as dep:
        (edge,) = dep.manifest.edges_from("client")
        yield suite, dep, edge


def _fresh(edge, suite):
    kind = KINDS["poll" if suite == "micro" else "lb"]
    return bindings.connect("thrift-tcp", kind, edge.address, timeout=ANSWER_S)


def test_tcp_probes_are_refused_and_the_service_keeps_answering(linux_service):
    check_probes(*linux_service)


def check_probes(suite: str, dep, edge, peer: str = "127.0.0.1") -> None:
    """Every probe against the service behind `edge` of a running deployment (any backend): each is
    refused, a connected client and a fresh one are answered after each, memory stays bounded, and
    the service logs one line per violation naming `peer`, the address it sees us at."""
    service = edge.callee
    host, port = edge.address.rsplit(":", 1)
    method, arg = ("poll", b"x") if suite == "micro" else ("create_user", b"someone")
    other = _fresh(edge, suite)  # a client that stays connected through every probe
    assert _answers(other, suite)
    rss0 = _rss(dep, service)
    for name, data in probes(method, arg):
        with socket.create_connection((host, int(port)), timeout=ANSWER_S) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)  # whatever the service still waits for never comes
            except OSError:
                pass
            got = _recv_all(s)
        if name == "unknown method":
            assert b"no_such_method" in got and b"has no method" in got, got
        elif name in ("huge declared string", "container bomb (25 bytes)", "map bomb",
                      "container over max_container_len", "deep nesting"):
            # the header was readable: the peer is told why (PROTOCOL_ERROR), then closed
            assert b"max_" in got, (name, got)
        assert _answers(other, suite), name
        fresh = _fresh(edge, suite)
        assert _answers(fresh, suite), name
        fresh.close()
    assert _rss(dep, service) - rss0 < RSS_SLACK
    log = dep.backend.log_tail(dep.handle_of(service), 200)
    assert "Traceback" not in log, log
    lines = [ln for ln in log.splitlines() if "msdbench wire:" in ln]
    assert lines and all(f"peer {peer}:" in ln for ln in lines), log
    assert any("max_container_len" in ln for ln in lines) and any("max_depth" in ln for ln in lines)
    other.close()


def test_a_100_mib_payload_is_refused_at_its_length(linux_service):
    """The 100 MiB payload of the issue: refused when its length arrives, memory unchanged, and a
    call on another connection meanwhile is answered."""
    suite, dep, edge = linux_service
    host, port = edge.address.rsplit(":", 1)
    method = "poll" if suite == "micro" else "create_user"
    rss0 = _rss(dep, edge.callee)
    other = _fresh(edge, suite)
    with socket.create_connection((host, int(port)), timeout=ANSWER_S) as s:
        s.sendall(_call(method, b"\x0b\x00\x01" + _i32(100 << 20)))
        sent, chunk = 0, b"\xa5" * (1 << 20)
        try:
            while sent < 100 << 20:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # closed by the service: the point
        assert sent < 100 << 20
        assert _answers(other, suite)
    assert _rss(dep, edge.callee) - rss0 < RSS_SLACK
    other.close()


def test_memory_follows_bytes_that_arrive_not_declared_lengths(linux_service):
    """30 connections each declare a 15 MiB string (under max_message_bytes) and send 64 KiB of
    it: the service holds about what arrived, not 30 x 15 MiB, and still answers."""
    suite, dep, edge = linux_service
    host, port = edge.address.rsplit(":", 1)
    method = "poll" if suite == "micro" else "create_user"
    rss0 = _rss(dep, edge.callee)
    socks = []
    for _ in range(30):
        s = socket.create_connection((host, int(port)))
        s.sendall(_call(method, b"\x0b\x00\x01" + _i32(15 << 20)) + b"\xa5" * (64 << 10))
        socks.append(s)
    fresh = _fresh(edge, suite)
    assert _answers(fresh, suite)  # by now the service has read what was sent
    assert _rss(dep, edge.callee) - rss0 < 30 * (15 << 20) // 4, "buffers sized by declared lengths"
    for s in socks:
        s.close()
    fresh.close()


def test_a_slow_or_stuck_peer_does_not_slow_others(linux_service):
    """Half a message (a slow sender), and the container bomb sent in a loop from a thread:
    a correct client on its own connection is still answered every time."""
    suite, dep, edge = linux_service
    host, port = edge.address.rsplit(":", 1)
    method = "poll" if suite == "micro" else "create_user"
    half = socket.create_connection((host, int(port)))
    half.sendall(_call(method, _string_field(1, b"x" * 100, declared=1000)))
    stop = threading.Event()
    sent = [0]

    def bombard():
        bomb = _call(method, b"\x0f\x00\x09\x0c" + _i32(0x7FFFFFFF) + b"\x00")
        while not stop.is_set():
            with socket.create_connection((host, int(port)), timeout=ANSWER_S) as s:
                s.sendall(bomb)
                _recv_all(s)
            sent[0] += 1

    t = threading.Thread(target=bombard, daemon=True)
    t.start()
    client = _fresh(edge, suite)
    for _ in range(200):
        assert _answers(client, suite)
    stop.set()
    t.join(ANSWER_S)
    assert sent[0] > 0
    half.close()
    client.close()


def test_idle_connections_cost_no_thread_and_the_limit_refuses_clearly(linux_service):
    suite, dep, edge = linux_service
    host, port = edge.address.rsplit(":", 1)
    pid = dep.handle_of(edge.callee).hello["pid"]
    threads0 = len(os.listdir(f"/proc/{pid}/task"))
    idle = [socket.create_connection((host, int(port))) for _ in range(WIRE["max_connections"] - 5)]
    client = _fresh(edge, suite)
    assert _answers(client, suite)
    assert len(os.listdir(f"/proc/{pid}/task")) == threads0
    more = [socket.create_connection((host, int(port))) for _ in range(10)]
    refused = []
    for s in more:
        got = _recv_all(s, 1.0)
        if got:
            refused.append(got)
    assert refused and all(b"max_connections=40" in g for g in refused), refused
    for s in idle + more:
        s.close()
    time.sleep(0.2)
    fresh = _fresh(edge, suite)
    assert _answers(fresh, suite)
    fresh.close()
    client.close()
    log = dep.backend.log_tail(dep.handle_of(edge.callee), 50)
    assert "refused" in log and "max_connections=40" in log


# ------------------------------------------------------------------- specialized (shm channel)


@pytest.fixture(params=["micro", "beps"], scope="module")
def shm_service(request):
    suite = request.param
    cell = Cell(suite, "specialized", "process", "isolated", 2, 0 if suite == "micro" else None)
    m = plan(cell, {"workers": 2} if suite == "beps" else {})
    with ProcessBackend().up(m) as dep:
        (edge,) = dep.manifest.edges_from("client")
        assert edge.transport == "shm"
        yield suite, dep, edge


def test_shm_probes_fail_the_call_and_the_service_keeps_answering(shm_service):
    suite, dep, edge = shm_service
    method, arg = ("poll", b"x") if suite == "micro" else ("create_user", b"someone")
    kind = KINDS["poll" if suite == "micro" else "lb"]
    rss0 = _rss(dep, edge.callee)
    for name, data in probes(method, arg):
        raw = ShmClient(edge.address)
        try:
            reply = raw.call(data)
        except RemoteError as e:
            reply = str(e).encode()
        except ConnectionError:
            reply = b""
        finally:
            raw.close()
        if name == "unknown method":
            assert b"has no method" in reply
        stub = bindings.connect("shm", kind, edge.address)
        assert _answers(stub, suite), name
        stub.close()
    # a message declared larger than max_message_bytes is refused by the channel itself
    raw = ShmClient(edge.address)
    with pytest.raises((RemoteError, ConnectionError)):
        raw.call(_call(method, _string_field(1, b"\x00" * (Limits().max_message_bytes + 1))))
    raw.close()
    stub = bindings.connect("shm", kind, edge.address)
    assert _answers(stub, suite)
    stub.close()
    assert _rss(dep, edge.callee) - rss0 < RSS_SLACK
    log = dep.backend.log_tail(dep.handle_of(edge.callee), 200)
    assert "Traceback" not in log and "msdbench wire:" in log, log
