"""How busy this host's CPUs are, from /proc/stat: per CPU, and the share that the processes a
measurement knows about do not account for (other tenants, kernel work, steal). A point measured on
a busy machine says so; a sweep can wait for a quiet host before its next point."""

from __future__ import annotations

import os
import time
from pathlib import Path


def host_cpu() -> dict[str, list[int]] | None:
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


def host_load(before, after, ours_s: float, window_s: float) -> dict | None:
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


def other_load(seconds: float = 1.0) -> float | None:
    """CPUs of this host kept busy by others while nothing of ours runs (between points)."""
    a = host_cpu()
    time.sleep(seconds)
    load = host_load(a, host_cpu(), 0.0, seconds)
    return load["unaccounted_util"] if load else None
