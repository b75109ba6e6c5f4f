"""Paper fig 11: requests per second against concurrent clients, a line per isolation and platform,
the knee marked; below it, where the capacity went (the server side's CPU). And the open loop:
latency against offered load. Both from results/tables/throughput.parquet only."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from msdbench.figures import HOST_KIND_LABELS, client_kind, plt, save

ISOLATIONS = ["co-located", "tiered", "isolated"]
COLORS = {"co-located": "tab:blue", "tiered": "tab:orange", "isolated": "tab:green"}
STYLES = {"linux": "-", "specialized": "--"}


def _lines(df: pd.DataFrame):
    """(label, isolation, platform, rows sorted by point) of each sweep in the table (a sweep per
    deployment, where the table holds more than one)."""
    deps = sorted(df["deployment"].dropna().unique()) if "deployment" in df else []
    for (iso, platform, dep), g in sorted(
            df.groupby(["isolation", "platform", "deployment"]),
            key=lambda kv: (ISOLATIONS.index(kv[0][0]) if kv[0][0] in ISOLATIONS else 9,
                            kv[0][1], kv[0][2])):
        label = f"{iso}, {platform}" + (f", d{int(dep)}" if len(deps) > 1 else "")
        yield label, iso, platform, g.sort_values("point")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _notes(df: pd.DataFrame) -> list[str]:
    notes = []
    for r in df[~df["status"].isin(["ok", "disturbed"])].itertuples():
        what = f"{r.isolation}/{r.platform} {r.clients} clients"
        if r.mode == "open" and pd.notna(r.offered_rps):
            what += f" at {r.offered_rps:g} rps"
        notes.append(f"{what}: {r.status}: {str(r.failure).splitlines()[0][:110]}")
    return notes


def _disturbed(df: pd.DataFrame) -> list[str]:
    """A note when the host was busy with work that is not ours during the points."""
    notes = []
    if "status" in df and (df["status"] == "disturbed").any():
        notes.append(f"{int((df['status'] == 'disturbed').sum())} point(s) disturbed by other "
                     "work on the host were measured again (kept in the table, not drawn)")
    shown = df[df["status"] == "ok"] if "status" in df else df
    if "unaccounted_cpu_util" not in shown or shown["unaccounted_cpu_util"].dropna().empty:
        return notes
    worst = float(shown["unaccounted_cpu_util"].max())
    if worst >= 0.25:
        notes.append(f"caution: other work kept up to {worst:.2f} CPUs of this host busy during "
                     f"some drawn points (median {shown['unaccounted_cpu_util'].median():.2f}; "
                     "column unaccounted_cpu_util)")
    return notes


def where_clients(df: pd.DataFrame) -> str:
    """Where the sweeps' clients ran, for a title: their own domain (d2) or another host (d5)."""
    parts = []
    for dep, g in df.groupby("deployment"):
        if int(dep) == 2:
            parts.append("clients in their own domain (deployment 2)")
            continue
        kind = client_kind(g)
        host = g["client_host"].iloc[0] if "client_host" in g.columns else "another host"
        parts.append(f"clients on {host} (deployment {int(dep)}, "
                     f"{HOST_KIND_LABELS.get(kind, kind or 'another host')})")
    return "; ".join(parts)


def plot_rps(table: pd.DataFrame, png: str, pdf: str) -> None:
    df = table[table["mode"] == "closed"] if "mode" in table else table.iloc[0:0]
    backends = sorted(df["backend"].dropna().unique()) or ["process"]
    fig, axes = plt.subplots(3, len(backends), figsize=(10.5 * len(backends), 9), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [3, 1.1, 1.1]})
    for col, backend in enumerate(backends):
        top, server, client = axes[0, col], axes[1, col], axes[2, col]
        sub = df[(df["backend"] == backend) & df["clients"].notna()]
        if sub.empty:
            _empty(top, "no closed-loop throughput sweep in the configuration")
            _empty(server, "")
            _empty(client, "")
            continue
        knees = []
        for label, iso, platform, g in _lines(sub):
            color, ls = COLORS.get(iso, "gray"), STYLES.get(platform, ":")
            ok = g[g["status"] == "ok"]
            top.plot(ok["clients"], ok["rps"], ls, marker="o", ms=4, color=color, label=label)
            server.plot(ok["clients"], ok["server_cpu_util"], ls, marker=".", color=color)
            client.plot(ok["clients"], ok["client_cpu_util"], ls, marker=".", color=color)
            knee = ok[ok["is_knee"].astype(bool)]
            for r in knee.itertuples():
                saturated = bool(r.saturated)
                top.plot([r.clients], [r.rps], "*", ms=15, color=color if saturated else "white",
                         mec=color if not saturated else "black", mew=1.0, zorder=5)
                knees.append([label, f"{r.clients}" + ("" if saturated else " (still rising)"),
                              f"{r.rps:,.0f}"])
            lost = g[g["status"] == "lost-data"]
            top.plot(lost["clients"], lost["rps"], "o", ms=9, mfc="none", mec="red", mew=1.5)
            for r in g[g["status"] == "failed"].itertuples():
                y = ok["rps"].iloc[-1] if len(ok) else 0
                top.plot([r.clients], [y], "X", ms=11, color=color, mec="red", zorder=6)
        if knees:  # beside the plot, not on it: labels on the curves overlapped their stars
            t = top.table(cellText=knees, colLabels=["isolation, platform", "knee: clients",
                                                     "req/s"],
                          colWidths=[0.5, 0.3, 0.2], cellLoc="left",
                          bbox=[1.03, 1.0 - min(1.0, 0.09 * (len(knees) + 1)), 0.62,
                                min(1.0, 0.09 * (len(knees) + 1))])
            t.auto_set_font_size(False)
            t.set_fontsize(7)
        pin = ", ".join(sorted(sub["pinning"].dropna().astype(str).unique()))
        top.set_title(f"backend: {backend}; {where_clients(sub)}; pinning: {pin}", fontsize=9)
        top.set_ylabel("requests/s (all clients)")
        top.set_ylim(bottom=0)
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.grid(True, alpha=0.3)
        top.legend(fontsize=8, title="isolation, platform", title_fontsize=8)
        server.set_ylabel("server side's CPU\n(1.0 = one CPU)", fontsize=8)
        client.set_ylabel("clients' CPU\n(1.0 = one CPU)", fontsize=8)
        client.set_xlabel("concurrent clients")
        for ax in (server, client):
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
    notes = _disturbed(df) + _notes(df)
    title = ("BEPS throughput against concurrent clients (create_user/delete_user pairs; "
             "filled * = knee, open * = no knee within the sweep)")
    if notes:
        title += "\n" + "\n".join(notes[:5])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, png, pdf)


def plot_latency(table: pd.DataFrame, png: str, pdf: str) -> None:
    df = table[table["mode"] == "open"] if "mode" in table else table.iloc[0:0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    if df.empty:
        _empty(left, "no open-loop sweep in the configuration")
        _empty(right, "")
    else:
        top = 0.0
        for k, (label, iso, platform, g) in enumerate(_lines(df)):
            for backend, gb in g.groupby("backend"):
                ok = gb[gb["status"].isin(["ok", "lost-data"])]
                color = plt.get_cmap("tab10")(k % 10)
                tag = f"{label} ({backend})"
                left.plot(ok["offered_rps"], ok["p50_us"] / 1e3, "-", marker="o", ms=4,
                          color=color, label=f"{tag} p50")
                left.plot(ok["offered_rps"], ok["p99_us"] / 1e3, "--", marker="^", ms=4,
                          color=color, label=f"{tag} p99")
                right.plot(ok["offered_rps"], ok["rps"], "-", marker="o", ms=4, color=color,
                           label=tag)
            top = max(top, float(np.nanmax(ok["offered_rps"])) if len(ok) else 0)
        left.set_yscale("log")
        left.set_xlabel("offered load (requests/s)")
        left.set_ylabel("latency from intended send time (ms)")
        left.grid(True, which="both", alpha=0.3)
        left.legend(fontsize=7)
        right.plot([0, top], [0, top], ":", color="gray", label="achieved = offered")
        right.set_xlabel("offered load (requests/s)")
        right.set_ylabel("achieved (requests/s)")
        right.grid(True, alpha=0.3)
        right.legend(fontsize=7)
        clients = ", ".join(str(int(c)) for c in sorted(df["clients"].dropna().unique()))
        left.set_title(f"open loop, {clients} clients at a fixed rate (no coordinated omission)",
                       fontsize=9)
        right.set_title("throughput kept up", fontsize=9)
    notes = _disturbed(df) + _notes(df)
    title = "BEPS latency against offered load (create_user/delete_user)"
    if notes:
        title += "\n" + "\n".join(notes[:5])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save(fig, png, pdf)
