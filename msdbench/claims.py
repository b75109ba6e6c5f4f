"""The paper's quantitative claims, each checked against this run's summary tables.

One entry of CLAIMS per claim: what the paper says (a range; "about x" is x +- ABOUT), and how to
compute ours from the tables. A claim the configured matrix cannot test (a deployment, tier or
throughput point that was not measured) gets the verdict "not measured" and says what is missing.

Ours is a ratio of two sets of cells matched on every other key, one ratio per matched pair,
with a conservative 95% interval from the two cells' intervals (msdbench/statistics.ratio_interval).
The paper reports averages; ours are medians where the tables have their CIs across repetitions
(a few outliers of a shared machine move a mean, and with it its CI, by orders of magnitude),
else means. Verdict: "holds" when every pair's interval meets
the paper's range, "does not hold" otherwise (the row says how many pairs fell outside and where).
Throughput claims compare single sweeps (no interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from msdbench.statistics import ratio_interval

ABOUT = 0.2            # "about 73x" is read as 73x +- 20%
DEVICE_BACKENDS = ("device",)  # the microcontroller tier's cells; every other backend is edge/cloud
KEYS = ["platform", "backend", "isolation", "deployment", "payload", "op"]
MEDIAN = ["p50_us", "p50_ci95_low_us", "p50_ci95_high_us"]  # (value, CI low, CI high) columns
MEAN = ["mean_us", "ci95_low_us", "ci95_high_us"]
HOLDS, FAILS, NOT_MEASURED = "holds", "does not hold", "not measured"
COLUMNS = ["claim", "source", "statement", "paper", "paper_low", "paper_high", "ours", "ours_value",
           "ours_low", "ours_high", "pairs", "verdict", "why"]


def about(x: float) -> tuple[float, float]:
    return x * (1 - ABOUT), x * (1 + ABOUT)


class NotMeasured(Exception):
    pass


def _select(df: pd.DataFrame, where: dict) -> pd.DataFrame:
    for col, want in where.items():
        if col not in df:
            return df.iloc[0:0]
        df = df[df[col].isin(want if isinstance(want, (list, tuple)) else [want])]
    return df


def _missing(df: pd.DataFrame, where: dict, what: str) -> str:
    """Why no cell matched: the first condition that nothing in the table meets."""
    if df.empty:
        return f"no {what} table in this run"
    for col, want in where.items():
        have = sorted({str(v) for v in df[col].dropna().unique()}) if col in df else []
        wanted = [str(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
        if not set(wanted) & set(have):
            return (f"no {what} cells with {col} {', '.join(wanted)} (this run has "
                    f"{', '.join(have) or 'none'})")
        df = _select(df, {col: want})
    return f"no matching {what} cells"


@dataclass(frozen=True)
class Ratio:
    """mean(numerator cells) / mean(denominator cells), matched on every key that neither
    `num` nor `den` fixes, among the cells `where` selects. `total`: the sum of the request
    types' means on each side (the paper's "total average time across all benchmarks")."""
    suite: str
    num: dict
    den: dict
    where: dict = field(default_factory=dict)
    total: bool = False

    def pairs(self, tables: dict) -> list[tuple[float, float, float]]:
        df = tables.get(self.suite, pd.DataFrame())
        df = df[df["status"] == "ok"] if "status" in df else df
        if len(df):  # a claim about the device tier reads its cells only, the others none of them
            device = self.where.get("backend") in DEVICE_BACKENDS
            df = df[df["backend"].isin(DEVICE_BACKENDS) == device]
        tier = df
        num = _select(tier, self.where | self.num)
        den = _select(tier, self.where | self.den)
        if num.empty or den.empty:
            missing = self.where | (self.num if num.empty else self.den)
            raise NotMeasured(_missing(tables.get(self.suite, pd.DataFrame()), missing, self.suite))
        on = [k for k in KEYS if k not in self.num and k not in self.den and k in num]
        stats = MEDIAN if all(c in x and x[c].notna().any() for c in MEDIAN
                              for x in (num, den)) else MEAN
        if self.total:  # one pair: each side's request types summed (bounds too: conservative)
            on = [k for k in on if k != "op"]
            num, den = (x.groupby(on, dropna=False)[stats].sum().reset_index() for x in (num, den))
        cols = on + stats
        m = num[cols].merge(den[cols], on=on, suffixes=("_n", "_d"))
        if m.empty:
            raise NotMeasured(f"no {self.suite} cells pair up on {', '.join(on)}")
        return [ratio_interval(tuple(r[f"{c}_n"] for c in stats), tuple(r[f"{c}_d"] for c in stats))
                for r in m.to_dict("records")]


@dataclass(frozen=True)
class Throughput:
    """From the closed-loop sweeps of `platform`: the peak's rps (`what` = "peak_rps") or client
    count ("peak_clients"), or rps(platform) / rps(`versus`) at `clients` ("rps_ratio")."""
    what: str
    platform: str = "linux"
    versus: str | None = None
    clients: int | None = None

    def pairs(self, tables: dict) -> list[tuple[float, float, float]]:
        df = tables.get("throughput", pd.DataFrame())
        if df.empty:
            raise NotMeasured("no throughput table in this run")
        df = df[(df["mode"] == "closed") & (df["status"] == "ok")]
        mine = df[df["platform"] == self.platform]
        if mine.empty:
            raise NotMeasured(f"no closed-loop throughput sweep on platform {self.platform}")
        out = []
        if self.what in ("peak_rps", "peak_clients"):
            for _, g in mine.groupby(["backend", "isolation"]):
                peak = g.loc[g["rps"].idxmax()]
                v = float(peak["rps"] if self.what == "peak_rps" else peak["clients"])
                out.append((v, math.nan, math.nan))
            return out
        other = df[df["platform"] == self.versus]
        a, b = (x[x["clients"] == self.clients] for x in (mine, other))
        if a.empty or b.empty:
            have = sorted({int(c) for c in df["clients"].dropna()})
            raise NotMeasured(f"no {self.platform} and {self.versus} points at {self.clients} "
                              f"clients (this run's sweeps: {have})")
        m = a.merge(b, on=["backend", "isolation"], suffixes=("_a", "_b"))
        return [(r["rps_a"] / r["rps_b"], math.nan, math.nan) for r in m.to_dict("records")]


@dataclass(frozen=True)
class Claim:
    name: str
    source: str          # where in the paper
    statement: str
    paper: tuple[float, float]
    ours: Ratio | Throughput
    unit: str = "x"


LINUX, SPEC = {"platform": "linux"}, {"platform": "specialized"}
CO, TIERED, ISO = {"isolation": "co-located"}, {"isolation": "tiered"}, {"isolation": "isolated"}


def _dep(n):
    return {"deployment": n}


CLAIMS = [
    Claim("publish-vs-create-one-host", "4.2, fig 9",
          "publish takes 11-15x longer than create_user on Linux within one VM (deployments 1-2)",
          (11, 15), Ratio("beps", {"op": "publish"}, {"op": "create_user"}, LINUX | _dep([1, 2]))),
    Claim("publish-vs-create-other-host", "4.2, fig 9",
          "... reduced to 1.5-1.7x when the client is on another machine (deployments 4-5)",
          (1.5, 1.7), Ratio("beps", {"op": "publish"}, {"op": "create_user"}, LINUX | _dep([4, 5]))),
    Claim("tiered-vs-co-located-linux", "4.2, fig 9",
          "tiered is about 20% slower than co-located on Linux (read as 1.1-1.3x)", (1.1, 1.3),
          Ratio("beps", TIERED, CO, LINUX)),
    Claim("isolated-vs-co-located-linux", "4.2, fig 9",
          "isolated is 10-40% slower than co-located on Linux", (1.1, 1.4),
          Ratio("beps", ISO, CO, LINUX)),
    Claim("tiered-vs-co-located-specialized", "4.2, fig 8",
          "tiered is 30-70% slower than co-located on Ambience (our specialized platform)",
          (1.3, 1.7), Ratio("beps", TIERED, CO, SPEC)),
    Claim("isolated-vs-co-located-specialized", "4.2, fig 8",
          "isolated is 20-70% slower than co-located on Ambience (our specialized platform)",
          (1.2, 1.7), Ratio("beps", ISO, CO, SPEC)),
    Claim("d3-vs-d2-linux", "4.2, fig 9", "deployment 3 (client in its own VM) is 14-16x "
          "deployment 2 on Linux", (14, 16), Ratio("beps", _dep(3), _dep(2), LINUX)),
    Claim("d4-vs-d2-linux", "4.2, fig 9", "deployment 4 (client VM on another host) is 65-68x "
          "deployment 2 on Linux", (65, 68), Ratio("beps", _dep(4), _dep(2), LINUX)),
    Claim("d5-vs-d2-linux", "4.2, fig 9", "deployment 5 (client on another host, bare) is 45-56x "
          "deployment 2 on Linux", (45, 56), Ratio("beps", _dep(5), _dep(2), LINUX)),
    Claim("d3-vs-d2-specialized", "4.2, fig 8", "deployment 3 is 3-4x deployment 2 on Ambience",
          (3, 4), Ratio("beps", _dep(3), _dep(2), SPEC)),
    Claim("d4-vs-d2-specialized", "4.2, fig 8", "deployment 4 is 13-23x deployment 2 on Ambience",
          (13, 23), Ratio("beps", _dep(4), _dep(2), SPEC)),
    Claim("d5-vs-d2-specialized", "4.2, fig 8", "deployment 5 is 6-8x deployment 2 on Ambience",
          (6, 8), Ratio("beps", _dep(5), _dep(2), SPEC)),
    Claim("linux-vs-specialized-beps", "4.2, figs 8-9", "Ambience is at least an order of "
          "magnitude faster than Linux in every equivalent deployment", (10, math.inf),
          Ratio("beps", LINUX, SPEC)),
    Claim("micro-isolation-specialized", "4.1, fig 5", "Ambience co-located is 73x faster than "
          "isolated (poll, edge/cloud)", about(73),
          Ratio("micro", ISO | _dep(2), CO | _dep(1), SPEC)),
    Claim("micro-isolation-linux", "4.1, fig 6", "... versus 1.3x for Linux", about(1.3),
          Ratio("micro", ISO | _dep(2), CO | _dep(1), LINUX)),
    Claim("micro-isolated-linux-vs-specialized", "4.1, figs 5-6", "Ambience's isolated call is "
          "6x faster than Linux's", about(6), Ratio("micro", LINUX, SPEC, ISO | _dep(2))),
    Claim("micro-isolation-device", "4.1, fig 7", "on the microcontroller, co-located is 20x "
          "faster than isolated", about(20),
          Ratio("micro", ISO | _dep(2), CO | _dep(1), {"backend": DEVICE_BACKENDS[0]})),
    Claim("device-d2-vs-d1", "4.2, fig 10", "on the microcontroller, separating the client "
          "(deployment 2 vs 1) costs about 2x", about(2),
          Ratio("beps", _dep(2), _dep(1), {"backend": DEVICE_BACKENDS[0]})),
    Claim("device-d4-vs-d2", "4.2, fig 10", "on the microcontroller, deployment 4 is about 134x "
          "deployment 2 (co-located; the request types summed, as the paper's total)", about(134),
          Ratio("beps", _dep(4), _dep(2), CO | {"backend": DEVICE_BACKENDS[0]}, total=True)),
    Claim("throughput-peak-linux", "4.3, fig 11", "Linux peaks at 6,613-7,594 requests/s",
          (6613, 7594), Throughput("peak_rps"), unit=" rps"),
    Claim("throughput-peak-clients-linux", "4.3, fig 11", "Linux reaches its peak at 10-13 "
          "clients", (10, 13), Throughput("peak_clients"), unit=" clients"),
    Claim("throughput-specialized-vs-linux-5", "4.3, fig 11", "at 5 clients Ambience achieves "
          "2.7x the throughput of Linux", about(2.7),
          Throughput("rps_ratio", platform="specialized", versus="linux", clients=5)),
]


def _num(x: float, unit: str = "") -> str:
    if not math.isfinite(x):
        return "inf"
    return (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}") + unit


def _span(lo: float, hi: float, unit: str) -> str:
    return _num(lo, unit) if lo == hi else f"{_num(lo)}-{_num(hi, unit)}"


def check(claim: Claim, tables: dict) -> dict:
    lo, hi = claim.paper
    row = {"claim": claim.name, "source": claim.source, "statement": claim.statement,
           "paper": (f">= {_num(lo, claim.unit)}" if not math.isfinite(hi)
                     else _span(lo, hi, claim.unit)),
           "paper_low": lo, "paper_high": hi}
    try:
        pairs = [p for p in claim.ours.pairs(tables) if math.isfinite(p[0])]
        if not pairs:
            raise NotMeasured("the matched cells have no positive means")
    except NotMeasured as e:
        return row | {"ours": "", "pairs": 0, "verdict": NOT_MEASURED, "why": str(e)}
    v = np.array(pairs, dtype=np.float64)
    value, low, high = v[:, 0], v[:, 1], v[:, 2]
    has_ci = np.isfinite(low) & np.isfinite(high)
    low, high = np.where(has_ci, low, value), np.where(has_ci, high, value)
    inside = (low <= hi) & (high >= lo)
    ours = _span(value.min(), value.max(), claim.unit)
    if has_ci.any():
        ours += f" (95% CI {_span(low.min(), high.max(), claim.unit)})"
    else:
        ours += " (one sweep, no CI)"
    n_in = int(inside.sum())
    if n_in == len(v):
        verdict, why = HOLDS, f"all {len(v)} pair(s) meet the paper's range"
    else:
        below, above = int((high < lo).sum()), int((low > hi).sum())
        verdict = FAILS
        why = (f"{len(v) - n_in} of {len(v)} pair(s) outside the paper's range ({below} below, "
               f"{above} above)")
    return row | {"ours": ours, "ours_value": round(float(np.median(value)), 4),
                  "ours_low": round(float(low.min()), 4), "ours_high": round(float(high.max()), 4),
                  "pairs": len(v), "verdict": verdict, "why": why}


def claims_table(tables: dict) -> pd.DataFrame:
    """`tables`: suite ("micro", "beps", "throughput") -> its summary table (absent: not run)."""
    return pd.DataFrame([check(c, tables) for c in CLAIMS], columns=COLUMNS)


def read_tables(paths) -> dict:
    """Summary tables (Parquet) -> {"micro", "beps", "throughput": table}: latency rows by their
    `suite` column (the device tier's table holds micro and BEPS rows of backend device), other
    tables by their file's name."""
    from pathlib import Path

    parts: dict[str, list[pd.DataFrame]] = {}
    for p in paths:
        df = pd.read_parquet(p)
        if "suite" in df and df["suite"].isin(["micro", "beps"]).all() and len(df):
            for suite, g in df.groupby("suite"):
                parts.setdefault(suite, []).append(g)
        else:
            parts.setdefault(Path(p).stem, []).append(df)
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


def write(out_csv: str, paths: list[str]) -> pd.DataFrame:
    """Read the summary tables, write the claims CSV."""
    from msdbench.results import atomic_write_csv

    out = claims_table(read_tables(paths))
    atomic_write_csv(out_csv, out)
    return out
