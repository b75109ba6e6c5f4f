"""The throughput study (paper section 4.3, fig 11): requests per second against concurrent
clients, up to the saturation point; and, open loop, latency against offered load.

One sweep = one manifest (isolation x platform x backend, the client in its own domain:
deployment 2) brought up once, then a series of points run on it one after the other:

  closed loop: a point per client count N, from a list or `auto` (start at 1 and add clients
               until the last `patience` points each failed to beat the best so far by
               `min_gain`, e.g. two steps without a 3% gain; or until `max_clients`);
  open loop:   a point per offered rate, with a fixed number of clients.

Each point runs the throughput driver (msdbench/drivers/throughput.py) inside the client's
domain, and around it:
  * CPU time (user + system) and RSS of every domain from its control service's `stats()`, before
    and after: where the capacity goes. The window is the whole point (worker start-up and the
    short warm-up included; the timed phase is most of it), so utilisation is CPU seconds over
    the window's wall time (1.0 = one CPU busy the whole time);
  * the nothing-lost check: the user DB (census() through the entry service) must hold exactly
    the users the clients' acknowledged calls say it should: census before + creates acked -
    deletes acked (zero after complete pairs), and no messages or feed entries appear;
  * failure capture: when a client reports a transport failure, or the driver or a domain's
    control service does not answer, every domain is probed (its exit status, then a control
    call with a short timeout); the point records which domain (and its services) died or
    stopped answering, the exit code or signal, the tail of its log, and the last good N.
    The sweep then stops; the deployment is always torn down.

Throughput of a point: all completed (acknowledged) timed calls / wall time of the timed phase
(from the common start to the last completion of any client). The paper's clients each printed
their own rate; the sum of per-client rates (each over its own first send .. last completion) is
kept beside it as `rps_sum_clients`.

Results: one sweep writes its raw samples (a row per call, every point, warm-up rows marked) as
Parquet and its metadata (every point's numbers, the knee, the failure) as JSON, both atomically
and only once the sweep has ended (an interrupted sweep leaves nothing Snakemake takes as done).
A failed point or one that lost data is recorded as such, never as a good result.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from msdbench.backends.base import BackendError, Deployment
from msdbench.manifest import Manifest
from msdbench.results import atomic_write_csv, atomic_write_parquet, summarize

STATUS_OK, STATUS_LOST, STATUS_FAILED = "ok", "lost-data", "failed"
STATUS_DISTURBED = "disturbed"  # other work on the host disturbed it; measured again
PROBE_TIMEOUT_S = 5.0
DEFAULT_AUTO = {"start": 1, "growth": 1.25, "max_clients": 32, "patience": 2, "min_gain": 0.03}
MODES = ("closed", "open")


# -- settings ---------------------------------------------------------------------------------

@dataclass
class SweepSettings:
    """What a sweep does; read from manifest.settings["throughput"] (see config.schema.yaml)."""
    mode: str = "closed"
    clients: list[int] | str = field(default_factory=lambda: [1, 2, 4, 8])
    auto: dict = field(default_factory=lambda: dict(DEFAULT_AUTO))
    pairs_per_client: int = 1000
    duration_s: float | None = None     # closed loop: run each point this long instead
    warmup_pairs: int = 50
    open_clients: int = 4
    rates: list[float] = field(default_factory=list)
    open_duration_s: float = 2.0
    point_deadline_s: float = 120.0
    quiet: dict | None = None           # {max_unaccounted, wait_s, retries}; None = off

    @classmethod
    def from_settings(cls, s: dict) -> "SweepSettings":
        t = dict(s.get("throughput") or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(t) - known
        if unknown:
            raise ValueError(f"throughput settings: unknown keys {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        out = cls(**t)
        out.auto = DEFAULT_AUTO | (out.auto or {})
        if out.mode not in MODES:
            raise ValueError(f"throughput mode: {out.mode!r} is not one of {MODES}")
        if out.mode == "open" and not out.rates:
            raise ValueError("throughput mode 'open' needs at least one offered rate (rates)")
        if out.clients != "auto" and (not out.clients or min(out.clients) < 1):
            raise ValueError(f"throughput clients: {out.clients!r} must be 'auto' or a "
                             "non-empty list of counts >= 1")
        return out


# -- the auto sweep and the knee ----------------------------------------------------------------

def gains(rps: list[float], min_gain: float) -> list[bool]:
    """For each point: did it beat every earlier point by at least min_gain? (the first does)"""
    out, best = [], -math.inf
    for r in rps:
        out.append(r >= best * (1 + min_gain) if best > 0 else True)
        best = max(best, r)
    return out


def stalled(rps: list[float], patience: int, min_gain: float) -> bool:
    """The last `patience` points each failed to gain: throughput has stopped rising."""
    g = gains(rps, min_gain)
    return len(g) > patience and not any(g[-patience:])


def next_clients(done: list[int], rps: list[float], auto: dict) -> int | None:
    """The auto sweep's next client count, or None when it is over."""
    if not done:
        return int(auto["start"])
    if stalled(rps, int(auto["patience"]), float(auto["min_gain"])):
        return None
    last = done[-1]
    if last >= int(auto["max_clients"]):
        return None
    return min(int(auto["max_clients"]), max(last + 1, math.ceil(last * float(auto["growth"]))))


def knee(clients: list[int], rps: list[float], min_gain: float) -> dict:
    """Peak: the highest throughput. Knee: the last point that beat every earlier one by min_gain
    (beyond it, adding clients never bought another `min_gain`)."""
    if not rps:
        return {"peak_clients": None, "peak_rps": None, "knee_clients": None, "knee_rps": None}
    g = gains(rps, min_gain)
    k = max(i for i, x in enumerate(g) if x)
    p = int(np.argmax(rps))
    return {"peak_clients": clients[p], "peak_rps": round(rps[p], 1),
            "knee_clients": clients[k], "knee_rps": round(rps[k], 1)}


# -- one point ----------------------------------------------------------------------------------

def _domain_stats(dep: Deployment) -> dict:
    """Each domain's control stats, or the error that asking it raised."""
    out = {}
    for name, h in dep.handles.items():
        if dep.backend.exit_status(h):
            out[name] = {"error": f"ended ({dep.backend.exit_status(h)})"}
            continue
        try:
            out[name] = json.loads(dep.call(h, "stats", timeout=PROBE_TIMEOUT_S))
        except BackendError as e:
            out[name] = {"error": str(e).splitlines()[0]}
    return out


def _host_cpu() -> dict[str, list[int]] | None:
    """Per CPU of the harness's host: [busy, total] jiffies (busy includes steal)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            v = [int(x) for x in f[1:9]]  # user nice system idle iowait irq softirq steal
            out[f[0]] = [sum(v) - v[3] - v[4], sum(v)]
    return out


def _host_load(before, after, ours_s: float, window_s: float) -> dict | None:
    """How busy each CPU of this host was during the point, and the CPU time our processes do
    not account for (other tenants, kernel work, steal): a point measured on a busy machine
    says so."""
    if not before or not after:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = {c: (after[c][0] - before[c][0]) / max(after[c][1] - before[c][1], 1)
            for c in after if c in before}
    busy_s = sum(after[c][0] - before[c][0] for c in busy) / hz
    return {"busy": {c: round(b, 3) for c, b in busy.items()},
            "unaccounted_util": round(max(busy_s - ours_s, 0.0) / window_s, 3) if window_s else None}


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


def _diagnose(dep: Deployment, after: dict) -> list[dict]:
    """The domains that died or stopped answering, with how and the tail of their logs."""
    culprits = []
    for name, h in dep.handles.items():
        status = dep.backend.exit_status(h)
        if status:
            why = status
        elif "error" in after.get(name, {}):
            why = f"not answering (control stats: {after[name]['error']})"
        else:
            continue
        culprits.append({"domain": name, "services": dep.manifest.domain(name).services,
                         "status": why, "log_tail": dep.backend.log_tail(h, 25)})
    return culprits


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


def run_point(dep: Deployment, st: SweepSettings, index: int, clients: int,
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
    before = _domain_stats(dep)
    if on_point is not None:
        on_point(dep, point)
    host_before, t0 = _host_cpu(), time.monotonic()
    try:
        r, driver_error = dep.run_driver(spec), None
    except BackendError as e:
        r, driver_error = {"ok": False, "results": [], "failures": []}, str(e)
    window, host_after = time.monotonic() - t0, _host_cpu()
    after = _domain_stats(dep)
    point["pids"] = {"driver": r.get("driver_pid"), "coordinator": r.get("coordinator_pid"),
                     "workers": r.get("worker_pids", [])}
    point["window_s"] = round(window, 3)
    point["ready_s"] = r.get("ready_s")
    numbers, frames = _point_numbers(r, st.mode)
    point.update(numbers)
    calls = numbers["completed"] + sum(c["warmup"]["creates_ok"] + c["warmup"]["deletes_ok"]
                                       for c in r.get("results", []))
    point["calls_with_warmup"] = calls
    point["domains"] = _usage(before, after, window, calls, numbers["rps"])
    ours = (sum(d.get("cpu_s", 0.0) for d in point["domains"].values())
            + numbers["client_cpu_s"] + (r.get("coordinator_cpu_s") or 0.0))
    point["host"] = _host_load(host_before, host_after, ours, window)
    point["census"] = _census_check(r)
    failed = bool(driver_error) or not r.get("ok", False)
    culprits = _diagnose(dep, after) if failed or any("error" in a for a in after.values()) else []
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
        return "; ".join(f"domain {c['domain']} (services {', '.join(c['services'])}): {c['status']}"
                         for c in f["culprits"])
    if f["driver_error"]:
        return f["driver_error"].splitlines()[0]
    errs = [c["error"] for c in f["client_failures"]]
    return (f"{len(errs)} client(s) failed, no domain died or stopped answering: {errs[0]}"
            if errs else "the driver reported a failure")


# -- a sweep ------------------------------------------------------------------------------------

def _schedule(st: SweepSettings):
    """(clients, rate) of each point; a generator that reads the results as they come."""
    done: list[int] = []
    rps: list[float] = []

    def feed(point):
        if point["status"] == STATUS_OK:
            done.append(point["clients"])
            rps.append(point["rps"])

    if st.mode == "open":
        return ((st.open_clients, float(r)) for r in st.rates), feed
    if st.clients != "auto":
        return ((int(n), None) for n in st.clients), feed

    def auto():
        while True:
            n = next_clients(done, rps, st.auto)
            if n is None:
                return
            yield n, None
    return auto(), feed


def _other_load(seconds: float = 1.0) -> float | None:
    """CPUs of this host kept busy by others while nothing of ours runs (between points)."""
    a = _host_cpu()
    time.sleep(seconds)
    load = _host_load(a, _host_cpu(), 0.0, seconds)
    return load["unaccounted_util"] if load else None


def _wait_quiet(quiet: dict, log) -> float | None:
    """Before a point: wait up to quiet["wait_s"] for the host's other load to drop below
    quiet["max_unaccounted"]; returns the last load seen."""
    deadline = time.monotonic() + float(quiet.get("wait_s", 30))
    load = _other_load()
    while load is not None and load > quiet["max_unaccounted"] and time.monotonic() < deadline:
        log(f"  waiting for a quiet host: other work keeps {load:.2f} CPUs busy")
        time.sleep(2)
        load = _other_load()
    return load


def sweep(dep: Deployment, st: SweepSettings, on_point=None, log=print):
    """Run the schedule's points on one deployment. With `quiet` set, each point first waits
    (a while) for the host to be free of other work, and a point that other work disturbed
    anyway (unaccounted CPU above the threshold) is run again, up to `retries` times: the
    disturbed attempts are kept, marked `disturbed`, and left out of the curve."""
    points, frames = [], []
    schedule, feed = _schedule(st)
    behind, index, quiet = 0, 0, st.quiet
    for clients, rate in schedule:
        for attempt in range(1 + (int(quiet.get("retries", 0)) if quiet else 0)):
            before = _wait_quiet(quiet, log) if quiet else None
            point, f = run_point(dep, st, index, clients, rate, on_point)
            point["attempt"], point["other_load_before"] = attempt, before
            points.append(point)
            frames += f
            index += 1
            unaccounted = (point.get("host") or {}).get("unaccounted_util")
            if (quiet and point["status"] == STATUS_OK and unaccounted is not None
                    and unaccounted > quiet["max_unaccounted"]
                    and attempt < int(quiet.get("retries", 0))):
                point["status"] = STATUS_DISTURBED
                log(one_point_line(point) + " (run again)")
                continue
            break
        feed(point)
        log(one_point_line(point))
        if point["status"] == STATUS_FAILED:
            break
        if st.mode == "open":
            # Two offered rates in a row that the system could not keep up with: the rest would
            # only show more of the same overload.
            behind = behind + 1 if point["rps"] < 0.9 * rate else 0
            if behind >= 2:
                point["note"] = "saturated: two offered rates in a row not kept up with; stopped"
                break
    return points, frames


def summarize_sweep(points: list[dict], st: SweepSettings) -> dict:
    good = [p for p in points if p["status"] == STATUS_OK]
    out = knee([p["clients"] for p in good], [p["rps"] for p in good], float(st.auto["min_gain"]))
    if st.mode == "open":
        out["knee_clients"] = out["knee_rps"] = None  # a knee is a closed-loop notion
        p = max(good, key=lambda p: p["rps"], default=None)
        out["peak_offered_rps"] = p["offered_rps"] if p else None
    failed = [p for p in points if p["status"] == STATUS_FAILED]
    out["failure"] = failed[0]["failure"]["summary"] if failed else None
    out["failed_clients"] = failed[0]["clients"] if failed else None
    before = [p for p in points if failed and p["index"] < failed[0]["index"]
              and p["status"] == STATUS_OK]
    out["last_good_clients"] = before[-1]["clients"] if before else None
    # Saturated: some good point after the knee brought no gain (else the sweep ended still
    # rising, and its "knee" is only its last point).
    out["saturated"] = (st.mode == "closed" and out["knee_clients"] is not None
                        and good[-1]["clients"] != out["knee_clients"])
    out["disturbed_attempts"] = sum(p["status"] == STATUS_DISTURBED for p in points)
    out["lost_data_points"] = [p["index"] for p in points if p["status"] == STATUS_LOST]
    # A failed point's census is not decisive (calls were in flight when it failed): it is
    # recorded with the point, but only a completed point can prove data lost.
    out["any_lost"] = bool(out["lost_data_points"])
    return out


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


def run_sweep(manifest: Manifest, raw_path: str | Path, meta_path: str | Path,
              backend_options: dict | None = None, workdir: str | Path | None = None,
              on_point=None, log=print) -> dict:
    """Bring the manifest up, run its sweep, tear it down, write the two files.

    `on_point(deployment, point)`, if given, is called just before each point's clients start
    (tests use it to arm a fault or to kill a service mid-point)."""
    from msdbench.cell import record

    st = SweepSettings.from_settings(manifest.settings)

    def measure(dep, meta):
        points, frames = sweep(dep, st, on_point, log)
        # where the clients ran: every worker's affinity as it reported it
        meta["placement"]["client_workers"] = [list(a) for a in sorted(
            {tuple(c["affinity"]) for p in points for c in p["per_client"]})]
        meta["points"] = points
        meta["sweep"] = summarize_sweep(points, st)
        meta["status"] = STATUS_OK
        return pd.concat(frames, ignore_index=True) if frames else empty

    empty = pd.DataFrame({"point": pd.Series(dtype="int32")})
    cell = {"suite": "throughput", "mode": st.mode, "platform": manifest.platform,
            "backend": manifest.backend, "isolation": manifest.isolation,
            "deployment": manifest.deployment}
    return record(manifest, raw_path, meta_path, measure, cell=cell, empty_raw=empty,
                  backend_options=backend_options, workdir=workdir)


# -- the table ----------------------------------------------------------------------------------

TABLE_ORDER = [
    "mode", "platform", "backend", "isolation", "deployment", "pinning", "client_cpus",
    "server_cpus", "point", "clients", "offered_rps", "status", "rps", "rps_sum_clients",
    "completed", "call_errors", "wall_s", "is_knee", "saturated", "is_peak", "n", "mean_us",
    "sd_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "service_p50_us",
    "service_p99_us", "client_p99_min_us", "client_p99_max_us", "client_rps_min",
    "client_rps_max", "server_cpu_util", "server_cpu_us_per_call", "client_cpu_util",
    "busiest_domain", "busiest_domain_util", "domain_cpu_s", "domain_util", "domain_rss_mb",
    "host_busy", "unaccounted_cpu_util", "other_load_before", "attempt",
    "lost_users", "census_checked", "failure", "last_good_clients", "log_tail", "config_hash",
    "git_revision"]


def table_rows(meta_path: str | Path) -> list[dict]:
    meta = json.loads(Path(meta_path).read_text())
    base = dict(meta["cell"])
    base.update(pinning=meta["settings"].get("pinning"), config_hash=meta.get("config_hash"),
                git_revision=meta.get("environment", {}).get("git_revision"))
    placement = meta.get("placement") or {}
    base["client_cpus"] = json.dumps(placement.get("client_workers"))
    base["server_cpus"] = json.dumps(sorted({c for n, d in placement.items()
                                             if isinstance(d, dict) and n != "client"
                                             for c in d.get("affinity") or []}))
    if meta["status"] != STATUS_OK:
        return [base | {"status": meta["status"], "failure": meta.get("reason", "")}]
    sw = meta.get("sweep", {})
    m = meta.get("manifest") or {}
    client_domain = next((x["domain"] for x in m.get("services", [])
                          if x["name"] == m.get("client")), "client")
    rows = []
    for p in meta.get("points", []):  # a skipped sweep has none
        row = base | {k: p.get(k) for k in ("index", "clients", "offered_rps", "status", "rps",
                                            "rps_sum_clients", "completed", "call_errors",
                                            "wall_s")}
        row["point"] = row.pop("index")
        row["attempt"] = p.get("attempt", 0)
        row["other_load_before"] = p.get("other_load_before")
        lat = p.get("latency", {})
        row.update({k: lat.get(k) for k in ("n", "mean_us", "sd_us", "p50_us", "p90_us",
                                             "p99_us", "p99.9_us", "max_us")})
        if "service_latency" in p:
            row["service_p50_us"] = p["service_latency"].get("p50_us")
            row["service_p99_us"] = p["service_latency"].get("p99_us")
        pc = [c for c in p.get("per_client", []) if "p99_us" in c]
        if pc:
            row.update(client_p99_min_us=min(c["p99_us"] for c in pc),
                       client_p99_max_us=max(c["p99_us"] for c in pc),
                       client_rps_min=min(c["rps"] for c in pc),
                       client_rps_max=max(c["rps"] for c in pc))
        doms = {n: d for n, d in p["domains"].items() if "error" not in d}
        server = {n: d for n, d in doms.items() if n != client_domain}
        row["server_cpu_util"] = round(sum(d["util"] or 0 for d in server.values()), 3)
        row["server_cpu_us_per_call"] = round(sum(d.get("cpu_us_per_call") or 0
                                                  for d in server.values()), 1)
        # the client processes' own CPU (warm-up included), per call, at the timed phase's rate
        calls = p.get("calls_with_warmup") or 0
        row["client_cpu_util"] = (round(p.get("client_cpu_s", 0.0) / calls * (p["rps"] or 0), 3)
                                  if calls else None)
        if server:
            b = max(server, key=lambda n: server[n]["util"] or 0)
            row.update(busiest_domain=b, busiest_domain_util=server[b]["util"])
        row["domain_cpu_s"] = json.dumps({n: d["cpu_s"] for n, d in doms.items()})
        row["domain_util"] = json.dumps({n: d["util"] for n, d in doms.items()})
        row["domain_rss_mb"] = json.dumps({n: d["rss_mb"] for n, d in doms.items()})
        host = p.get("host") or {}
        row["host_busy"] = json.dumps(host.get("busy"))
        row["unaccounted_cpu_util"] = host.get("unaccounted_util")
        row["lost_users"] = p["census"].get("lost_users")
        row["census_checked"] = p["census"].get("checked")
        row["is_knee"] = (meta["cell"]["mode"] == "closed" and p["status"] == STATUS_OK
                          and p["clients"] == sw.get("knee_clients"))
        row["saturated"] = sw.get("saturated")
        row["is_peak"] = p["status"] == STATUS_OK and p["clients"] == sw.get("peak_clients") \
            and (meta["cell"]["mode"] == "closed" or p["offered_rps"] == sw.get("peak_offered_rps"))
        if p["status"] == STATUS_FAILED:
            row["failure"] = p["failure"]["summary"]
            row["last_good_clients"] = sw.get("last_good_clients")
            tails = [f"[{c['domain']}] " + " | ".join(c["log_tail"].splitlines()[-5:])
                     for c in p["failure"]["culprits"]]
            row["log_tail"] = "\n".join(tails) or None
        elif p["status"] == STATUS_LOST:
            row["failure"] = p["census"].get("why")
        rows.append(row)
    return rows


def table(meta_paths) -> pd.DataFrame:
    df = pd.DataFrame([row for m in meta_paths for row in table_rows(m)])
    if df.empty:
        return pd.DataFrame(columns=TABLE_ORDER)
    for c in TABLE_ORDER:
        if c not in df.columns:
            df[c] = None
    cols = TABLE_ORDER + [c for c in df.columns if c not in TABLE_ORDER]
    return df[cols].sort_values(["mode", "platform", "backend", "isolation", "point"],
                                kind="stable").reset_index(drop=True)


def aggregate(meta_paths, csv_path, parquet_path) -> pd.DataFrame:
    df = table(meta_paths)
    atomic_write_csv(csv_path, df)
    atomic_write_parquet(parquet_path, df)
    return df


def summary_lines(meta: dict) -> list[str]:
    c, sw = meta["cell"], meta.get("sweep", {})
    head = f"throughput {c['mode']} {c['platform']}/{c['backend']} {c['isolation']}"
    if meta["status"] != STATUS_OK:
        return [f"{head}: {meta['status']} {meta.get('reason', '')}"]
    lines = [one_point_line(p) for p in meta.get("points", [])]
    if sw["peak_rps"] is None:
        tail = f"{head}: no good point"
    else:
        tail = f"{head}: peak {sw['peak_rps']:,.0f} rps at {sw['peak_clients']} clients"
        if c["mode"] == "open":
            tail += f" (offered {sw['peak_offered_rps']:g})"
        elif sw.get("saturated"):
            tail += f", knee at {sw['knee_clients']} clients ({sw['knee_rps']:,.0f} rps)"
        else:
            tail += f", no knee: still rising at {sw['knee_clients']} clients"
    if sw.get("failure"):
        tail += f"; FAILED at {sw['failed_clients']} clients (last good: " \
                f"{sw['last_good_clients']}): {sw['failure']}"
    tail += "; data lost: " + ("YES, points " + str(sw["lost_data_points"]) if sw["any_lost"]
                               else "none")
    return lines + [tail]


# -- command line: `msdbench throughput run|measure|aggregate` ----------------------------------

def cli_main(action: str, argv: list[str]) -> int:
    import argparse
    import tempfile

    from msdbench import planning

    ap = argparse.ArgumentParser(prog=f"msdbench throughput {action}")
    if action == "run":
        ap.description = "One sweep by hand (no Snakemake): plan, bring up, sweep, tear down."
        ap.add_argument("--platform", default="linux", choices=planning.PLATFORMS)
        ap.add_argument("--backend", default="process", choices=planning.BACKENDS)
        ap.add_argument("--isolation", required=True, choices=planning.ISOLATIONS["beps"])
        ap.add_argument("--mode", default="closed", choices=MODES)
        ap.add_argument("--config", default="config/config.yaml",
                        help="settings not given here come from this file (default: %(default)s)")
        ap.add_argument("--clients", help="closed loop: e.g. 1,2,4,8 or auto")
        ap.add_argument("--max-clients", type=int, help="auto: the largest N to try")
        ap.add_argument("--pairs", type=int, help="timed create/delete pairs per client")
        ap.add_argument("--duration", type=float, help="closed: seconds per point; open: per rate")
        ap.add_argument("--rates", help="open loop: offered rates, e.g. 500,1000,2000")
        ap.add_argument("--open-clients", type=int)
        ap.add_argument("--warmup", type=int, help="warm-up pairs per client")
        ap.add_argument("--pinning", choices=tuple(planning.PINNINGS))
        ap.add_argument("--workers", type=int)
        ap.add_argument("--point-deadline", type=float)
        ap.add_argument("--quiet", type=float, metavar="CPUS",
                        help="shared host: wait for other work below CPUS before each point "
                             "(up to 60 s) and rerun a point it disturbed (up to 2 times)")
        ap.add_argument("--docker-host")
        ap.add_argument("--out", help="directory for sweep.parquet, sweep.json, table.csv")
    elif action == "measure":
        ap.description = "(rule run_throughput) a planned manifest -> the sweep's two files."
        ap.add_argument("manifest")
        ap.add_argument("--raw", required=True)
        ap.add_argument("--meta", required=True)
        ap.add_argument("--docker-host")
    elif action == "aggregate":
        ap.description = "(rule aggregate_throughput) sweeps -> one table, a row per point."
        ap.add_argument("--csv", required=True)
        ap.add_argument("--parquet", required=True)
        ap.add_argument("meta", nargs="+")
    else:
        ap.error(f"unknown action {action!r}: run, measure or aggregate")
    a = ap.parse_args(argv)

    if action == "aggregate":
        df = aggregate(a.meta, a.csv, a.parquet)
        print(f"{len(df)} points from {len(a.meta)} sweeps -> {a.csv}")
        return 0
    opts = {"docker_host": a.docker_host} if a.docker_host else None
    if action == "measure":
        meta = run_sweep(Manifest.load(a.manifest), a.raw, a.meta, opts,
                         workdir=tempfile.mkdtemp(prefix="msdbench-throughput-"))
        print("\n".join(summary_lines(meta)))
        return 0

    from msdbench.config import load, throughput_settings

    config = load(a.config)
    config.setdefault("throughput", {"isolations": [a.isolation], "modes": [a.mode]})
    settings = throughput_settings(config, a.mode)
    t = settings["throughput"]
    if a.clients:
        t["clients"] = "auto" if a.clients == "auto" else [int(x) for x in a.clients.split(",")]
        if t["clients"] == "auto":
            t.setdefault("auto", {})
    if a.max_clients:
        t.setdefault("auto", {})["max_clients"] = a.max_clients
    if a.rates:
        t["rates"] = [float(x) for x in a.rates.split(",")]
    for key, value in (("pairs_per_client", a.pairs), ("warmup_pairs", a.warmup),
                       ("open_clients", a.open_clients), ("point_deadline_s", a.point_deadline)):
        if value is not None:
            t[key] = value
    if a.quiet:
        t["quiet"] = {"max_unaccounted": a.quiet, "wait_s": 60, "retries": 2}
    if a.duration is not None:
        t["duration_s" if a.mode == "closed" else "open_duration_s"] = a.duration
    for key in ("pinning", "workers"):
        if getattr(a, key) is not None:
            settings[key] = getattr(a, key)
    SweepSettings.from_settings(settings)  # reject bad combinations before anything starts
    manifest = planning.plan(planning.Cell("beps", a.platform, a.backend, a.isolation, 2),
                             settings)
    out = Path(a.out or tempfile.mkdtemp(prefix="msdbench-throughput-"))
    meta = run_sweep(manifest, out / "sweep.parquet", out / "sweep.json", opts,
                     workdir=out / "work", log=lambda line: print(line, flush=True))
    aggregate([out / "sweep.json"], out / "table.csv", out / "table.parquet")
    print(summary_lines(meta)[-1])
    print(f"raw samples: {out / 'sweep.parquet'}\nmetadata:    {out / 'sweep.json'}\n"
          f"table:       {out / 'table.csv'}")
    return 0
