"""A throughput sweep: its settings, the auto sweep's rule and the knee, the loop over points on
one deployment, and `run_sweep` (bring up, sweep, tear down, write the record)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from msdbench.backends.base import Deployment
from msdbench.cell import record
from msdbench.hostload import wait_quiet
from msdbench.manifest import Manifest
from msdbench.suites.throughput import MODES
from msdbench.throughput.point import (STATUS_DISTURBED, STATUS_FAILED, STATUS_LOST, STATUS_OK,
                                       one_point_line, run_point)

DEFAULT_AUTO = {"start": 1, "growth": 1.25, "max_clients": 32, "patience": 2, "min_gain": 0.03}


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
            before = wait_quiet(quiet, log) if quiet else None
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


def run_sweep(manifest: Manifest, raw_path: str | Path, meta_path: str | Path,
              backend_options: dict | None = None, workdir: str | Path | None = None,
              on_point=None, log=print) -> dict:
    """Bring the manifest up, run its sweep, tear it down, write the two files.

    `on_point(deployment, point)`, if given, is called just before each point's clients start
    (tests use it to arm a fault or to kill a service mid-point)."""
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
