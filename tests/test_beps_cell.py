"""BEPS on the pipeline: real domains for every isolation, the correctness check, round robin, and
errors that travel as Thrift exceptions without breaking the services."""

import json

import pandas as pd
import pytest

from msdbench.aggregate import table
from msdbench.backends.process import ProcessBackend
from msdbench.cell import run_cell
from msdbench.planning import Cell, plan
from msdbench.services import KINDS
from msdbench.services.beps import DuplicateUser, UnknownUser
from msdbench.transports import bindings

SMALL = {"users": 30, "active_users": 6, "follows_per_user": 3, "publishes_per_user": 2}
OPS = {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"}


@pytest.mark.parametrize("isolation", ["co-located", "tiered", "isolated"])
@pytest.mark.parametrize("deployment", [1, 2])
def test_real_cell_is_correct_for_every_isolation(tmp_path, no_leftovers, isolation, deployment):
    m = plan(Cell("beps", "linux", "process", isolation, deployment),
             {"workers": 3, "workload": SMALL})
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    assert meta["status"] == "ok", meta["driver"]["problems"]
    df = pd.read_parquet(tmp_path / "c.parquet")
    df = df[df["op"] != "echo"]  # the cell's TCP echo reference
    assert set(df["op"]) == OPS
    counts = df.groupby("op").size().to_dict()
    assert counts["create_user"] == 30 and counts["delete_user"] == 30
    assert counts["subscribe"] == counts["unsubscribe"] == 18 and counts["publish"] == 12
    # The LB's own time is inside the client's round trip.
    assert (df["server_ns"] > 0).all() and (df["server_ns"] < df["e2e_ns"]).all()
    expected_domains = {"co-located": 1, "tiered": 3, "isolated": 4 + 3}[isolation] + (deployment == 2)
    assert len(meta["placement"]) - 1 == expected_domains  # minus the client_driver entry


def test_dropped_feed_update_fails_the_cell_and_the_table_says_so(tmp_path, no_leftovers):
    m = plan(Cell("beps", "linux", "process", "tiered", 2), {"workers": 2, "workload": SMALL})
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json",
                    faults=[("reader", "drop_feed_update", 1)])
    assert meta["status"] == "failed-check"
    problems = " ".join(meta["driver"]["problems"])
    assert "feed" in problems and "lacks" in problems, problems
    on_disk = json.loads((tmp_path / "c.json").read_text())
    assert on_disk["status"] == "failed-check" and on_disk["faults_injected"]
    rows = table("beps", [tmp_path / "c.json"])
    assert set(rows["status"]) == {"failed-check"} and rows["problems"].str.contains("feed").all()


def _entry(dep):
    (edge,) = dep.manifest.edges_from("client")
    return bindings.connect(edge.transport, KINDS["lb"], edge.address, timeout=30)


def test_round_robin_and_errors_through_real_domains(no_leftovers):
    m = plan(Cell("beps", "linux", "process", "isolated", 2), {"workers": 5})
    with ProcessBackend().up(m) as dep:
        lb = _entry(dep)
        for i in range(10):
            lb.create_user(f"user{i:06d}")
        assert dep.counters("lb")["per_worker"] == [2, 2, 2, 2, 2]
        for i in range(5):
            assert dep.counters(f"worker{i}")["calls"]["create_user"] == 2

        with pytest.raises(DuplicateUser):
            lb.create_user("user000001")
        assert lb.create_user("user000010").server_ns > 0  # the next call still succeeds
        with pytest.raises(UnknownUser):
            lb.subscribe("user000001", "nobody-here")
        with pytest.raises(UnknownUser):
            lb.publish("ghost00000", "x" * 280)
        lb.subscribe("user000002", "user000001")
        lb.publish("user000001", "hello")
        assert [msg.text for msg in lb.get_feed("user000002")] == ["hello"]
        lb.close()


# The paper's fan-out: 21 active users who each follow the 20 others, so every publish updates 20
# feeds (the paper: 500 active users x 20 follows).
FANOUT = {"users": 40, "active_users": 21, "follows_per_user": 20, "publishes_per_user": 2}


@pytest.mark.parametrize("isolation", ["tiered", "isolated"])
def test_paper_fan_out_every_feed_gets_every_update(no_leftovers, isolation):
    m = plan(Cell("beps", "linux", "process", isolation, 2), {"workers": 5, "workload": FANOUT})
    with ProcessBackend().up(m) as dep:
        r = dep.run_driver({"driver": "beps", "workload": FANOUT, "deadline_s": 300})
        assert r["correct"], r["problems"]
        publishes = 21 * 2
        # every publisher has 20 followers, and each follower's feed got one update per message
        assert dep.counters("reader")["calls"]["update_feed"] == publishes * 20
        assert dep.counters("lb")["calls"]["publish"] == publishes
        # one update lost out of 840: the feeds check names the follower that lacks it
        dep.set_fault("reader", "drop_feed_update", 1)
        r = dep.run_driver({"driver": "beps", "workload": FANOUT, "deadline_s": 300})
        assert not r["correct"], "a lost feed update passed the check"
        lacks = [x for x in r["problems"] if "lacks" in x]
        assert len(lacks) == 1 and "lacks 1 of 40 messages" in lacks[0], r["problems"]
        assert any("feed_entries=839" in x for x in r["problems"]), r["problems"]
