"""A latency cell's numbers: the measured rows of its raw samples, summarised per operation.

Pooled over the cell's repetitions: n, mean, sd, min, p50..p99.9, max (results.summarize). Across
repetitions (msdbench/statistics.py): the 95% CIs of the mean and the median, each latency as a
multiple of the repetition's TCP echo, and how much the repetitions varied. From the metadata:
how many repetitions were redone because other work disturbed them, and the host's noise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from msdbench import records, suites
from msdbench.culprits import log_tails
from msdbench.results import summarize
from msdbench.statistics import across_repetitions

ECHO_OP = "echo"  # the TCP echo reference's rows in a cell's raw samples (msdbench/cell.py)

raw_path_of = records.raw_path_of


def client_host(rec: records.CellRecord) -> dict:
    """Where the client and the server side ran: each one's host name and kind ("local", "netns":
    an emulated host, "ssh": a real remote host, "vm": a guest) and a VM's accelerator. In
    deployments 1 and 2 the client shares the server side's host."""
    out = {}
    server = rec.settings.get("server_host") or "local"
    client = rec.settings.get("client_host") or server
    for role, name in (("client", client), ("server", server)):
        entry = (rec.hosts or {}).get(name) or (rec.manifest or {}).get("hosts", {}).get(name) or {}
        out |= {f"{role}_host": name, f"{role}_host_kind": entry.get("kind", "local"),
                f"{role}_accel": entry.get("accel")}  # a VM's accelerator: tcg or kvm
    return out


def cell_rows(meta_path: str | Path) -> list[dict]:
    """One row per operation of one cell: its identity, status and statistics (warm-up excluded)."""
    rec = records.load(meta_path)
    base = rec.cell.model_dump(exclude_none=True) | suites.get(rec.cell.suite).row_fields(rec)
    if rec.cell.backend == "device":  # which board, and how it was emulated (figures say so)
        info = rec.backend_info or {}
        board = rec.settings.get("device", {})
        base["board"] = info.get("label") or board.get("label") or board.get("board")
        emulation = info.get("emulation") or {}
        base["emulation"] = ", ".join(f"{k}={v}" for k, v in emulation.items() if v) or None
        base["timing"] = (rec.driver or {}).get("timing")
    base.update(client_host(rec))
    failure = rec.failure or {}
    base.update(status=rec.status, reason=failure.get("summary") or rec.reason or "",
                log_tail=log_tails(failure.get("culprits", [])),
                problems="; ".join((rec.driver or {}).get("problems", [])),
                pinning=rec.settings.get("pinning"), config_hash=rec.config_hash,
                git_revision=rec.environment.get("git_revision"))
    base.update(noise_columns(rec.repetitions or []))
    df = pd.read_parquet(records.raw_path_of(meta_path))
    if df.empty:
        return [base | {"op": None, "n": 0}]
    if "rep" not in df:
        df["rep"] = 0  # a cell recorded before repetitions existed: one repetition
    if "warmup" in df:
        df = df[~df["warmup"].astype(bool)]
    echo = df[df["op"] == ECHO_OP]
    echo_p50 = {int(r): float(g["e2e_ns"].median()) / 1000 for r, g in echo.groupby("rep")}
    rows = []
    for op, g in df[df["op"] != ECHO_OP].groupby("op", sort=False):
        row = base | {"op": op} | summarize(g["e2e_ns"].to_numpy())
        row |= across_repetitions({int(r): x["e2e_ns"].to_numpy() / 1000
                                   for r, x in g.groupby("rep")}, echo_p50)
        for col in ("server_ns", "call_ns", "return_ns"):
            if col in g and g[col].notna().any():
                row[col.replace("_ns", "_mean_us")] = round(float(g[col].mean()) / 1000, 3)
        rows.append(row)
    return rows


def noise_columns(repetitions: list[dict]) -> dict:
    """What the cell's repetitions saw of the host: the worst load average, CPU kept busy by
    other work (CPUs), and steal (share of CPU time) over its kept repetitions, how many
    repetitions were redone because other work disturbed them, and how many kept ones still
    were (the redo budget ran out)."""
    kept = [r for r in repetitions if r.get("kept", True)]
    hosts = [r.get("host") or {} for r in kept]

    def worst(key):
        vals = [h[key] for h in hosts if h.get(key) is not None]
        return max(vals) if vals else None

    return {"redone": sum(1 for r in repetitions if not r.get("kept", True)),
            "disturbed": sum(1 for r in kept if r.get("disturbed")),
            "host_load1": worst("load1"), "other_cpu": worst("unaccounted_util"),
            "steal": worst("steal")}


def cell_lines(meta_path: str | Path) -> list[str]:
    """A line per operation of one cell (a skipped or empty cell: one line saying so)."""
    parts = []
    for r in cell_rows(meta_path):
        head = f"{r['suite']} {r['platform']}/{r['backend']} {r['isolation']} d{r['deployment']}"
        if "payload" in r:
            head += f" payload {r['payload']} ({r['payload_mode']})"
        if r["n"] == 0:
            parts.append(f"{head}: {r['status']} {r['reason']}")
            continue
        parts.append(f"{head} {r['op']}: n={r['n']} mean={r['mean_us']:.1f} us sd={r['sd_us']:.1f} "
                     f"p50={r['p50_us']:.1f} p99={r['p99_us']:.1f} max={r['max_us']:.1f} [{r['status']}]")
    return parts
