"""The throughput study: the auto sweep's rules, the config, and real sweeps on the process backend
(a clean sweep with the nothing-lost check catching a dropped create, an open-loop sweep, a service
killed during a point, a service that stops answering)."""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time

import pandas as pd
import psutil
import pytest
import yaml

from msdbench.config import ConfigError, throughput_matrix, validate
from msdbench.planning import Cell, plan
from msdbench.throughput import (STATUS_FAILED, STATUS_LOST, STATUS_OK, gains, knee, next_clients,
                                 run_sweep, stalled, table)

from conftest import ROOT

DEFAULT = yaml.safe_load((ROOT / "config/config.yaml").read_text())
SPLIT = len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)
PINNING = "split" if SPLIT else "same-core"


# -- the sweep's rules (pure) -------------------------------------------------------------------

def test_gains_and_stall():
    rps = [1000, 1800, 2000, 2030, 2050]
    assert gains(rps, 0.03) == [True, True, True, False, False]
    assert stalled(rps, patience=2, min_gain=0.03)
    assert not stalled(rps[:4], patience=2, min_gain=0.03)
    # a dip does not reset the best: 2000 -> 1500 -> 2040 is still no 3% gain over 2000
    assert gains([2000, 1500, 2040], 0.03) == [True, False, False]


def test_next_clients_auto():
    auto = {"start": 1, "growth": 1.5, "max_clients": 10, "patience": 2, "min_gain": 0.03}
    assert next_clients([], [], auto) == 1
    assert next_clients([1], [100], auto) == 2
    assert next_clients([1, 2], [100, 190], auto) == 3
    assert next_clients([1, 2, 3], [100, 190, 260], auto) == 5     # ceil(3 * 1.5)
    assert next_clients([1, 2, 3, 5, 8], [1, 2, 3, 4, 5], auto) == 10  # capped at max_clients
    assert next_clients([1, 2, 3, 5, 8, 10], [1, 2, 3, 4, 5, 6], auto) is None
    assert next_clients([1, 2, 3, 5], [100, 190, 191, 192], auto) is None  # two points, no gain


def test_knee_and_peak():
    k = knee([1, 2, 4, 8, 16], [1000, 1800, 2000, 2030, 1900], 0.03)
    assert (k["knee_clients"], k["peak_clients"], k["peak_rps"]) == (4, 8, 2030)


def test_auto_sweep_stops_two_points_after_the_knee(monkeypatch):
    """The sweep loop with a fake point: throughput rises to 4 clients, then flattens."""
    import msdbench.throughput.sweep as tp
    from msdbench import hostload

    curve = {1: 1000, 2: 1900, 3: 2600, 4: 3000, 5: 3050, 7: 2900, 9: 3000}

    def fake_point(dep, st, index, clients, rate=None, on_point=None):
        return {"index": index, "clients": clients, "offered_rps": rate, "status": STATUS_OK,
                "rps": curve[clients], "completed": 1, "wall_s": 1.0, "latency": {},
                "domains": {}, "census": {"ok": True}}, []

    monkeypatch.setattr(tp, "run_point", fake_point)
    st = tp.SweepSettings(clients="auto", auto={"start": 1, "growth": 1.25, "max_clients": 32,
                                                "patience": 2, "min_gain": 0.03})
    points, _ = tp.sweep(None, st, log=lambda _: None)
    assert [p["clients"] for p in points] == [1, 2, 3, 4, 5, 7]
    sw = tp.summarize_sweep(points, st)
    assert (sw["knee_clients"], sw["peak_clients"], sw["saturated"]) == (4, 5, True)


def test_a_point_disturbed_by_other_work_is_measured_again(monkeypatch):
    import msdbench.throughput.sweep as tp
    from msdbench import hostload

    loads = iter([0.9, 0.05, 0.05])  # the first attempt at 1 client was disturbed

    def fake_point(dep, st, index, clients, rate=None, on_point=None):
        return {"index": index, "clients": clients, "offered_rps": None, "status": STATUS_OK,
                "rps": 1000.0 * clients, "completed": 1, "wall_s": 1.0, "latency": {},
                "domains": {}, "census": {"ok": True},
                "host": {"unaccounted_util": next(loads)}}, []

    monkeypatch.setattr(tp, "run_point", fake_point)
    monkeypatch.setattr(hostload, "other_load", lambda seconds=1.0, cpus=None: 0.0)
    st = tp.SweepSettings(clients=[1, 2], quiet={"max_unaccounted": 0.3, "retries": 2})
    points, _ = tp.sweep(None, st, log=lambda _: None)
    assert [(p["clients"], p["attempt"], p["status"]) for p in points] == [
        (1, 0, tp.STATUS_DISTURBED), (1, 1, STATUS_OK), (2, 0, STATUS_OK)]
    assert [p["index"] for p in points] == [0, 1, 2]
    assert tp.summarize_sweep(points, st)["disturbed_attempts"] == 1


# -- config --------------------------------------------------------------------------------------

def test_default_config_expands_throughput_sweeps():
    jobs = throughput_matrix(validate(copy.deepcopy(DEFAULT)))
    assert jobs, "the default config should run the throughput study"
    stems = {j.stem for j in jobs}
    assert "throughput/closed/linux/process/co-located/d5" in stems
    for j in jobs:  # the paper's deployment: the clients on another host (an emulated one here)
        assert j.cell.deployment == 5 and j.settings["throughput"]["mode"] == j.axes["mode"]
        assert j.settings["client_host"] == "edge1"
        assert j.settings["hosts"]["edge1"]["kind"] == "netns"
    # deployment 2 is still there for the asking; docker sweeps go to deployment 5 too
    two = throughput_matrix(validate(copy.deepcopy(DEFAULT) | {"throughput": DEFAULT["throughput"]
                                                               | {"deployment": 2}}))
    assert {j.cell.deployment for j in two} == {2} and "client_host" not in two[0].settings
    docker = throughput_matrix(validate(copy.deepcopy(DEFAULT) | {"backends": ["process", "docker"]}))
    assert {(j.cell.backend, j.cell.deployment) for j in docker} == {("process", 5), ("docker", 5)}
    closed = next(j for j in jobs if j.axes["mode"] == "closed").settings["throughput"]
    assert "rates" not in closed  # the open loop's rates do not shape the closed sweeps


def test_config_without_throughput_is_still_valid():
    c = copy.deepcopy(DEFAULT)
    c.pop("throughput", None)
    assert throughput_matrix(validate(c)) == []


@pytest.mark.parametrize("change,expect", [
    ({"clients": "many"}, ["throughput.clients"]),
    ({"clients": [0, 2]}, ["throughput.clients"]),
    ({"modes": ["closed", "sideways"]}, ["throughput.modes[1]", "'sideways'"]),
    ({"pairs_per_client": 0}, ["throughput.pairs_per_client", "minimum of 1"]),
    ({"open": None, "modes": ["open"]}, ["throughput.open"]),
])
def test_bad_throughput_config_names_the_field(change, expect):
    c = copy.deepcopy(DEFAULT)
    c.setdefault("throughput", {"isolations": ["co-located"], "modes": ["closed"]})
    for k, v in change.items():
        if v is None:
            c["throughput"].pop(k, None)
        else:
            c["throughput"][k] = v
    with pytest.raises(ConfigError) as e:
        validate(c)
    for text in expect:
        assert text in str(e.value), f"{text!r} not in: {e.value}"


# -- real sweeps -----------------------------------------------------------------------------------

def manifest(isolation: str, **sweep):
    settings = {"pinning": PINNING, "workers": 2, "deadline_s": 120,
                "throughput": {"mode": "closed", "warmup_pairs": 5, "point_deadline_s": 60} | sweep}
    return plan(Cell("beps", "linux", "process", isolation, 2), settings)


def assert_all_ended(meta: dict) -> None:
    """Every process a point started (driver's domain, coordinator, workers) is gone."""
    pids = set()
    for p in meta["points"]:
        pids.update(x for x in [p["pids"]["coordinator"], *p["pids"]["workers"]] if x)
    pids.update(d["pid"] for d in meta["placement"].values() if isinstance(d, dict) and d.get("pid"))
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.1)
    assert not alive, f"left running: {alive}"


def test_short_sweep_and_a_dropped_create_is_caught(tmp_path, no_leftovers):
    """Three points on one deployment; before point 1 the user DB is told to acknowledge one create
    without storing it: that point (only) is flagged lost-data, the others pass the check."""
    def arm(dep, point):
        if point["index"] == 1:
            dep.set_fault("userdb", "drop_create", 1)

    m = manifest("co-located", clients=[1, 2, 3], pairs_per_client=150)
    meta = run_sweep(m, tmp_path / "s.parquet", tmp_path / "s.json", workdir=tmp_path / "w",
                     on_point=arm, log=lambda _: None)
    assert json.loads((tmp_path / "s.json").read_text())["status"] == "ok"
    p0, p1, p2 = meta["points"]
    assert [p["status"] for p in meta["points"]] == [STATUS_OK, STATUS_LOST, STATUS_OK]
    for p, n in zip(meta["points"], (1, 2, 3)):
        assert p["clients"] == n and len(p["per_client"]) == n
        assert p["rps"] > 0 and p["wall_s"] > 0
        assert p["census"]["checked"]
    assert p0["completed"] == 2 * 150 and p0["census"]["lost_users"] == 0
    assert p2["completed"] == 3 * 2 * 150 and p2["census"]["lost_users"] == 0
    # the dropped create: acknowledged, never stored; its delete then fails with UnknownUser
    assert p1["census"]["lost_users"] == 1
    assert p1["call_errors"] + p1["warmup_errors"] == 1
    assert meta["sweep"]["any_lost"] and meta["sweep"]["lost_data_points"] == [1]
    # the knee and peak only from good points
    assert meta["sweep"]["peak_clients"] in (1, 3)
    # where everything ran, and what it cost
    if SPLIT:
        assert meta["placement"]["client_workers"] == [[0]]
        for name, d in meta["placement"].items():
            if name not in ("client", "client_workers"):
                assert d["affinity"] == [1], (name, d)
    assert set(p0["domains"]) == {"server", "client"}
    assert p0["domains"]["server"]["cpu_s"] > 0 and p0["domains"]["server"]["rss_mb"] > 0
    # raw samples: every timed call plus the warm-up rows, marked
    raw = pd.read_parquet(tmp_path / "s.parquet")
    timed = raw[~raw["warmup"]]
    assert len(timed) == 2 * 150 * (1 + 2 + 3)
    assert len(raw) - len(timed) == 2 * 5 * (1 + 2 + 3)
    assert set(timed["op"]) == {"create_user", "delete_user"}
    assert (timed["latency_ns"] > 0).all()
    # the table: a row per point, the knee marked once
    t = table([tmp_path / "s.json"])
    assert list(t["clients"]) == [1, 2, 3]
    assert list(t["status"]) == [STATUS_OK, STATUS_LOST, STATUS_OK]
    assert t["is_knee"].sum() == 1
    assert t.loc[1, "lost_users"] == 1 and "acknowledged" in t.loc[1, "failure"]
    assert_all_ended(meta)


def test_open_loop_sweep(tmp_path, no_leftovers):
    """Two offered rates; during the second, the server side is frozen (SIGSTOP) for ~300 ms.
    Every request whose intended send time fell inside the stall must have a latency that runs
    to the stall's end at least: latency is timed from the intended send time, so a client held
    up by the backlog cannot hide it (no coordinated omission)."""
    stall = {}

    def freeze(dep, point):
        if point["index"] != 1:
            return
        pid = dep.placement()[dep.manifest.service("lb").domain]["pid"]
        base = dep.counters("lb")["calls"]["create_user"]

        def run():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the timed phase is under way (warm-up: 2 x 5)
                if dep.counters("lb")["calls"]["create_user"] - base >= 10 + 40:
                    break
                time.sleep(0.01)
            os.kill(pid, signal.SIGSTOP)
            stall["from_ns"] = time.monotonic_ns()  # the server side answers nothing from here
            time.sleep(0.3)
            stall["to_ns"] = time.monotonic_ns()    # ... to at least here
            os.kill(pid, signal.SIGCONT)

        stall["thread"] = threading.Thread(target=run, daemon=True)
        stall["thread"].start()

    m = manifest("tiered", mode="open", open_clients=2, rates=[200, 400], open_duration_s=1.0)
    meta = run_sweep(m, tmp_path / "o.parquet", tmp_path / "o.json", workdir=tmp_path / "w",
                     on_point=freeze, log=lambda _: None)
    stall["thread"].join(10)
    assert "to_ns" in stall, "the stall never happened"
    assert [p["status"] for p in meta["points"]] == [STATUS_OK, STATUS_OK]
    for p, rate in zip(meta["points"], (200, 400)):
        assert p["offered_rps"] == rate and p["clients"] == 2
        assert p["completed"] == 2 * 2 * round(rate / 2 * 1.0 / 2)  # 2 clients, pairs
        assert p["latency"]["n"] == p["completed"]
    raw = pd.read_parquet(tmp_path / "o.parquet")
    timed = raw[~raw["warmup"]]
    # intended send times are on the schedule: one client's are 1/rate apart
    one = timed[(timed["point"] == 0) & (timed["client"] == 0)]["intended_ns"].diff().dropna()
    assert abs(one.median() - 1e9 / 100) < 1e3
    # the stalled point: requests due inside the stall
    p1 = timed[timed["point"] == 1]
    due = meta["points"][1]["start_ns"] + p1["intended_ns"]
    inside = p1[(due >= stall["from_ns"]) & (due < stall["to_ns"])]
    due_inside = due[inside.index]
    assert len(inside) >= 0.2 * 400 * 0.5, "the stall fell outside the timed phase"
    assert (inside["latency_ns"] >= stall["to_ns"] - due_inside).all(), \
        (inside["latency_ns"] - (stall["to_ns"] - due_inside)).min()
    # most of them went out only after the stall, late: their service time alone is short
    late = inside[inside["send_ns"] + meta["points"][1]["start_ns"] >= stall["to_ns"]]
    assert len(late) >= len(inside) - 2, "one call in flight per client at most"
    assert (late["service_ns"] < late["latency_ns"]).all()
    assert meta["points"][1]["latency"]["max_us"] >= (stall["to_ns"] - due_inside.min()) / 1e3
    assert_all_ended(meta)


def _kill_when_busy(victim: str, sig: int, at_point: int, after_creates: int = 50):
    """An on_point hook: at point `at_point`, once the load balancer has forwarded
    `after_creates` more creates (the timed phase is under way), send `sig` to the domain that
    holds `victim`."""
    def hook(dep, point):
        if point["index"] != at_point:
            return
        base = dep.counters("lb")["calls"]["create_user"]
        pid = dep.placement()[dep.manifest.service(victim).domain]["pid"]
        lb = dep.handle_of("lb")

        def watch():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                calls = json.loads(dep.call(lb, "counters", "lb"))["calls"]["create_user"]
                if calls - base >= after_creates:
                    break
                time.sleep(0.02)
            os.kill(pid, sig)
            hook.killed_at = time.monotonic()

        threading.Thread(target=watch, daemon=True).start()
    return hook


def test_service_killed_during_a_point_is_named_and_nothing_is_left(tmp_path, no_leftovers):
    hook = _kill_when_busy("userdb", signal.SIGKILL, at_point=1)
    m = manifest("isolated", clients=[1, 2, 4], duration_s=1.5)
    meta = run_sweep(m, tmp_path / "k.parquet", tmp_path / "k.json", workdir=tmp_path / "w",
                     on_point=hook, log=lambda _: None)
    assert hasattr(hook, "killed_at"), "the hook never fired"
    points = meta["points"]
    assert [p["status"] for p in points] == [STATUS_OK, STATUS_FAILED]  # the sweep stopped
    f = points[1]["failure"]
    (culprit,) = f["culprits"]
    assert culprit["domain"] == "userdb" and culprit["services"] == ["userdb"]
    assert "SIGKILL" in culprit["status"]
    assert "log_tail" in culprit
    assert "userdb" in f["summary"] and "SIGKILL" in f["summary"]
    sw = meta["sweep"]
    assert sw["last_good_clients"] == 1 and sw["failed_clients"] == 2
    assert not sw["any_lost"]  # a failed point's census proves nothing either way
    t = table([tmp_path / "k.json"])
    row = t[t["status"] == STATUS_FAILED].iloc[0]
    assert "userdb" in row["failure"] and row["last_good_clients"] == 1
    assert_all_ended(meta)


def test_service_that_stops_answering_is_named(tmp_path, no_leftovers):
    hook = _kill_when_busy("payloaddb", signal.SIGSTOP, at_point=0)
    m = manifest("isolated", clients=[2, 4], duration_s=2.0, point_deadline_s=4)
    meta = run_sweep(m, tmp_path / "h.parquet", tmp_path / "h.json", workdir=tmp_path / "w",
                     on_point=hook, log=lambda _: None)
    (p,) = meta["points"]
    assert p["status"] == STATUS_FAILED
    (culprit,) = p["failure"]["culprits"]
    assert culprit["domain"] == "payloaddb" and "not answering" in culprit["status"]
    assert meta["sweep"]["last_good_clients"] is None
    assert_all_ended(meta)
