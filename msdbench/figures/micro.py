"""Paper figs 5-6: poll latency against payload, a line per isolation (x deployment x backend),
a panel per platform; the band spans p50..p99 of every cell."""

from __future__ import annotations

import pandas as pd

from msdbench.figures import client_accel, client_kind, deployment_label, good_rows, plt, save


def plot(table: pd.DataFrame, png: str, pdf: str, log_scale: bool = False) -> None:
    df, left_out = good_rows(table)
    platforms = sorted(table["platform"].unique())
    fig, axes = plt.subplots(1, len(platforms), figsize=(6 * len(platforms), 4.2), squeeze=False,
                             sharey=True)
    mode = table["payload_mode"].dropna().unique()
    unit = ("payload (bytes)" if list(mode) == ["binary"]
            else "payload (i64 elements; 8 bytes each on the wire)" if list(mode) == ["list"]
            else f"payload ({', '.join(mode)})")
    for ax, platform in zip(axes[0], platforms):
        sub = df[df["platform"] == platform]
        for (iso, dep, backend), g in sub.groupby(["isolation", "deployment", "backend"]):
            g = g.sort_values("payload")
            label = f"{iso}, {deployment_label(dep, client_kind(g), client_accel(g))}, {backend}"
            line, = ax.plot(g["payload"], g["mean_us"], marker="o", label=label)
            ax.fill_between(g["payload"], g["p50_us"], g["p99_us"], alpha=0.15,
                            color=line.get_color(), linewidth=0)
        ax.set_title(f"platform: {platform}")
        ax.set_xlabel(unit)
        ax.grid(True, alpha=0.3)
        if log_scale:
            ax.set_yscale("log")
        if len(sub):
            ax.legend(fontsize=8, title="isolation, deployment, backend", title_fontsize=8)
    axes[0][0].set_ylabel("round trip (us): mean, band p50..p99")
    note = "left out: " + "; ".join(left_out) if left_out else ""
    fig.suptitle("Poll latency vs payload (msdbench micro)" + (f"\n{note}" if note else ""),
                 fontsize=10)
    save(fig, png, pdf)
