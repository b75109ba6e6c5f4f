"""The paper's claims against this run (results/tables/claims.csv): a row per claim, the paper's
range as a grey band, ours as a dot (the median of its pairs) with a whisker over every pair's
95% CI, coloured by verdict; a claim that was not measured says why."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from msdbench.claims import FAILS, HOLDS
from msdbench.figures import plt, save

COLORS = {HOLDS: "tab:green", FAILS: "tab:red"}


def plot(claims: pd.DataFrame, png: str, pdf: str) -> None:
    n = len(claims)
    fig, ax = plt.subplots(figsize=(12, 0.38 * n + 1.6))
    finite = pd.concat([claims["paper_low"], claims["paper_high"], claims["ours_low"],
                        claims["ours_high"]]).astype(float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    lo, hi = (finite.min() / 2, finite.max() * 2) if len(finite) else (0.1, 10)
    for y, r in enumerate(claims.to_dict("records")):
        p_hi = r["paper_high"] if math.isfinite(r["paper_high"]) else hi
        ax.barh(y, p_hi - r["paper_low"], left=r["paper_low"], height=0.6, color="0.85",
                edgecolor="0.6", label="paper" if y == 0 else None)
        if r["verdict"] in COLORS and pd.notna(r["ours_value"]):
            c = COLORS[r["verdict"]]
            ax.plot([r["ours_low"], r["ours_high"]], [y, y], "-", color=c, lw=1.5)
            ax.plot([r["ours_value"]], [y], "o", color=c, ms=6)
        else:
            ax.text(lo * 1.05, y, f"not measured: {r['why']}", va="center", fontsize=7,
                    color="0.35")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(range(n), [f"{r['claim']} ({r['source']})" for r in claims.to_dict("records")],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio, or requests/s / clients for the throughput rows (log scale)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", label=f"ours: {v}")
               for v, c in COLORS.items()]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="0.85", label="paper's range"))
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    counts = claims["verdict"].value_counts()
    fig.suptitle("The paper's claims against this run: "
                 + ", ".join(f"{counts.get(v, 0)} {v}" for v in (HOLDS, FAILS, "not measured"))
                 + "\n(dot: median of the matched pairs; whisker: every pair's 95% CI; "
                 "results/tables/claims.csv has the numbers)", fontsize=9)
    fig.tight_layout()
    save(fig, png, pdf)
