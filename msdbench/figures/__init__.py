"""One module per paper figure; each reads a summary table only, never raw samples."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on testbeds

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from msdbench.results import atomic_write_bytes  # noqa: E402


def good_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows fit to plot, and a note for each cell left out (a failed check is never plotted)."""
    bad = df[df["status"] != "ok"]
    notes = sorted({f"{r.platform}/{r.backend} {r.isolation} d{r.deployment}: {r.status}"
                    for r in bad.itertuples()})
    return df[df["status"] == "ok"], notes


US = "\u00b5s"  # micro sign + s, in every axis label
LOG_SPAN = 20     # a panel whose values span more than this factor gets a log axis


def yerr(g: pd.DataFrame, value: str, low: str, high: str, floor) -> np.ndarray:
    """Error bars (distances below and above `value`) from a CI's bounds. A lower bound below
    `floor` (the fastest call: no mean can be below it) is drawn to the floor, so that a CI of
    few repetitions never runs off the bottom of a log axis. Unknown bounds give no bar."""
    v = g[value].to_numpy(dtype=float)
    lo = np.fmax(g[low].to_numpy(dtype=float), np.asarray(floor, dtype=float))
    hi = g[high].to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0))


def platform_order(platform: str) -> int:
    """The paper's order: Ambience (our specialized platform) first, then Linux."""
    return {"specialized": 0, "linux": 1}.get(platform, 2)


def log_if_wide(ax, values) -> None:
    """A log y axis where the panel's values span more than LOG_SPAN (micro: a direct call next
    to a socket round trip; BEPS: a co-located call next to an isolated publish)."""
    v = np.asarray(pd.Series(values, dtype=float).dropna())
    v = v[v > 0]
    lo, hi = (v.min(), v.max()) if v.size else (0.0, 0.0)
    if lo > 0 and hi / lo > LOG_SPAN:
        ax.set_yscale("log")
    elif lo >= 0:
        ax.set_ylim(bottom=0)


def save(fig, png: str, pdf: str) -> None:
    """Both formats, each written whole or not at all."""
    import io

    for path, fmt in ((png, "png"), (pdf, "pdf")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)


HOST_KIND_LABELS = {"netns": "emulated host", "ssh": "remote host", "vm": "VM"}


ACCEL_LABELS = {"tcg": "TCG, emulated", "kvm": "KVM"}


def accel_label(accel) -> str | None:
    """How a VM's accelerator is shown: every VM number says whether its guest was emulated."""
    return ACCEL_LABELS.get(accel, accel) if isinstance(accel, str) and accel else None


def deployment_label(deployment, kind=None, accel=None) -> str:
    """'d2'; 'd5 (emulated host)' where the client ran on a network namespace of this machine;
    'd3 (VM (TCG, emulated))' where it ran in a guest that QEMU emulated."""
    label = f"d{deployment}"
    if kind in HOST_KIND_LABELS:
        name = HOST_KIND_LABELS[kind]
        if kind == "vm" and accel_label(accel):
            name += f" ({accel_label(accel)})"
        label += f" ({name})"
    return label


def placement(rows: pd.DataFrame) -> pd.Series:
    """Per row, its deployment as the figures show it: `deployment_label` of the client's host,
    plus where the server side ran when that was a VM the client did not share ("d3 (VM (TCG,
    emulated)); server: VM (TCG, emulated)"). Figures group by this, never by the deployment
    number alone, so that a bare and a VM layout of one deployment are never pooled."""
    def col(name):
        return rows[name] if name in rows.columns else pd.Series(None, index=rows.index, dtype=object)

    labels = []
    for dep, ck, ca, ch, sk, sa, sh in zip(rows["deployment"], col("client_host_kind"),
                                           col("client_accel"), col("client_host"),
                                           col("server_host_kind"), col("server_accel"),
                                           col("server_host")):
        ck, ca = (None if pd.isna(v) else v for v in (ck, ca))
        label = deployment_label(dep, ck, ca)
        if isinstance(sk, str) and sk == "vm" and ch != sh:
            label += f"; server: VM ({accel_label(None if pd.isna(sa) else sa) or 'accelerator unknown'})"
        labels.append(label)
    return pd.Series(labels, index=rows.index, dtype=object)


def by_placement(rows: pd.DataFrame) -> list[str]:
    """The placements present in rows' `placement` column (made by `placement`), in deployment
    order."""
    if rows.empty:
        return []
    firsts = rows.groupby("placement")["deployment"].min()
    return sorted(firsts.index, key=lambda p: (firsts[p], p))


def client_kind(df: pd.DataFrame):
    """The client host kind of a group of rows (None for tables from before hosts existed)."""
    if "client_host_kind" not in df.columns or df.empty:
        return None
    return df["client_host_kind"].iloc[0]


def gather(out: str, files) -> None:
    """Rule figures: the figures into one directory, replaced whole (hard links; a copy where the
    file system cannot link)."""
    import os
    import shutil
    from pathlib import Path

    tmp = Path(out + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        try:
            os.link(f, tmp / Path(f).name)
        except OSError:
            shutil.copy2(f, tmp / Path(f).name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
