"""How busy the host was around a measurement, and with whose work.

On a shared machine a latency is only as good as the quiet it was measured in. From /proc/stat
(per CPU: busy and total jiffies, and steal: time the hypervisor gave our vCPU to someone else)
and the CPU time our own processes report, a measurement learns how much CPU other work used
beside it (`unaccounted_util`, in CPUs) on the CPUs it ran on. The throughput study and the
latency cells' repetitions both use it to wait for a quiet host and to redo a disturbed run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

USER, NICE, SYSTEM, IDLE, IOWAIT, IRQ, SOFTIRQ, STEAL = range(8)


def host_cpu() -> dict[str, list[int]] | None:
    """Per CPU of this host: [busy, total, steal] jiffies (busy includes steal)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        f = line.split()
        if f and f[0].startswith("cpu") and f[0] != "cpu":
            v = [int(x) for x in f[1:9]]
            out[f[0]] = [sum(v) - v[IDLE] - v[IOWAIT], sum(v), v[STEAL]]
    return out


def host_load(before, after, ours_s: float, window_s: float, cpus=None) -> dict | None:
    """How busy each CPU was between two `host_cpu()` snapshots, the share of their time stolen
    by the hypervisor, and the CPU time (in CPUs) our processes do not account for: other
    tenants, kernel work, steal. `cpus` (numbers) restricts the accounting to the CPUs our
    processes were pinned to: other work on a CPU we did not use does not disturb us."""
    if not before or not after:
        return None
    names = [c for c in after if c in before]
    if cpus:
        names = [c for c in names if int(c[3:]) in set(cpus)] or names
    hz = os.sysconf("SC_CLK_TCK")
    delta = {c: [a - b for a, b in zip(after[c], before[c])] for c in names}
    busy_s = sum(d[0] for d in delta.values()) / hz
    total = sum(d[1] for d in delta.values())
    return {"busy": {c: round(d[0] / max(d[1], 1), 3) for c, d in delta.items()},
            "steal": round(sum(d[2] for d in delta.values()) / total, 4) if total else None,
            "unaccounted_util": round(max(busy_s - ours_s, 0.0) / window_s, 3) if window_s else None,
            "load1": round(os.getloadavg()[0], 2)}


def other_load(seconds: float = 1.0, cpus=None) -> float | None:
    """CPUs of this host kept busy by others while nothing of ours runs."""
    a = host_cpu()
    time.sleep(seconds)
    load = host_load(a, host_cpu(), 0.0, seconds, cpus)
    return load["unaccounted_util"] if load else None


def wait_quiet(quiet: dict, log, cpus=None) -> float | None:
    """Before a measurement: wait up to quiet["wait_s"] for the host's other load (on `cpus`)
    to drop below quiet["max_unaccounted"]; returns the last load seen."""
    deadline = time.monotonic() + float(quiet.get("wait_s", 30))
    load = other_load(cpus=cpus)
    while load is not None and load > quiet["max_unaccounted"] and time.monotonic() < deadline:
        log(f"  waiting for a quiet host: other work keeps {load:.2f} CPUs busy")
        time.sleep(2)
        load = other_load(cpus=cpus)
    return load
