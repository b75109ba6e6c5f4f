"""The paper's headline ratios, from the summary tables only (results/tables/{micro,beps}.parquet).

Three comparisons, one row per pair of cells that both passed (status "ok"):

* `isolation` (micro): per platform, backend and payload, mean(isolated, d2) / mean(co-located, d1):
  what leaving the domain costs. The paper reports 73x on Ambience (the specialized platform) and
  1.3x on Linux.
* `isolation` (beps): per platform, backend, deployment and request type, tiered / co-located and
  isolated / co-located.
* `platform`: per cell (suite, backend, isolation, deployment, payload, request type),
  mean(specialized) / mean(linux).

Each row carries both means, the ratio of means and the ratio of medians (p50: less moved by the
outliers of a shared machine), and the paper's number where it gives one.
"""

from __future__ import annotations

import pandas as pd

# The paper's isolation ratios for the microbenchmark (isolated d2 over co-located d1).
PAPER_MICRO_ISOLATION = {"specialized": 73.0, "linux": 1.3}

COLUMNS = ["suite", "comparison", "platform", "backend", "isolation", "deployment", "payload", "op",
           "numerator", "denominator", "numerator_mean_us", "denominator_mean_us", "ratio",
           "numerator_p50_us", "denominator_p50_us", "ratio_p50", "paper_ratio"]


def _ok(df: pd.DataFrame | None) -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame()
    df = df[df["status"] == "ok"].copy()
    if "payload" not in df.columns:
        df["payload"] = pd.NA
    df["payload"] = df["payload"].astype("Int64")
    return df


def _pairs(num: pd.DataFrame, den: pd.DataFrame, on: list[str], base: dict,
           numerator: str, denominator: str, paper: dict | None = None,
           keep: dict | None = None) -> list[dict]:
    """Rows for every key in both frames: the ratio num/den of means and of medians."""
    cols = on + ["mean_us", "p50_us"]
    merged = num[cols].merge(den[cols], on=on, suffixes=("_n", "_d"), how="inner")
    rows = []
    for r in merged.to_dict("records"):
        row = dict(base)
        row.update({k: r[k] for k in on})
        row.update(keep or {})
        row.update(numerator=numerator, denominator=denominator,
                   numerator_mean_us=r["mean_us_n"], denominator_mean_us=r["mean_us_d"],
                   ratio=r["mean_us_n"] / r["mean_us_d"] if r["mean_us_d"] else float("nan"),
                   numerator_p50_us=r["p50_us_n"], denominator_p50_us=r["p50_us_d"],
                   ratio_p50=r["p50_us_n"] / r["p50_us_d"] if r["p50_us_d"] else float("nan"))
        if paper is not None:
            row["paper_ratio"] = paper.get(row.get("platform"))
        rows.append(row)
    return rows


def _cell(df: pd.DataFrame, **where) -> pd.DataFrame:
    for k, v in where.items():
        df = df[df[k] == v]
    return df


def micro_isolation(micro: pd.DataFrame) -> list[dict]:
    rows = []
    for (platform, backend), g in micro.groupby(["platform", "backend"]):
        num = _cell(g, isolation="isolated", deployment=2)
        den = _cell(g, isolation="co-located", deployment=1)
        rows += _pairs(num, den, ["platform", "backend", "payload", "op"],
                       {"suite": "micro", "comparison": "isolation"},
                       "isolated d2", "co-located d1", PAPER_MICRO_ISOLATION,
                       keep={"isolation": "isolated"})
    return rows


def beps_isolation(beps: pd.DataFrame) -> list[dict]:
    rows = []
    for (platform, backend, deployment), g in beps.groupby(["platform", "backend", "deployment"]):
        den = _cell(g, isolation="co-located")
        for iso in ("tiered", "isolated"):
            rows += _pairs(_cell(g, isolation=iso), den,
                           ["platform", "backend", "deployment", "payload", "op"],
                           {"suite": "beps", "comparison": "isolation"},
                           f"{iso} d{deployment}", f"co-located d{deployment}",
                           keep={"isolation": iso})
    return rows


def platform_ratio(table: pd.DataFrame, suite: str) -> list[dict]:
    on = ["backend", "isolation", "deployment", "payload", "op"]
    return _pairs(_cell(table, platform="specialized"), _cell(table, platform="linux"), on,
                  {"suite": suite, "comparison": "platform", "platform": "specialized/linux"},
                  "specialized", "linux")


def ratios(micro: pd.DataFrame | None = None, beps: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ratio table (columns COLUMNS); empty tables or absent suites give no rows."""
    micro, beps = _ok(micro), _ok(beps)
    rows = []
    if not micro.empty:
        rows += micro_isolation(micro) + platform_ratio(micro, "micro")
    if not beps.empty:
        rows += beps_isolation(beps) + platform_ratio(beps, "beps")
    out = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("ratio", "ratio_p50"):
        out[c] = out[c].astype(float).round(3)
    out["payload"] = out["payload"].astype("Int64")
    out["deployment"] = out["deployment"].astype("Int64")
    return out.sort_values(["suite", "comparison", "platform", "backend", "isolation",
                            "deployment", "payload", "op"], kind="stable",
                           na_position="first").reset_index(drop=True)


def write(out_csv: str, tables: list[str]) -> pd.DataFrame:
    """Read the suites' summary tables (Parquet; the suite is read from each), write the CSV."""
    from msdbench.results import atomic_write_csv

    by_suite: dict[str, pd.DataFrame] = {}
    for path in tables:
        df = pd.read_parquet(path)
        if df.empty or "suite" not in df.columns:
            continue
        for suite, g in df.groupby("suite"):
            by_suite[suite] = pd.concat([by_suite.get(suite), g]) if suite in by_suite else g
    out = ratios(by_suite.get("micro"), by_suite.get("beps"))
    atomic_write_csv(out_csv, out)
    return out
