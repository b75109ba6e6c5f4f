"""The linux platform's transport: real sockets, the lean client and processor."""

import socket
import threading
import time

import pytest
from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TTransportException

from msdbench import idl
from msdbench.services.poll import PollHandler
from msdbench.transports.deadline import Deadline
from msdbench.transports.thrift_tcp import RECV_SIZE, ThriftClient, ThriftServer

Poll = idl.load("poll").Poll


class Flaky(PollHandler):
    def poll(self, payload):
        if payload == b"boom":
            raise RuntimeError("not declared in the IDL")
        return super().poll(payload)


@pytest.fixture
def server():
    s = ThriftServer(Poll, "127.0.0.1", 0).start(Flaky())
    yield s
    s.close()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 8192, RECV_SIZE + 1, 1 << 20])
def test_payload_sizes_binary_and_list(server, size):
    c = ThriftClient(Poll, *server.address)
    before = time.monotonic_ns()
    assert before <= c.poll(b"\x01" * size) <= time.monotonic_ns()
    assert c.poll_list(list(range(size // 8))) > before
    c.close()


def test_undeclared_error_is_reported_and_connection_survives(server):
    c = ThriftClient(Poll, *server.address)
    with pytest.raises(TApplicationException, match="RuntimeError: not declared in the IDL"):
        c.poll(b"boom")
    assert c.poll(b"ok") > 0
    c.close()


def test_connections_wait_until_the_handler_starts():
    """Two-phase bring-up: peers may connect before the listener serves."""
    s = ThriftServer(Poll, "127.0.0.1", 0)
    c = ThriftClient(Poll, *s.address)
    got = []
    t = threading.Thread(target=lambda: got.append(c.poll(b"")))
    t.start()
    time.sleep(0.3)
    assert not got
    s.start(PollHandler())
    t.join(5)
    assert got and got[0] > 0
    c.close()
    s.close()


def test_deadline_cuts_a_blocked_call():
    """A server that never answers: no socket timeout on the path, yet the deadline ends it."""
    lst = socket.create_server(("127.0.0.1", 0))
    c = ThriftClient(Poll, *lst.getsockname()[:2])
    assert c.sock.gettimeout() is None  # nothing but the deadline can end the call
    conn, _ = lst.accept()
    # A hang guard, not a timing claim: if the deadline failed to cut the call, the server side
    # closes after a minute and the test fails on `guard.fired` instead of hanging.
    guard_fired = []
    guard = threading.Timer(60, lambda: (guard_fired.append(True), conn.shutdown(socket.SHUT_RDWR)))
    guard.start()
    with Deadline(0.5) as d:
        d.watch(c.sock)
        with pytest.raises(TTransportException, match="peer closed the connection"):
            c.poll(b"")
    guard.cancel()
    assert d.fired and not guard_fired
    assert conn.recv(1 << 16), "the request went out and blocked on the silent server"
    conn.close()
    c.close()
    lst.close()


def test_unknown_method_is_an_application_error_and_the_connection_survives(server):
    """Our client of another service (UserDB) against poll: UNKNOWN_METHOD, then poll still works
    on a fresh connection and the server keeps serving."""
    c = ThriftClient(idl.load("beps").UserDB, *server.address)
    with pytest.raises(TApplicationException, match="has no method 'census'"):
        c.census()
    with pytest.raises(TApplicationException, match="has no method"):
        c.census()  # the same connection still answers
    c.close()
    p = ThriftClient(Poll, *server.address)
    assert p.poll(b"") > 0
    p.close()


def test_keyword_arguments_and_oneway(server):
    c = ThriftClient(Poll, *server.address)
    assert c.poll(payload=b"abc") > 0
    with pytest.raises(TypeError, match="takes the arguments"):
        c.poll(b"a", b"b")
    c.close()
