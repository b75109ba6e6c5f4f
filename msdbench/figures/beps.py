"""Paper figs 8-9: BEPS round trip per request type and deployment, a bar group per isolation, a
panel per platform x backend. Bars are means, whiskers their 95% CI across repetitions (a lower
end below the fastest call is drawn to it), the black tick each cell's median. A panel whose
values span more than LOG_SPAN is on a log axis."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msdbench.figures import (US, by_placement, good_rows, log_if_wide, placement, platform_order,
                               plt, save, yerr)

OPS = ["create_user", "subscribe", "publish", "unsubscribe", "delete_user"]
ISOLATIONS = ["co-located", "tiered", "isolated"]


def plot(table: pd.DataFrame, png: str, pdf: str) -> None:
    df, left_out = good_rows(table)
    panels = sorted({(r.platform, r.backend) for r in table.itertuples()},
                    key=lambda pb: (platform_order(pb[0]), pb[1]))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.9 * len(panels)), squeeze=False)
    for ax, (platform, backend) in zip(axes[:, 0], panels):
        sub = df[(df["platform"] == platform) & (df["backend"] == backend)]
        sub = sub.assign(placement=placement(sub))
        groups = [(op, p) for op in OPS for p in by_placement(sub)]
        x = np.arange(len(groups))
        isos = [i for i in ISOLATIONS if i in set(sub["isolation"])]
        width = 0.8 / max(len(isos), 1)
        for k, iso in enumerate(isos):
            s = sub[sub["isolation"] == iso].set_index(["op", "placement"]).reindex(groups)
            xs = x + (k - (len(isos) - 1) / 2) * width
            ax.bar(xs, s["mean_us"], width, label=iso,
                   yerr=yerr(s, "mean_us", "ci95_low_us", "ci95_high_us", s["min_us"]),
                   capsize=2, error_kw={"elinewidth": 0.8})
            ax.plot(xs, s["p50_us"], "_", color="black", ms=max(3.0, 40 * width), mew=1.2,
                    label="median" if k == 0 else None)
        ax.set_xticks(x, [f"{op}\n{p}".replace(" (", "\n(", 1).replace("; ", "\n")
                          for op, p in groups], fontsize=7)
        ax.set_title(f"platform: {platform}, backend: {backend}", fontsize=10)
        ax.set_ylabel(f"round trip ({US})\nmean, 95% CI; tick: median")
        log_if_wide(ax, sub["mean_us"])
        ax.grid(True, axis="y", which="both", alpha=0.3)
        if isos:
            ax.legend(fontsize=8, title="isolation", title_fontsize=8, ncols=len(isos) + 1)
    note = "left out: " + "; ".join(left_out) if left_out else ""
    fig.suptitle("BEPS end-to-end latency per request type and deployment (CIs across "
                 "repetitions)" + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    save(fig, png, pdf)
