"""`msdbench compare A B`: which cells of two runs differ beyond their confidence intervals.

A and B are each a results directory (`results/` or its `tables/`) or a git revision whose tree
holds the tables (`REV`, read from `REV:results/tables/`, or `REV:path/to/tables`): results are
git-ignored, so commit or archive the tables of runs you want to compare by revision. A cell
differs when the two 95% confidence intervals of the chosen statistic do not overlap; exit
status 1 when any cell does (usable in CI), 0 when none, 2 on an error.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

from msdbench.statistics import overlap

SUITES = ("micro", "beps")
KEYS = ["suite", "platform", "backend", "isolation", "deployment", "payload", "op"]
# statistic -> (value, CI low, CI high) columns of the summary tables
STATS = {
    "p50": ("p50_us", "p50_ci95_low_us", "p50_ci95_high_us"),
    "mean": ("mean_us", "ci95_low_us", "ci95_high_us"),
    "p50_x_echo": ("p50_x_echo", "p50_x_echo_ci95_low", "p50_x_echo_ci95_high"),
    "mean_x_echo": ("mean_x_echo", "mean_x_echo_ci95_low", "mean_x_echo_ci95_high"),
}


class CompareError(ValueError):
    pass


def _from_git(source: str) -> dict[str, bytes]:
    rev, _, where = source.partition(":")
    where = where or "results/tables"
    found = {}
    for suite in SUITES:
        r = subprocess.run(["git", "show", f"{rev}:{where}/{suite}.csv"], capture_output=True)
        if r.returncode == 0:
            found[suite] = r.stdout
    if not found:
        raise CompareError(
            f"{source!r} is neither a directory nor a git revision holding {where}/"
            f"{{{','.join(SUITES)}}}.csv (results are git-ignored: commit the tables with "
            "`git add -f results/tables`, or pass a results directory)")
    return found


def load(source: str) -> pd.DataFrame:
    """The summary rows of every suite found in `source` (a directory or a git revision)."""
    path = Path(source)
    if path.is_dir():
        tables = path / "tables" if (path / "tables").is_dir() else path
        blobs = {s: (tables / f"{s}.csv").read_bytes() for s in SUITES
                 if (tables / f"{s}.csv").is_file()}
        if not blobs:
            raise CompareError(f"{source}: no {' or '.join(s + '.csv' for s in SUITES)} in {tables}")
    else:
        blobs = _from_git(source)
    frames = [pd.read_csv(io.BytesIO(b)) for b in blobs.values()]
    df = pd.concat(frames, ignore_index=True)
    for k in KEYS:
        if k not in df:
            df[k] = pd.NA
    df["payload"] = df["payload"].astype("Int64")
    return df[df["status"] == "ok"] if "status" in df else df


def compare(a: pd.DataFrame, b: pd.DataFrame, stat: str = "p50") -> pd.DataFrame:
    """A row per cell in both runs: each run's value and CI, B / A, and whether they differ."""
    if stat not in STATS:
        raise CompareError(f"--stat: {stat!r} is not one of {', '.join(STATS)}")
    value, low, high = STATS[stat]
    for name, df in (("A", a), ("B", b)):
        if value not in df or df[value].isna().all():
            raise CompareError(f"run {name} has no {value!r} column (tables from before "
                               "repetitions and the echo reference?); try --stat p50 or mean")
    cols = KEYS + [value, low, high]
    m = a[cols].merge(b[cols], on=KEYS, suffixes=("_a", "_b"), how="inner")
    out = m[KEYS].copy()
    out["stat"] = stat
    out["a"], out["a_low"], out["a_high"] = m[f"{value}_a"], m[f"{low}_a"], m[f"{high}_a"]
    out["b"], out["b_low"], out["b_high"] = m[f"{value}_b"], m[f"{low}_b"], m[f"{high}_b"]
    out["b_over_a"] = (out["b"] / out["a"]).round(3)
    out["differs"] = [not overlap(*x) for x in
                      out[["a_low", "a_high", "b_low", "b_high"]].itertuples(index=False)]
    return out.sort_values(KEYS, kind="stable", na_position="first").reset_index(drop=True)


def _fmt(r, side: str) -> str:
    return f"{r[side]:.4g} [{r[side + '_low']:.4g}, {r[side + '_high']:.4g}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="msdbench compare", description=__doc__.split("\n")[0])
    ap.add_argument("a", help="results directory, or git revision (REV or REV:path/to/tables)")
    ap.add_argument("b", help="the same, for the run compared with A")
    ap.add_argument("--stat", default="p50", choices=tuple(STATS),
                    help="which statistic's 95%% CIs to compare (default: %(default)s; *_x_echo: "
                         "as multiples of each repetition's TCP echo)")
    ap.add_argument("--csv", help="also write every compared cell here")
    ap.add_argument("--all", action="store_true", help="list every cell, not only those that differ")
    a = ap.parse_args(argv)
    try:
        table = compare(load(a.a), load(a.b), a.stat)
    except (CompareError, OSError) as e:
        print(f"msdbench compare: error: {e}", file=sys.stderr)
        return 2
    if a.csv:
        from msdbench.results import atomic_write_csv

        atomic_write_csv(a.csv, table)
    shown = table if a.all else table[table["differs"]]
    if len(shown):
        view = shown[KEYS].copy()
        view["A"] = [_fmt(r, "a") for r in shown.to_dict("records")]
        view["B"] = [_fmt(r, "b") for r in shown.to_dict("records")]
        view["B/A"] = shown["b_over_a"]
        view["differs"] = shown["differs"].map({True: "yes", False: ""})
        with pd.option_context("display.width", 250, "display.max_rows", 1000):
            print(view.astype(object).fillna("").to_string(index=False))
    n = int(table["differs"].sum())
    print(f"{n} of {len(table)} cells differ beyond their 95% CIs of {a.stat} "
          f"(A: {a.a}, B: {a.b})")
    return 1 if n else 0
