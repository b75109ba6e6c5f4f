"""Paper figs 7 and 10: the microcontroller tier, from results/tables/device.csv only.

Fig 7: poll round trip on the board per payload, a bar per isolation and deployment (co-located
d1, isolated d2, isolated d4 across the link). Fig 10: BEPS per request type, a bar per isolation
and deployment. Log scale: deployment 4 crosses a 250 kbit/s link and is two orders of magnitude
above the rest. Each figure names the board (and the emulation settings) it ran on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msdbench.figures import good_rows, plt, save

OPS = ["create_user", "subscribe", "publish", "unsubscribe", "delete_user"]


def _board_line(df: pd.DataFrame) -> str:
    parts = []
    for (board, emu), _ in df.groupby(["board", "emulation"], dropna=False):
        parts.append(f"{board}" + (f" ({emu})" if isinstance(emu, str) and emu else ""))
    return "; ".join(parts) or "no cell ran"


def _bars(ax, df: pd.DataFrame, x_col: str, x_values: list, x_label) -> None:
    series = sorted(df.groupby(["isolation", "deployment"]).groups, key=lambda k: (k[1], k[0]))
    width = 0.8 / max(1, len(series))
    xs = np.arange(len(x_values))
    for i, (iso, dep) in enumerate(series):
        g = df[(df["isolation"] == iso) & (df["deployment"] == dep)].set_index(x_col)
        means = np.array([g["mean_us"].get(x, np.nan) for x in x_values], dtype=float)
        p50 = np.array([g["p50_us"].get(x, np.nan) for x in x_values], dtype=float)
        p99 = np.array([g["p99_us"].get(x, np.nan) for x in x_values], dtype=float)
        # A whisker from p50 to p99 around the mean (an sd bar would cross zero on a log axis).
        yerr = [np.clip(means - np.minimum(p50, means), 0, None),
                np.clip(np.maximum(p99, means) - means, 0, None)]
        bars = ax.bar(xs + (i - (len(series) - 1) / 2) * width, means, width, yerr=yerr,
                      capsize=2, label=f"{iso}, d{dep}")
        for b, m in zip(bars, means):
            if np.isfinite(m):
                ax.annotate(f"{m:.0f}", (b.get_x() + b.get_width() / 2, m), fontsize=6,
                            ha="center", va="bottom", rotation=90, xytext=(0, 2),
                            textcoords="offset points")
    ax.set_xticks(xs, [x_label(x) for x in x_values])
    ax.set_yscale("log")
    ax.set_ylabel("round trip (us): mean; whisker p50..p99")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="isolation, deployment", title_fontsize=8)


def _title(what: str, table: pd.DataFrame, df: pd.DataFrame, left_out: list[str]) -> str:
    lines = [what, "on: " + _board_line(df if len(df) else table)]
    if left_out:
        lines.append("left out: " + "; ".join(left_out))
    return "\n".join(lines)


def plot_micro(table: pd.DataFrame, png: str, pdf: str) -> None:
    table = table[table["suite"] == "micro"]
    df, left_out = good_rows(table)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    payloads = sorted(int(p) for p in table["payload"].dropna().unique())
    _bars(ax, df, "payload", payloads, lambda p: f"{p} B")
    ax.set_xlabel("request payload")
    fig.suptitle(_title("Fig 7: poll latency on the microcontroller tier (msdbench device)",
                        table, df, left_out), fontsize=9)
    save(fig, png, pdf)


def plot_beps(table: pd.DataFrame, png: str, pdf: str) -> None:
    table = table[table["suite"] == "beps"]
    df, left_out = good_rows(table)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    _bars(ax, df, "op", [o for o in OPS if o in set(table["op"].dropna())] or OPS, str)
    ax.set_xlabel("request type")
    fig.suptitle(_title("Fig 10: BEPS end to end on the microcontroller tier (msdbench device)",
                        table, df, left_out), fontsize=9)
    save(fig, png, pdf)
