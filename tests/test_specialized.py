"""The `specialized` platform: same services, same IDL, one binding per edge chosen from where the
two ends sit (direct inside a domain, shared memory between domains of a host, Thrift over TCP
across hosts), as Ambience's lidl does. Planning, real cells on the process backend, and a peer
killed mid-cell."""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest

from msdbench import idl, suites
from msdbench.backends.base import BackendError
from msdbench.backends.process import ProcessBackend
from msdbench.cell import run_cell
from msdbench.manifest import Domain
from msdbench.planning import ISOLATIONS, PlanError, SUPPORTED_DEPLOYMENTS, Cell, _transport, plan
from msdbench.planning import micro_contradiction
from msdbench.services import KINDS
from msdbench.services.poll import PollHandler
from msdbench.transports import bindings
from msdbench.transports.shm import PeerDied
from msdbench.transports.shm_thrift import ShmThriftClient, ShmThriftServer

from conftest import domain_processes

SMALL = {"users": 40, "active_users": 8, "follows_per_user": 3, "publishes_per_user": 3}


def _cells():
    for suite, isolations in ISOLATIONS.items():
        for isolation in isolations:
            for deployment in SUPPORTED_DEPLOYMENTS:
                if suite == "micro" and micro_contradiction(isolation, deployment):
                    continue
                try:  # the deployments the suite itself refuses (e.g. throughput at 1)
                    suites.get(suite).check(Cell(suite, "linux", "process", isolation, deployment,
                                                 0 if suite == "micro" else None))
                except PlanError:
                    continue
                if suites.get(suite).fixed.get("deployment", deployment) != deployment:
                    continue
                if suites.get(suite).services is None:  # a suite over other suites' cells
                    continue
                yield suite, isolation, deployment


# -- 1. planning: the binding of every edge -----------------------------------------------------


@pytest.mark.parametrize("platform", ["linux", "specialized"])
@pytest.mark.parametrize("suite,isolation,deployment", list(_cells()))
def test_every_edge_gets_the_binding_its_placement_allows(suite, isolation, deployment, platform):
    other_host = {3: {"client_host": "vm1", "hosts": {"vm1": {"kind": "vm"}}},
                  4: {"client_host": "vm2", "hosts": {"vm2": {"kind": "vm", "on": "e"}, "e": {"kind": "netns"}}},
                  5: {"client_host": "edge1", "hosts": {"edge1": {"kind": "netns"}}}}
    m = plan(Cell(suite, platform, "process", isolation, deployment, 0 if suite == "micro" else None),
             {"workers": 3} | other_host.get(deployment, {}))
    assert m.edges, "a manifest without edges"
    domain_of = {s.name: s.domain for s in m.services}
    host_of = {d.name: d.host for d in m.domains}
    for e in m.edges:
        same_domain = domain_of[e.caller] == domain_of[e.callee]
        if platform == "linux" or host_of[domain_of[e.caller]] != host_of[domain_of[e.callee]]:
            want = "thrift-tcp"  # even inside a domain: what Linux + Thrift does; across hosts
        else:
            want = "direct" if same_domain else "shm"  # both ends on one host
        assert e.transport == want, (e, domain_of)
        assert e.transport in bindings.TRANSPORTS


# Spelled out for the specialized platform, so a wrong grouping cannot hide behind the rule above.
EXPECTED = {
    ("micro", "co-located", 1): {("client", "poll"): "direct"},
    ("micro", "isolated", 2): {("client", "poll"): "shm"},
    ("beps", "co-located", 1): {("client", "lb"): "direct", ("lb", "worker0"): "direct",
                                ("worker0", "userdb"): "direct", ("worker0", "reader"): "direct"},
    ("beps", "co-located", 2): {("client", "lb"): "shm", ("lb", "worker0"): "direct",
                                ("worker1", "payloaddb"): "direct"},
    ("beps", "tiered", 1): {("client", "lb"): "direct", ("lb", "worker2"): "direct",
                            ("worker0", "userdb"): "shm", ("worker0", "payloaddb"): "shm",
                            ("worker1", "reader"): "shm"},
    ("beps", "tiered", 2): {("client", "lb"): "shm", ("lb", "worker0"): "direct",
                            ("worker2", "userdb"): "shm", ("worker2", "reader"): "shm"},
    ("beps", "isolated", 1): {("client", "lb"): "direct", ("lb", "worker0"): "shm",
                              ("worker0", "userdb"): "shm"},
    ("beps", "isolated", 2): {("client", "lb"): "shm", ("lb", "worker1"): "shm",
                              ("worker1", "reader"): "shm"},
}


@pytest.mark.parametrize("key", list(EXPECTED))
def test_specialized_bindings_spelled_out(key):
    suite, isolation, deployment = key
    m = plan(Cell(suite, "specialized", "process", isolation, deployment,
                  0 if suite == "micro" else None), {"workers": 3})
    got = {(e.caller, e.callee): e.transport for e in m.edges}
    for pair, transport in EXPECTED[key].items():
        assert got[pair] == transport, pair
    n_workers = 3 if suite == "beps" else 0
    assert len(m.edges) == 1 + n_workers * 4  # client -> entry; lb -> w; w -> 3 stores


def test_across_hosts_is_thrift_tcp_on_both_platforms():
    a, b = Domain("a", ["x"], "host-a"), Domain("b", ["y"], "host-b")
    assert _transport("specialized", a, b) == "thrift-tcp"
    assert _transport("linux", a, b) == "thrift-tcp"
    assert _transport("specialized", a, Domain("c", ["z"], "host-a")) == "shm"
    assert _transport("specialized", a, a) == "direct"


def test_direct_stub_is_the_handler_in_place():
    h = PollHandler()
    stub = bindings.direct(KINDS["poll"], h)
    assert stub.poll.__self__ is h and stub.poll_list.__self__ is h  # no wrapper on the call
    payload = bytearray(b"x")
    stub.poll(payload)
    assert h.calls == 1
    stub.close()  # does nothing, and the handler still serves
    stub.poll(payload)
    assert h.calls == 2


def test_shm_thrift_keeps_the_idl_semantics():
    beps = idl.load("beps")
    from msdbench.services.beps import UserDB

    server = ShmThriftServer(beps.UserDB)
    client = ShmThriftClient(beps.UserDB, server.address)  # before start: two-phase bring-up
    other = ShmThriftClient(beps.UserDB, server.address)
    server.start(UserDB())
    try:
        client.create_user("alice")
        client.create_user(name="bob")
        with pytest.raises(beps.DuplicateUser) as e:
            client.create_user("alice")
        assert e.value.name == "alice"
        with pytest.raises(beps.InvalidRequest):
            client.subscribe("alice", "alice")
        client.subscribe("bob", "alice")
        assert client.get_user("alice") == beps.User("alice", ["bob"], [])
        with pytest.raises(beps.UnknownUser):
            client.get_user("carol")
        assert client.census() == 2  # the link is still good after exceptions
        long = "x" * 300_000  # larger than the slot: carried in chunks
        client.create_user(long)
        assert client.get_user(long).name == long
        assert other.census() == 3  # a second client: its own slot, the same service
    finally:
        client.close()
        server.close()
    with pytest.raises(PeerDied):
        other.census()  # the server is gone: an error at once, not a hang
    other.close()
    with pytest.raises(ConnectionError):
        ShmThriftClient(beps.UserDB, server.address, connect_timeout=0.2)


# -- 2. real cells through run_cell, process backend --------------------------------------------


@pytest.mark.parametrize("isolation,deployment,transport", [("co-located", 1, "direct"),
                                                            ("isolated", 2, "shm")])
def test_micro_specialized_cell_produces_samples(tmp_path, no_leftovers, isolation, deployment,
                                                 transport):
    m = plan(Cell("micro", "specialized", "process", isolation, deployment, 4096),
             {"requests": 300, "warmup": 50})
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok"
    df = pd.read_parquet(tmp_path / "c.parquet")
    df = df[df["op"] == "poll"]  # without the cell's TCP echo reference
    assert len(df) == 350 and df["warmup"].sum() == 50 and (df["e2e_ns"] > 0).all()
    (edge,) = meta["manifest"]["edges"]
    assert edge["transport"] == transport
    if transport == "shm":
        assert edge["address"].endswith(".sock")  # the resolved manifest names the channel
    else:
        assert edge["address"] is None  # nothing to reach: the handler itself
        # an in-domain call is a Python call: the domain listens on its control port alone
        # (and on the TCP echo the cell measures as its reference)
        import psutil

        with ProcessBackend().up(m) as dep:
            h = dep.handle_of("poll")
            listening = [c.laddr.port for c in psutil.Process(h.native.pid).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN]
            assert sorted(listening) == sorted(int(a.rsplit(":", 1)[1]) for a in
                                               (h.control_address, h.hello["echo"]))


@pytest.mark.parametrize("isolation", ["co-located", "tiered", "isolated"])
def test_beps_same_verdict_and_counts_on_both_platforms(tmp_path, no_leftovers, isolation):
    out = {}
    for platform in ("linux", "specialized"):
        m = plan(Cell("beps", platform, "process", isolation, 2), {"workers": 3, "workload": SMALL})
        meta = run_cell(m, tmp_path / f"{platform}.parquet", tmp_path / f"{platform}.json")
        df = pd.read_parquet(tmp_path / f"{platform}.parquet")
        out[platform] = (meta["status"], meta["driver"].get("correct"),
                         df.groupby(["op", "warmup"]).size().to_dict())
        assert meta["status"] == "ok", meta["driver"].get("problems")
    assert out["linux"] == out["specialized"]
    counts = out["specialized"][2]
    assert counts[("create_user", False)] == 40 and counts[("publish", False)] == 24


def test_beps_specialized_deployment_1_is_correct(tmp_path, no_leftovers):
    """The client inside the LB's domain: its first hop is a plain call."""
    m = plan(Cell("beps", "specialized", "process", "tiered", 1), {"workers": 2, "workload": SMALL})
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok" and meta["driver"]["correct"]


# -- 3. a peer killed mid-cell: an error, never a hang; nothing left behind ---------------------


@pytest.mark.parametrize("isolation", ["tiered", "isolated"])
def test_killed_peer_ends_the_run_with_an_error(isolation, no_leftovers):
    m = plan(Cell("beps", "specialized", "process", isolation, 2), {"workers": 2})
    with ProcessBackend().up(m) as dep:
        victim = dep.handle_of("userdb").native
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        with pytest.raises(BackendError) as e:
            # a long deadline: the dead peer must be noticed by the channel, not by the deadline
            dep.run_driver({"driver": "beps", "workload": SMALL, "deadline_s": 600})
    assert "PeerDied" in str(e.value) or "gone" in str(e.value), str(e.value)
    assert "deadline" not in str(e.value), str(e.value)
    assert not domain_processes()


def test_killed_entry_domain_fails_its_shm_caller_at_once(no_leftovers):
    """A stub connected to a real domain over shm: once that domain is SIGKILLed, the next call
    raises PeerDied at once (the channel's liveness link), with no deadline involved."""
    m = plan(Cell("beps", "specialized", "process", "co-located", 2), {"workers": 2})
    with ProcessBackend().up(m) as dep:
        (edge,) = dep.manifest.edges_from("client")
        assert edge.transport == "shm"
        lb = bindings.connect("shm", KINDS["lb"], edge.address)
        lb.create_user("someone123")
        victim = dep.handle_of("lb").native
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        # no deadline is armed on this stub: only the channel's liveness link can end the call
        with pytest.raises(PeerDied):
            lb.create_user("someone456")
        lb.close()


# -- the ratio table (synthetic summary tables: pure, fast) ---------------------------------------


def _row(suite, platform, isolation, deployment, mean, op, payload=None, status="ok"):
    return {"suite": suite, "platform": platform, "backend": "process", "isolation": isolation,
            "deployment": deployment, "payload": payload, "op": op, "status": status,
            "mean_us": mean, "p50_us": mean / 2}


def test_ratio_table(tmp_path):
    from msdbench.figures.ratios import write

    micro = pd.DataFrame([
        _row("micro", "linux", "co-located", 1, 20.0, "poll", 0),
        _row("micro", "linux", "isolated", 2, 26.0, "poll", 0),
        _row("micro", "specialized", "co-located", 1, 0.5, "poll", 0),
        _row("micro", "specialized", "isolated", 2, 36.5, "poll", 0),
        _row("micro", "specialized", "isolated", 2, 99.0, "poll", 512),  # no co-located pair
    ])
    beps = pd.DataFrame([
        _row("beps", p, iso, 2, mean, "create_user")
        for p, scale in (("linux", 1.0), ("specialized", 0.5))
        for iso, mean in (("co-located", 100.0 * scale), ("tiered", 150.0 * scale),
                          ("isolated", 300.0 * scale))
    ] + [_row("beps", "linux", "tiered", 2, 1.0, "publish", status="failed-check"),
         _row("beps", "linux", "co-located", 2, 1.0, "publish")])
    micro.to_parquet(tmp_path / "micro.parquet")
    beps.to_parquet(tmp_path / "beps.parquet")
    out = write(str(tmp_path / "ratios.csv"), [str(tmp_path / "micro.parquet"),
                                               str(tmp_path / "beps.parquet")])
    on_disk = pd.read_csv(tmp_path / "ratios.csv")
    assert len(on_disk) == len(out)

    def one(**where):
        sub = out
        for k, v in where.items():
            sub = sub[sub[k] == v]
        assert len(sub) == 1, (where, sub)
        return sub.iloc[0]

    r = one(suite="micro", comparison="isolation", platform="specialized")
    assert r["ratio"] == 73.0 and r["paper_ratio"] == 73.0 and r["payload"] == 0
    assert one(suite="micro", comparison="isolation", platform="linux")["ratio"] == 1.3
    assert one(suite="micro", comparison="platform", isolation="co-located")["ratio"] == 0.025
    assert one(suite="beps", comparison="isolation", platform="linux", isolation="tiered")["ratio"] == 1.5
    assert one(suite="beps", comparison="isolation", platform="specialized",
               isolation="isolated")["ratio"] == 3.0
    assert one(suite="beps", comparison="platform", isolation="tiered")["ratio"] == 0.5
    # a cell that failed its check is never a ratio's numerator or denominator
    assert not ((out["op"] == "publish") & (out["comparison"] == "isolation")).any()


def test_deployment_ratio_is_labelled_with_the_kind_of_host(tmp_path):
    """d5 / d2 per request type, labelled by where the client ran (an emulated host here)."""
    from msdbench.figures.ratios import ratios

    def row(platform, dep, mean, op):
        r = _row("beps", platform, "tiered", dep, mean, op)
        return r | ({"client_host": "edge1", "client_host_kind": "netns"} if dep == 5
                    else {"client_host": "local", "client_host_kind": "local"})

    beps = pd.DataFrame([row("linux", 2, 200.0, "create_user"), row("linux", 5, 260.0, "create_user"),
                         row("specialized", 2, 100.0, "publish"), row("specialized", 5, 150.0, "publish"),
                         row("linux", 5, 999.0, "subscribe")])  # no d2 pair: no ratio
    out = ratios(beps=beps)
    dep = out[out["comparison"] == "deployment"].set_index(["platform", "op"])
    assert sorted(dep.index) == [("linux", "create_user"), ("specialized", "publish")]
    assert dep.loc[("linux", "create_user"), "ratio"] == 1.3
    assert dep.loc[("specialized", "publish"), "ratio"] == 1.5
    assert set(dep["host"]) == {"emulated host"}
    assert (dep["numerator"] == "d5 (emulated host: edge1)").all()
    assert dep.loc[("linux", "create_user"), "paper_ratio"] == 50.5
    assert "45-56x" in dep.loc[("linux", "create_user"), "note"]


def test_vm_deployment_ratios_carry_the_accelerator_and_never_pool_two():
    """d3 / d2 and d4 / d2 beside the paper's 14-16x and 65-68x; a TCG cell and a KVM cell of the
    same kind give two rows, each labelled with its accelerator."""
    from msdbench.figures.ratios import ratios

    def row(dep, mean, accel=None, host="local", kind="local"):
        return _row("beps", "linux", "tiered", dep, mean, "create_user") | {
            "client_host": host, "client_host_kind": kind, "client_accel": accel}

    beps = pd.DataFrame([row(2, 100.0), row(3, 1500.0, "tcg", "vm1", "vm"),
                         row(4, 6000.0, "tcg", "vm2", "vm"), row(3, 300.0, "kvm", "vm1", "vm")])
    dep = ratios(beps=beps)
    dep = dep[dep["comparison"] == "deployment"].set_index(["deployment", "host"])
    assert sorted(dep.index) == [(3, "VM (KVM)"), (3, "VM (TCG, emulated)"), (4, "VM (TCG, emulated)")]
    assert dep.loc[(3, "VM (TCG, emulated)"), "ratio"] == 15.0 and dep.loc[(3, "VM (KVM)"), "ratio"] == 3.0
    assert dep.loc[(4, "VM (TCG, emulated)"), "ratio"] == 60.0
    assert dep.loc[(3, "VM (KVM)"), "paper_ratio"] == 15.0 and dep.loc[(4, "VM (TCG, emulated)"), "paper_ratio"] == 66.5
    assert "14-16x" in dep.loc[(3, "VM (KVM)"), "note"]
    assert dep.loc[(3, "VM (TCG, emulated)"), "numerator"] == "d3 (VM (TCG, emulated): vm1)"


def test_ratios_say_where_the_server_side_ran_and_never_pool_two_layouts():
    """A d2 with the server side in a VM (`server_host`) is compared with a d1 of the same layout,
    never with the bare host's; each row says which layout produced it."""
    from msdbench.figures.ratios import ratios

    def row(dep, iso, mean, vm=False):
        return _row("micro", "linux", iso, dep, mean, "poll", 0) | (
            {"server_host": "vm0", "server_host_kind": "vm", "server_accel": "tcg"} if vm else
            {"server_host": "local", "server_host_kind": "local", "server_accel": None})

    micro = pd.DataFrame([row(1, "co-located", 10.0), row(2, "isolated", 20.0),
                          row(1, "co-located", 100.0, vm=True), row(2, "isolated", 500.0, vm=True)])
    iso = ratios(micro=micro)
    iso = iso[iso["comparison"] == "isolation"].set_index("server")
    assert sorted(iso.index) == ["VM (TCG, emulated)", "this machine (bare)"]
    assert iso.loc["this machine (bare)", "ratio"] == 2.0 and iso.loc["VM (TCG, emulated)", "ratio"] == 5.0


def test_deployment_3_with_a_server_vm_is_compared_with_d2_of_that_layout_only():
    """d3 with `server_host` (server side in one guest, client in another) over d2 with the same
    server guest; a d3 whose server side ran bare pairs with the bare d2. Labels say both hosts."""
    from msdbench.figures import placement
    from msdbench.figures.ratios import ratios

    def row(dep, mean, server_vm, client):
        server = ({"server_host": "vm0", "server_host_kind": "vm", "server_accel": "tcg"} if server_vm
                  else {"server_host": "local", "server_host_kind": "local", "server_accel": None})
        kind = {"local": "local", "vm0": "vm", "vm1": "vm"}[client]
        return (_row("beps", "linux", "tiered", dep, mean, "publish")
                | server | {"client_host": client, "client_host_kind": kind,
                            "client_accel": "tcg" if kind == "vm" else None})

    beps = pd.DataFrame([row(2, 10.0, False, "local"), row(3, 40.0, False, "vm1"),
                         row(2, 100.0, True, "vm0"), row(3, 300.0, True, "vm1")])
    dep = ratios(beps=beps)
    dep = dep[dep["comparison"] == "deployment"].set_index("server")
    assert dep.loc["this machine (bare)", "ratio"] == 4.0 and dep.loc["VM (TCG, emulated)", "ratio"] == 3.0
    assert dep.loc["VM (TCG, emulated)", "denominator_mean_us"] == 100.0
    labels = dict(zip(zip(beps["deployment"], beps["server_host"]), placement(beps)))
    assert labels == {(2, "local"): "d2", (3, "local"): "d3 (VM (TCG, emulated))",
                      (2, "vm0"): "d2 (VM (TCG, emulated))",
                      (3, "vm0"): "d3 (VM (TCG, emulated)); server: VM (TCG, emulated)"}
