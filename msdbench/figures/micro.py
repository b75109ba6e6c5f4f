"""Paper figs 5-6: poll latency against payload, a column per platform (fig 5: Ambience, our
specialized platform; fig 6: Linux), a line per isolation (x deployment x backend).

Row 1: the mean round trip with its 95% CI across repetitions. Row 2: where it goes: the call
(client send to server stamp) and the return (server stamp to client receive). Row 3: the median
as a multiple of the repetition's raw TCP echo, the view that survives the machine's speed modes.
A panel whose values span more than LOG_SPAN is drawn on a log axis."""

from __future__ import annotations

import pandas as pd

from msdbench.figures import (US, by_placement, good_rows, log_if_wide, placement, platform_order,
                               plt, save, yerr)


def _unit(table: pd.DataFrame) -> str:
    mode = list(table["payload_mode"].dropna().unique()) if "payload_mode" in table else []
    if mode == ["binary"]:
        return "payload (bytes)"
    if mode == ["list"]:
        return "payload (i64 elements; 8 bytes each on the wire)"
    return f"payload ({', '.join(mode)})"


def plot(table: pd.DataFrame, png: str, pdf: str) -> None:
    df, left_out = good_rows(table)
    platforms = sorted(table["platform"].unique(), key=platform_order)
    rows = 3 if "p50_x_echo" in df and df["p50_x_echo"].notna().any() else 2
    fig, axes = plt.subplots(rows, len(platforms), figsize=(6.2 * len(platforms), 3.4 * rows),
                             squeeze=False)
    for col, platform in enumerate(platforms):
        top, split = axes[0, col], axes[1, col]
        sub = df[df["platform"] == platform]
        sub = sub.assign(placement=placement(sub))
        order = {p: i for i, p in enumerate(by_placement(sub))}
        series = sorted(sub.groupby(["isolation", "placement", "backend"]),
                        key=lambda kg: (order[kg[0][1]], kg[0][0], kg[0][2]))
        for k, ((iso, where, backend), g) in enumerate(series):
            g = g.sort_values("payload")
            color = plt.get_cmap("tab10")(k % 10)
            label = f"{iso}, {where}, {backend}"
            top.errorbar(g["payload"], g["mean_us"], yerr=yerr(g, "mean_us", "ci95_low_us", "ci95_high_us",
                                                                g["min_us"]),
                         marker="o", ms=4, capsize=3, color=color, label=label)
            if "call_mean_us" in g and g["call_mean_us"].notna().any():
                split.plot(g["payload"], g["call_mean_us"], "-", marker=">", ms=4, color=color,
                           label=f"{label}: call")
                split.plot(g["payload"], g["return_mean_us"], "--", marker="<", ms=4, color=color,
                           label=f"{label}: return")
            if rows == 3 and g["p50_x_echo"].notna().any():
                axes[2, col].errorbar(g["payload"], g["p50_x_echo"],
                                      yerr=yerr(g, "p50_x_echo", "p50_x_echo_ci95_low",
                                                "p50_x_echo_ci95_high",
                                                g["min_us"] / g["echo_p50_us"]),
                                      marker="o", ms=4, capsize=3, color=color, label=label)
        name = {"specialized": "specialized (the paper's Ambience, fig 5)",
                "linux": "linux (fig 6)"}.get(platform, platform)
        top.set_title(f"platform: {name}", fontsize=10)
        top.set_ylabel(f"round trip ({US}): mean, 95% CI")
        split.set_ylabel(f"mean ({US})")
        split.set_title("call (client to server stamp) and return (stamp to client)", fontsize=9)
        if rows == 3:
            axes[2, col].set_ylabel("median / TCP echo median")
            axes[2, col].set_title("median as a multiple of the same repetition's raw TCP echo "
                                   "(95% CI)", fontsize=9)
        values = [sub["mean_us"], pd.concat([sub.get("call_mean_us", pd.Series(dtype=float)),
                                             sub.get("return_mean_us", pd.Series(dtype=float))]),
                  sub.get("p50_x_echo", pd.Series(dtype=float))]
        for ax, v in zip(axes[:, col], values):
            log_if_wide(ax, v)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel(_unit(table))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    note = "left out: " + "; ".join(left_out) if left_out else ""
    reps = df["repeats"].dropna() if "repeats" in df else pd.Series(dtype=float)
    shown = (f"{int(reps.min())}-{int(reps.max())}" if len(reps) and reps.min() != reps.max()
             else f"{int(reps.iloc[0])}" if len(reps) else "1")
    fig.suptitle(f"Poll latency vs payload (msdbench micro; {shown} repetition(s) a cell, "
                 f"CIs across repetitions)" + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    save(fig, png, pdf)

