"""One point of a throughput sweep: run the throughput driver with N clients (or at one offered
rate) on a deployment that is already up, and around it: each domain's CPU and memory, the host's
load, the nothing-lost check, and, when something failed, which domain and why."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from msdbench.backends.base import BackendError, Deployment
from msdbench.culprits import culprits_summary
from msdbench.hostload import host_cpu, host_load
from msdbench.results import summarize

STATUS_OK, STATUS_LOST, STATUS_FAILED = "ok", "lost-data", "failed"
STATUS_DISTURBED = "disturbed"  # other work on the host disturbed it; measured again


def _usage(before: dict, after: dict, window_s: float, calls: int, rps: float) -> dict:
    """Per domain: CPU seconds over the point's window, RSS at its end, and two utilisations:
    `window_util` = CPU / the window's wall time (the window includes the clients' start-up, when
    the server side idles, so it understates a saturated server); `util` = CPU per call
    (warm-up calls included on both sides) x the timed phase's calls per second: the share of a
    CPU the domain used while the clients were running (1.0 = one CPU)."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        if "error" in a or "error" in b:
            out[name] = {"error": a.get("error") or b.get("error")}
            continue
        cpu = (a["user_s"] + a["system_s"]) - (b["user_s"] + b["system_s"])
        wall = (a["wall_ns"] - b["wall_ns"]) / 1e9 or window_s
        per_call = cpu / calls if calls else None
        out[name] = {"cpu_s": round(cpu, 3),
                     "cpu_us_per_call": round(per_call * 1e6, 1) if per_call else None,
                     "util": round(per_call * rps, 3) if per_call else None,
                     "window_util": round(cpu / wall, 3) if wall > 0 else None,
                     "rss_mb": round(a["rss_bytes"] / 2**20, 1), "pid": a["pid"]}
    return out


def _census_check(r: dict) -> dict:
    """The nothing-lost check of one point, from the driver's census and the clients' counts."""
    before, after = r.get("census_before"), r.get("census_after")
    acked_creates = acked_deletes = 0
    for c in r.get("results", []):
        acked_creates += c["creates_ok"] + c["warmup"]["creates_ok"]
        acked_deletes += c["deletes_ok"] + c["warmup"]["deletes_ok"]
    out = {"acked_creates": acked_creates, "acked_deletes": acked_deletes,
           "census_before": before, "census_after": after}
    if not isinstance(before, dict) or not isinstance(after, dict):
        out.update(checked=False, lost_users=None,
                   why="census not possible: " + str(after if not isinstance(after, dict) else before))
        return out
    expected = before["users"] + acked_creates - acked_deletes
    out.update(checked=True, expected_users=expected, lost_users=expected - after["users"],
               extra_messages=after["messages"] - before["messages"],
               extra_feed_entries=after["feed_entries"] - before["feed_entries"])
    out["ok"] = (out["lost_users"] == 0 and out["extra_messages"] == 0
                 and out["extra_feed_entries"] == 0)
    if not out["ok"]:
        out["why"] = (f"the user DB holds {after['users']} users where the acknowledged calls say "
                      f"{expected} ({before['users']} before + {acked_creates} creates - "
                      f"{acked_deletes} deletes acknowledged)")
    return out


def _point_numbers(r: dict, mode: str) -> tuple[dict, list[pd.DataFrame]]:
    """Throughput and latency of one point, and its raw rows."""
    from msdbench.drivers.throughput import OPS, unpack

    results = r.get("results", [])
    frames, per_client = [], []
    lat_all, svc_all = [], []
    for c in results:
        s = {k: unpack(v) for k, v in c["samples"].items()}
        ok = s["ok"].astype(bool)
        lat = s["latency_ns"]
        n = len(lat)
        intended = s.get("intended_ns", np.full(n, -1, dtype=np.int64))
        service = lat - (s["send_ns"] - intended) if "intended_ns" in s else lat
        lat_all.append(lat[ok])
        svc_all.append(service[ok])
        dur = ((c["last_done_ns"] - c["first_send_ns"]) / 1e9) if n else 0.0
        row = {"client": c["client"], "completed": c["completed"], "attempted": c["attempted"],
               "duration_s": round(dur, 4), "rps": round(c["completed"] / dur, 1) if dur else 0.0,
               "cpu_s": round(c["usage"]["user_s"] + c["usage"]["system_s"], 3),
               "affinity": c["affinity"], "error": c.get("error"), "errors": c.get("errors", {})}
        if ok.any():
            row.update(p50_us=round(float(np.percentile(lat[ok], 50)) / 1e3, 1),
                       p99_us=round(float(np.percentile(lat[ok], 99)) / 1e3, 1))
        per_client.append(row)
        wl = unpack(c["warmup"]["latency_ns"])
        wops = np.tile(np.array([0, 1], dtype=np.uint8), len(wl) // 2)
        frames.append(pd.DataFrame({
            "client": np.int32(c["client"]), "warmup": np.r_[np.ones(len(wl), bool), np.zeros(n, bool)],
            "op": pd.Categorical.from_codes(np.r_[wops, s["op"]].astype(np.int8),
                                            [OPS[0], OPS[1]]),
            "intended_ns": np.r_[np.full(len(wl), -1, np.int64), intended],
            "send_ns": np.r_[np.full(len(wl), -1, np.int64), s["send_ns"]],
            "latency_ns": np.r_[wl, lat],
            "service_ns": np.r_[wl, service],
            "ok": np.r_[np.ones(len(wl), bool), ok]}))
    completed = sum(c["completed"] for c in results)
    ends = [c["last_done_ns"] for c in results if c["last_done_ns"] is not None]
    wall = max(ends) / 1e9 if ends else 0.0
    numbers = {
        "completed": completed,
        "attempted": sum(c["attempted"] for c in results),
        "call_errors": sum(sum(c.get("errors", {}).values()) for c in results),
        "warmup_errors": sum(sum(c["warmup"].get("errors", {}).values()) for c in results),
        "wall_s": round(wall, 4),
        "rps": round(completed / wall, 1) if wall > 0 else 0.0,
        "rps_sum_clients": round(sum(c["rps"] for c in per_client), 1),
        "latency": summarize(np.concatenate(lat_all)) if lat_all else {"n": 0},
        "per_client": per_client,
        "client_cpu_s": round(sum(c["cpu_s"] for c in per_client), 3),
    }
    if mode == "open":
        numbers["service_latency"] = summarize(np.concatenate(svc_all)) if svc_all else {"n": 0}
    return numbers, frames


def run_point(dep: Deployment, st, index: int, clients: int,
              rate: float | None = None, on_point=None) -> tuple[dict, list[pd.DataFrame]]:
    (edge,) = dep.manifest.edges_from(dep.manifest.client)
    spec = {"driver": "throughput", "mode": st.mode, "clients": clients,
            "entry": {"kind": dep.manifest.service(edge.callee).kind, "transport": edge.transport,
                      "address": edge.address},
            "warmup_pairs": st.warmup_pairs, "name_prefix": f"p{index}",
            "deadline_s": st.point_deadline_s}
    if st.mode == "closed":
        spec.update(pairs_per_client=st.pairs_per_client, duration_s=st.duration_s)
    else:
        spec.update(rate_rps=rate, duration_s=st.open_duration_s)
    point = {"index": index, "clients": clients, "offered_rps": rate}
    before = dep.probe()
    if on_point is not None:
        on_point(dep, point)
    host_before, t0 = host_cpu(), time.monotonic()
    try:
        r, driver_error = dep.run_driver(spec), None
    except BackendError as e:
        r, driver_error = {"ok": False, "results": [], "failures": []}, str(e)
    window, host_after = time.monotonic() - t0, host_cpu()
    after = dep.probe()
    point["pids"] = {"driver": r.get("driver_pid"), "coordinator": r.get("coordinator_pid"),
                     "workers": r.get("worker_pids", [])}
    point["window_s"] = round(window, 3)
    point["ready_s"] = r.get("ready_s")
    point["start_ns"] = r.get("start_ns")  # the clients' common start (CLOCK_MONOTONIC): raw offsets count from it
    numbers, frames = _point_numbers(r, st.mode)
    point.update(numbers)
    calls = numbers["completed"] + sum(c["warmup"]["creates_ok"] + c["warmup"]["deletes_ok"]
                                       for c in r.get("results", []))
    point["calls_with_warmup"] = calls
    point["domains"] = _usage(before, after, window, calls, numbers["rps"])
    ours = (sum(d.get("cpu_s", 0.0) for d in point["domains"].values())
            + numbers["client_cpu_s"] + (r.get("coordinator_cpu_s") or 0.0))
    point["host"] = host_load(host_before, host_after, ours, window)
    point["census"] = _census_check(r)
    failed = bool(driver_error) or not r.get("ok", False)
    culprits = dep.culprits(after) if failed or any("error" in a for a in after.values()) else []
    if failed or culprits:
        point["status"] = STATUS_FAILED
        point["failure"] = {"culprits": culprits, "driver_error": driver_error,
                            "client_failures": r.get("failures", []),
                            "stderr_tail": r.get("stderr_tail")}
        point["failure"]["summary"] = _failure_summary(point["failure"])
    elif not point["census"]["checked"]:
        point["status"] = STATUS_FAILED
        point["failure"] = {"culprits": [], "driver_error": None, "client_failures": [],
                            "stderr_tail": None, "summary": "the nothing-lost check could not run: "
                                                            + point["census"]["why"]}
    elif not point["census"]["ok"]:
        point["status"] = STATUS_LOST
    elif point["call_errors"] or point["warmup_errors"]:
        # Every name is unique and every pair complete: a healthy run has no failed call.
        errors: dict[str, int] = {}
        for c in r.get("results", []):
            for k, v in list(c.get("errors", {}).items()) + list(c["warmup"]["errors"].items()):
                errors[k] = errors.get(k, 0) + v
        point["status"] = STATUS_FAILED
        point["failure"] = {"culprits": [], "driver_error": None, "client_failures": [],
                            "stderr_tail": None,
                            "summary": f"calls failed although every service answered: {errors}"}
    else:
        point["status"] = STATUS_OK
    for f in frames:
        f.insert(0, "offered_rps", np.float64(rate) if rate is not None else np.nan)
        f.insert(0, "clients", np.int32(clients))
        f.insert(0, "point", np.int32(index))
    return point, frames


def _failure_summary(f: dict) -> str:
    if f["culprits"]:
        return culprits_summary(f["culprits"])
    if f["driver_error"]:
        return f["driver_error"].splitlines()[0]
    errs = [c["error"] for c in f["client_failures"]]
    return (f"{len(errs)} client(s) failed, no domain died or stopped answering: {errs[0]}"
            if errs else "the driver reported a failure")

def one_point_line(p: dict) -> str:
    lat = p.get("latency", {})
    head = f"point {p['index']}: {p['clients']} clients"
    if p.get("offered_rps") is not None:
        head += f" offered {p['offered_rps']:g} rps"
    line = (f"{head}: {p['rps']:.0f} rps ({p['completed']} calls in {p['wall_s']:.2f} s), "
            f"p50 {lat.get('p50_us', float('nan')):.0f} us p99 {lat.get('p99_us', float('nan')):.0f} us"
            f" [{p['status']}]")
    busiest = max(((n, d.get("util") or 0) for n, d in p["domains"].items()), key=lambda x: x[1],
                  default=None)
    if busiest:
        line += f" busiest domain {busiest[0]} {busiest[1]:.0%}"
    if p["status"] == STATUS_FAILED:
        line += f"\n  failure: {p['failure']['summary']}"
    elif p["status"] == STATUS_LOST:
        line += f"\n  lost data: {p['census'].get('why')}"
    return line
