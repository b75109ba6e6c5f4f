"""A cell's numbers: the measured rows of its raw samples, summarised per operation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from msdbench.results import summarize


def raw_path_of(meta_path: str | Path) -> Path:
    return Path(meta_path).with_suffix(".parquet")


def client_host(meta: dict) -> dict:
    """Where the client ran: its host's name and kind ("local", "netns": an emulated host,
    "ssh": a real remote host)."""
    name = meta.get("settings", {}).get("client_host") or "local"
    entry = (meta.get("hosts") or {}).get(name) or \
        (meta.get("manifest") or {}).get("hosts", {}).get(name) or {}
    return {"client_host": name, "client_host_kind": entry.get("kind", "local")}


def cell_rows(meta_path: str | Path) -> list[dict]:
    """One row per operation of one cell: its identity, status and statistics (warm-up excluded)."""
    meta = json.loads(Path(meta_path).read_text())
    base = dict(meta["cell"])
    settings = meta.get("settings", {})
    if base["suite"] == "micro":
        base["payload"] = settings.get("payload")
        base["payload_mode"] = settings.get("payload_mode")
        base["wire_bytes"] = meta.get("driver", {}).get("wire_bytes")
    if base["backend"] == "device":  # which board, and how it was emulated (figures say so)
        info = meta.get("backend_info") or {}
        board = settings.get("device", {})
        base["board"] = info.get("label") or board.get("label") or board.get("board")
        emulation = info.get("emulation") or {}
        base["emulation"] = ", ".join(f"{k}={v}" for k, v in emulation.items() if v) or None
        base["timing"] = meta.get("driver", {}).get("timing")
    base.update(client_host(meta))
    base.update(status=meta["status"], reason=meta.get("reason", ""),
                problems="; ".join(meta.get("driver", {}).get("problems", [])),
                pinning=settings.get("pinning"), config_hash=meta.get("config_hash"),
                git_revision=meta.get("environment", {}).get("git_revision"))
    df = pd.read_parquet(raw_path_of(meta_path))
    if df.empty:
        return [base | {"op": None, "n": 0}]
    rows = []
    for op, g in df.groupby("op", sort=False):
        g = g[~g["warmup"].astype(bool)] if "warmup" in g else g
        row = base | {"op": op} | summarize(g["e2e_ns"].to_numpy())
        for col in ("server_ns", "call_ns", "return_ns"):
            if col in g and g[col].notna().any():
                row[col.replace("_ns", "_mean_us")] = round(float(g[col].mean()) / 1000, 3)
        rows.append(row)
    return rows


def one_line(meta_path: str | Path) -> str:
    parts = []
    for r in cell_rows(meta_path):
        head = f"{r['suite']} {r['platform']}/{r['backend']} {r['isolation']} d{r['deployment']}"
        if r["suite"] == "micro":
            head += f" payload {r['payload']} ({r['payload_mode']})"
        if r["n"] == 0:
            parts.append(f"{head}: {r['status']} {r['reason']}")
            continue
        parts.append(f"{head} {r['op']}: n={r['n']} mean={r['mean_us']:.1f} us sd={r['sd_us']:.1f} "
                     f"p50={r['p50_us']:.1f} p99={r['p99_us']:.1f} max={r['max_us']:.1f} [{r['status']}]")
    return "\n".join(parts)
