"""Paper figs 8-9: BEPS round trip per request type and deployment, a bar group per isolation, a
panel per platform x backend; error bars are one standard deviation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from msdbench.figures import client_accel, client_kind, deployment_label, good_rows, plt, save

OPS = ["create_user", "subscribe", "publish", "unsubscribe", "delete_user"]
ISOLATIONS = ["co-located", "tiered", "isolated"]


def plot(table: pd.DataFrame, png: str, pdf: str, log_scale: bool = True) -> None:
    df, left_out = good_rows(table)
    panels = sorted({(r.platform, r.backend) for r in table.itertuples()})
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.8 * len(panels)), squeeze=False)
    for ax, (platform, backend) in zip(axes[:, 0], panels):
        sub = df[(df["platform"] == platform) & (df["backend"] == backend)]
        deps = sorted(sub["deployment"].unique()) if len(sub) else []
        groups = [(op, d) for op in OPS for d in deps]
        x = np.arange(len(groups))
        isos = [i for i in ISOLATIONS if i in set(sub["isolation"])]
        width = 0.8 / max(len(isos), 1)
        for k, iso in enumerate(isos):
            s = sub[sub["isolation"] == iso].set_index(["op", "deployment"])
            means = [s["mean_us"].get(g, np.nan) for g in groups]
            sds = [s["sd_us"].get(g, np.nan) for g in groups]
            ax.bar(x + (k - (len(isos) - 1) / 2) * width, means, width, yerr=sds, capsize=2,
                   label=iso, error_kw={"elinewidth": 0.8})
        kinds = {d: (client_kind(sub[sub["deployment"] == d]), client_accel(sub[sub["deployment"] == d]))
                 for d in deps}
        ax.set_xticks(x, [f"{op}\n{deployment_label(d, *kinds[d])}".replace(" (", "\n(", 1)
                          for op, d in groups], fontsize=7)
        ax.set_title(f"platform: {platform}, backend: {backend}", fontsize=10)
        ax.set_ylabel("round trip (us), mean ± sd")
        if log_scale:
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
        if isos:
            ax.legend(fontsize=8, title="isolation", title_fontsize=8)
    note = "left out: " + "; ".join(left_out) if left_out else ""
    fig.suptitle("BEPS end-to-end latency per request type and deployment"
                 + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    save(fig, png, pdf)
