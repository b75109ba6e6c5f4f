"""BEPS services and the client's workload, wired directly in-process and through real thriftpy2 RPC over TCP."""

import socket
import threading
from contextlib import ExitStack

import numpy as np
import pytest
import thriftpy2.rpc
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.thrift import TProcessor
from thriftpy2.transport import TBufferedTransportFactory, TServerSocket, TTransportException

from msdbench import idl
from msdbench.drivers.beps_workload import REQUEST_TYPES, BepsWorkload, make_plan, run_workload
from msdbench.services import KINDS
from msdbench.services.beps import LoadBalancer, PayloadDB, ReadEndpoint, UserDB, Worker

beps = idl.load("beps")
N_WORKERS = 5
SMALL = BepsWorkload(users=40, active_users=8, follows_per_user=3, publishes_per_user=3, seed=7)


# --- wiring -------------------------------------------------------------------------------------------------

class Direct:
    """LB -> 5 workers -> the three DBs, every edge a plain method call."""

    def __init__(self):
        self.userdb, self.payloaddb, self.reader = UserDB(), PayloadDB(), ReadEndpoint()
        self.workers = [Worker(userdb=self.userdb, payloaddb=self.payloaddb, reader=self.reader)
                        for _ in range(N_WORKERS)]
        self.lb = LoadBalancer(workers=self.workers)
        self.frontend = self.lb

    def client(self):
        return self.lb


class _Server:
    """A thread-per-connection thriftpy2 server on an ephemeral loopback port (a test stand-in for the
    project's own transport)."""

    def __init__(self, service, handler):
        self.processor = TProcessor(service, handler)
        self.trans = TServerSocket(host="127.0.0.1", port=0, client_timeout=None)
        self.trans.listen()
        self.port = self.trans.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client = self.trans.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client):
        itrans = TBufferedTransportFactory().get_transport(client)
        proto = TBinaryProtocolFactory().get_protocol(itrans)
        try:
            while True:
                self.processor.process(proto, proto)
        except (TTransportException, OSError):
            pass
        finally:
            itrans.close()

    def close(self):
        sock = self.trans.sock
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        self.thread.join(5)
        # connection threads end when their clients close (the ExitStack closes clients first)


class Rpc(Direct):
    """The same graph, every edge a thriftpy2 client over TCP to a server of its own."""

    def __init__(self):
        self.stack = ExitStack()
        self.userdb, self.payloaddb, self.reader = UserDB(), PayloadDB(), ReadEndpoint()
        ports = {
            "userdb": self._serve(beps.UserDB, self.userdb),
            "payloaddb": self._serve(beps.PayloadDB, self.payloaddb),
            "reader": self._serve(beps.ReadEndpoint, self.reader),
        }
        svc = {"userdb": beps.UserDB, "payloaddb": beps.PayloadDB, "reader": beps.ReadEndpoint}
        self.workers = [Worker(**{k: self._client(svc[k], p) for k, p in ports.items()})
                        for _ in range(N_WORKERS)]
        worker_ports = [self._serve(beps.Frontend, w) for w in self.workers]
        self.lb = LoadBalancer(workers=[self._client(beps.Frontend, p) for p in worker_ports])
        self.lb_port = self._serve(beps.Frontend, self.lb)
        self.frontend = self.client()

    def _serve(self, service, handler):
        server = _Server(service, handler)
        self.stack.callback(server.close)
        return server.port

    def _client(self, service, port):
        c = thriftpy2.rpc.make_client(service, "127.0.0.1", port, timeout=None)
        self.stack.callback(c.close)
        return c

    def client(self):
        return self._client(beps.Frontend, self.lb_port)

    def close(self):
        self.stack.close()


@pytest.fixture(params=["direct", "rpc"])
def graph(request):
    g = Direct() if request.param == "direct" else Rpc()
    yield g
    if isinstance(g, Rpc):
        g.close()


# --- the contract ---------------------------------------------------------------------------------------------

def test_idl_and_registry_agree():
    for name in ("userdb", "payloaddb", "reader", "worker", "lb"):
        kind = KINDS[name]
        service = kind.thrift_service()
        cls = kind.handler_class()
        for method in service.thrift_services:
            assert callable(getattr(cls, method, None)), (name, method)
    assert set(REQUEST_TYPES) <= set(beps.Frontend.thrift_services)


def test_plan_is_deterministic_and_unique():
    w = BepsWorkload(users=300, active_users=30, follows_per_user=4, publishes_per_user=2, warmup=5, seed=3)
    a, b = make_plan(w), make_plan(w)
    assert a == b
    assert len(set(a.names)) == 300 and all(len(n) == 10 for n in a.names)
    assert not set(a.warmup_names) & set(a.names)
    assert len(a.follows) == 120 and len(set(a.follows)) == 120
    assert all(f != g for f, g in a.follows)
    assert len(a.publishes) == 60 and all(len(t.encode()) == 280 for _, t in a.publishes)
    # the users' part does not move with the warm-up count
    assert make_plan(BepsWorkload(**{**w.__dict__, "warmup": 0})).names == a.names
    assert make_plan(BepsWorkload(**{**w.__dict__, "seed": 4})).names != a.names


# --- (a) direct, (b) over RPC ---------------------------------------------------------------------------------

def _assert_clean(result, w):
    assert result["correct"], result["problems"]
    assert result["problems"] == [] and result["problem_count"] == 0
    s, p = w.active_users * w.follows_per_user, w.active_users * w.publishes_per_user
    assert result["counts"] == {"create_user": w.users, "subscribe": s, "publish": p, "unsubscribe": s,
                                "delete_user": w.users}
    assert set(result["samples"]) == set(REQUEST_TYPES)
    for kind, arrays in result["samples"].items():
        for key in ("e2e_ns", "server_ns"):
            a = arrays[key]
            assert a.dtype == np.int64 and len(a) == result["counts"][kind], (kind, key)
            assert (a > 0).all(), (kind, key)
        # the LB's own time is inside the client's round trip
        assert (arrays["server_ns"] <= arrays["e2e_ns"]).all(), kind


def test_workload_direct():
    g = Direct()
    w = SMALL
    result = run_workload(g.frontend, w)
    _assert_clean(result, w)
    # publish fans out: one update_feed per follower of the publisher
    fanout = result["feed_updates_expected"]
    assert fanout >= w.active_users * w.publishes_per_user  # followees are active: ~k feeds per publish
    assert g.reader.counters()["calls"]["update_feed"] == fanout
    assert g.payloaddb.counters()["calls"]["store"] == w.active_users * w.publishes_per_user
    assert g.userdb.counters()["calls"]["get_user"] == w.active_users * w.publishes_per_user
    per_worker = g.lb.counters()["per_worker"]
    assert sum(per_worker) == sum(result["counts"].values()) and max(per_worker) - min(per_worker) <= 1
    assert sum(wk.counters()["calls"]["publish"] for wk in g.workers) == w.active_users * w.publishes_per_user


def test_workload_over_rpc():
    g = Rpc()
    try:
        w = BepsWorkload(users=30, active_users=6, follows_per_user=3, publishes_per_user=3, warmup=3, seed=11)
        result = run_workload(g.frontend, w)
        _assert_clean(result, w)
        assert g.reader.counters()["calls"]["update_feed"] == result["feed_updates_expected"] > 0
        assert len(result["warmup"]["create_user"]["e2e_ns"]) == 3
        assert len(result["warmup"]["delete_user"]["e2e_ns"]) == 3
        assert g.userdb.counters()["calls"]["create_user"] == 33
        # the whole graph was really on the wire: each worker has served through its own server
        assert all(n > 0 for n in g.lb.counters()["per_worker"])
    finally:
        g.close()


# --- (c) a dropped feed update, (f) a dropped create ----------------------------------------------------------

def test_dropped_feed_update_fails_the_check(graph):
    graph.reader.set_fault("drop_feed_update", 1)
    result = run_workload(graph.frontend, SMALL)
    assert not result["correct"]
    feed_problems = [p for p in result["problems"] if p.startswith("feed of user ")]
    assert len(feed_problems) == 1 and "lacks 1 of" in feed_problems[0]
    assert any(p.startswith("after publishes:") for p in result["problems"])
    # the run went through: every call was acknowledged, only the check failed
    assert sum(result["errors"].values()) == 0
    assert graph.reader.counters()["faults"]["drop_feed_update"] == 0


def test_dropped_create_is_caught_by_census(graph):
    graph.userdb.set_fault("drop_create", 2)
    result = run_workload(graph.frontend, SMALL)
    assert not result["correct"]
    assert any(p.startswith(f"after creates: users={SMALL.users - 2} ") for p in result["problems"]), \
        result["problems"]
    # the lost users' deletes fail: reported, not raised
    assert result["errors"]["delete_user"] == 2
    assert result["problem_count"] >= 3


def test_faults_reject_unknown_names():
    with pytest.raises(ValueError, match="allowed: drop_feed_update"):
        ReadEndpoint().set_fault("drop_create", 1)
    with pytest.raises(ValueError, match="allowed: drop_create"):
        UserDB().set_fault("nope", 1)
    with pytest.raises(ValueError, match="allowed: none"):
        PayloadDB().set_fault("drop_create", 1)
    with pytest.raises(ValueError):
        UserDB().set_fault("drop_create", -1)


# --- (d) round robin, (e) errors through the LB ---------------------------------------------------------------

def test_round_robin_is_even(graph):
    fe = graph.frontend
    m = 4
    for i in range(N_WORKERS * m):
        fe.create_user(f"user{i:04d}")
    fe.census()  # helpers do not shift the rotation
    fe.get_feed("user0000")
    assert graph.lb.counters()["per_worker"] == [m] * N_WORKERS
    assert [w.counters()["calls"]["create_user"] for w in graph.workers] == [m] * N_WORKERS


def test_errors_pass_through_the_lb(graph):
    fe = graph.frontend
    fe.create_user("alice")
    with pytest.raises(beps.DuplicateUser) as e:
        fe.create_user("alice")
    assert e.value.name == "alice"
    fe.create_user("bob")  # the next call succeeds
    with pytest.raises(beps.UnknownUser) as e:
        fe.delete_user("nobody")
    assert e.value.name == "nobody"
    with pytest.raises(beps.UnknownUser):
        fe.subscribe("alice", "nobody")
    with pytest.raises(beps.InvalidRequest):
        fe.subscribe("alice", "alice")
    fe.subscribe("alice", "bob")
    with pytest.raises(beps.InvalidRequest):
        fe.subscribe("alice", "bob")
    reply = fe.publish("bob", "hello")
    assert reply.server_ns > 0
    # the reply names the stored message: the one alice's feed now holds
    assert [(m.id, m.user, m.text) for m in fe.get_feed("alice")] == [(reply.id, "bob", "hello")]
    with pytest.raises(beps.UnknownUser):
        fe.publish("nobody", "lost")
    fe.unsubscribe("alice", "bob")
    with pytest.raises(beps.InvalidRequest):
        fe.unsubscribe("alice", "bob")
    with pytest.raises(beps.InvalidRequest):
        fe.create_user("")
    # a failed publish leaves no orphan message; the census is consistent
    c = fe.census()
    assert (c.users, c.messages, c.feed_entries) == (2, 1, 1)
    fe.delete_user("alice")
    fe.delete_user("bob")
    c = fe.census()
    assert (c.users, c.messages, c.feed_entries) == (0, 0, 0)


# --- the DBs on their own, and concurrency --------------------------------------------------------------------

def test_userdb_delete_cleans_both_directions():
    db = UserDB()
    for n in "abc":
        db.create_user(n)
    db.subscribe("a", "b")
    db.subscribe("b", "c")
    db.subscribe("c", "b")
    db.delete_user("b")
    assert db.get_user("a") == beps.User(name="a", subscribers=[], subscriptions=[])
    assert db.get_user("c") == beps.User(name="c", subscribers=[], subscriptions=[])
    assert db.census() == 2


def test_reader_shares_message_copies():
    r = ReadEndpoint()
    m = beps.Message(id=1, user="u", text="t", ts_ns=0)
    r.update_feed("a", m)
    r.update_feed("b", beps.Message(id=1, user="u", text="t", ts_ns=0))
    assert r.census() == 2 and r.get_feed("b")[0] is m
    r.drop_feed("a")
    r.drop_feed("b")
    r.drop_feed("never")
    assert r.census() == 0 and r._shared == {}


def test_lb_under_concurrent_clients(graph):
    threads, n = 4, 30
    clients = [graph.client() for _ in range(threads)]
    failures = []

    def run(t):
        try:
            for i in range(n):
                clients[t].create_user(f"t{t}u{i}")
                clients[t].publish(f"t{t}u{i}", "x")
        except Exception as e:  # surfaced below
            failures.append(e)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not failures
    c = graph.frontend.census()
    assert (c.users, c.messages) == (threads * n, threads * n)
    assert sum(graph.lb.counters()["per_worker"]) == 2 * threads * n
    assert graph.payloaddb.counters()["calls"]["store"] == threads * n
