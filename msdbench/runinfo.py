"""The run at a glance (results/tables/run.csv): the machine, the versions and the pinning the
cells recorded, how many repetitions other work disturbed, and how much steadier the latencies
are as multiples of the TCP echo than in microseconds. A key/value table for the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def _distinct(values) -> str:
    return ", ".join(sorted({str(v) for v in values if v not in (None, "")})) or "-"


def steadiness(table: pd.DataFrame) -> dict:
    """Across the cells of one suite's summary table: the median coefficient of variation of
    the repetitions' medians, in us and as multiples of the echo, and their quotient."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    if "p50_x_echo_rep_cv" not in ok or ok["p50_x_echo_rep_cv"].dropna().empty:
        return {}
    us, x = ok["p50_rep_cv"].median(), ok["p50_x_echo_rep_cv"].median()
    return {"median CV of the repetitions' medians (us)": round(float(us), 4),
            "median CV of the repetitions' medians (x echo)": round(float(x), 4),
            "steadier as multiples of the echo (CV us / CV x echo)":
                round(float(us / x), 2) if x else None}


def run_table(record_paths, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    recs = [json.loads(Path(p).read_text()) for p in record_paths]
    envs = [r.get("environment", {}) for r in recs]
    reps = [x for r in recs for x in r.get("repetitions", [])]
    hosts = [x.get("host") or {} for x in reps if x.get("kept", True)]
    statuses = pd.Series([r.get("status") for r in recs]).value_counts().to_dict()
    starts, ends = [r["start"] for r in recs if r.get("start")], [r["end"] for r in recs if r.get("end")]
    rows = [("machine", _distinct(e.get("hostname") for e in envs)),
            ("CPU", _distinct(e.get("cpu_model") for e in envs)),
            ("CPUs", _distinct(e.get("cpu_count") for e in envs)),
            ("kernel", _distinct(e.get("kernel") for e in envs)),
            ("Python", _distinct(e.get("python") for e in envs)),
            ("git revision", _distinct(e.get("git_revision") for e in envs))]
    pkgs = sorted({k for e in envs for k in (e.get("packages") or {})})
    rows += [(f"version of {p}", _distinct((e.get("packages") or {}).get(p) for e in envs))
             for p in pkgs]
    rows += [("pinning", _distinct(r.get("settings", {}).get("pinning") for r in recs)),
             ("backends", _distinct(r.get("cell", {}).get("backend") for r in recs)),
             ("measured from", min(starts) if starts else "-"),
             ("measured until", max(ends) if ends else "-"),
             ("cells (and sweeps) by status", ", ".join(f"{k}: {v}" for k, v in statuses.items())),
             ("repetitions kept", sum(1 for x in reps if x.get("kept", True))),
             ("repetitions redone (other work disturbed them)",
              sum(1 for x in reps if not x.get("kept", True))),
             ("kept repetitions still disturbed (redo budget spent)",
              sum(1 for x in reps if x.get("kept", True) and x.get("disturbed"))),
             ("worst other work beside a kept repetition (CPUs)",
              max((h["unaccounted_util"] for h in hosts if h.get("unaccounted_util") is not None),
                  default="-")),
             ("worst steal during a kept repetition",
              max((h["steal"] for h in hosts if h.get("steal") is not None), default="-"))]
    for suite, table in tables.items():
        rows += [(f"{suite}: {k}", v) for k, v in steadiness(table).items()]
    return pd.DataFrame(rows, columns=["what", "value"])


def write(out_csv: str, record_paths: list[str], table_paths: list[str]) -> pd.DataFrame:
    from msdbench.results import atomic_write_csv

    out = run_table(record_paths, {Path(p).stem: pd.read_parquet(p) for p in table_paths})
    atomic_write_csv(out_csv, out)
    return out
