"""The paper's headline ratios, from the summary tables only (results/tables/{micro,beps}.parquet).

Three comparisons, one row per pair of cells that both passed (status "ok"):

* `isolation` (micro): per platform, backend and payload, mean(isolated, d2) / mean(co-located, d1):
  what leaving the domain costs. The paper reports 73x on Ambience (the specialized platform) and
  1.3x on Linux.
* `isolation` (beps): per platform, backend, deployment and request type, tiered / co-located and
  isolated / co-located.
* `platform`: per cell (suite, backend, isolation, deployment, payload, request type),
  mean(specialized) / mean(linux).
* `deployment`: per platform, backend, isolation, payload and request type, mean(dN) / mean(d2)
  for N = 3, 4, 5: what moving the client into a VM (3), into a VM on another host (4) or onto
  another host (5) costs. `host` says which kind of host the client ran on ("VM (TCG, emulated)"
  or "VM (KVM)": the accelerator is part of the label, and cells of different accelerators are
  never pooled; "emulated host": a network namespace on this machine, so no wire and no second
  CPU set; "remote host": a real one over SSH). The paper's BEPS ratios (section 5; KVM guests,
  1 GbE between NUCs): Linux d3 14-16x, d4 65-68x, d5 45-56x; Ambience d3 3-4x, d4 13-23x, d5 6-8x.

* `device-isolation`, `device-deployment` (the microcontroller tier, backend device): the paper's
  device claims: poll isolated d2 / co-located d1 (20x); BEPS d2 / d1 per isolation and request
  type (about 2x); BEPS d4 / d2 co-located, the sum over the request types' means ("total
  average time across all benchmarks", 134x; op "all"), with per-type rows beside it. Each row
  names the board it ran on (`board`).

Every row says where the server side ran (`server`): "this machine (bare)", the default, or "VM
(TCG, emulated)" / "VM (KVM)" (`deployments.N.server_host`, the paper's layout); the comparisons
run within one layout, never across.

Each row carries both means, the ratio of means and the ratio of medians (p50: less moved by the
outliers of a shared machine), and the paper's number where it gives one.
"""

from __future__ import annotations

import pandas as pd

# The paper's isolation ratios for the microbenchmark (isolated d2 over co-located d1).
PAPER_MICRO_ISOLATION = {"specialized": 73.0, "linux": 1.3}
# The paper's microcontroller claims (section 4.1 and 4.2, Ambience on the nRF52840).
PAPER_DEVICE = {"isolation": 20.0, "d2/d1": 2.0, "d4/d2": 134.0}
# The paper's deployment ratios, BEPS, dN / d2 (section 5; KVM guests, 1 GbE between NUCs), per
# platform (specialized = Ambience): the range it gives; paper_ratio is the range's midpoint.
PAPER_DEPLOYMENT = {3: {"linux": (14, 16), "specialized": (3, 4)},
                    4: {"linux": (65, 68), "specialized": (13, 23)},
                    5: {"linux": (45, 56), "specialized": (6, 8)}}

COLUMNS = ["suite", "comparison", "platform", "backend", "isolation", "deployment", "payload", "op",
           "numerator", "denominator", "numerator_mean_us", "denominator_mean_us", "ratio",
           "numerator_p50_us", "denominator_p50_us", "ratio_p50", "paper_ratio", "board", "host",
           "server", "note"]


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


def _host_label(rows: pd.DataFrame) -> str:
    from msdbench.figures import HOST_KIND_LABELS, accel_label

    kind = rows["client_host_kind"].iloc[0] if "client_host_kind" in rows.columns else None
    host = HOST_KIND_LABELS.get(kind, kind or "other host")
    accel = rows["client_accel"].iloc[0] if "client_accel" in rows.columns else None
    return f"{host} ({accel_label(accel)})" if kind == "vm" and accel_label(accel) else host


def deployment_ratio(table: pd.DataFrame, suite: str) -> list[dict]:
    """dN / d2 for N = 3, 4, 5: the client in a VM, in a VM on another host, on another host,
    against the client in its own domain on this one. One set of rows per accelerator."""
    table = table[table["backend"] != "device"]  # a board's d4 is another node: device_ratios
    rows = []
    d2 = _cell(table, deployment=2)
    for deployment, paper in PAPER_DEPLOYMENT.items():
        dn = _cell(table, deployment=deployment)
        if dn.empty:
            continue
        accel = (dn["client_accel"] if "client_accel" in dn.columns
                 else pd.Series(None, index=dn.index, dtype=object)).fillna("-")
        for one in accel.unique():
            part = dn[accel == one]
            host = _host_label(part)
            name = part["client_host"].iloc[0] if "client_host" in part.columns else "?"
            mid = {p: (lo + hi) / 2 for p, (lo, hi) in paper.items()} if suite == "beps" else None
            note = ("paper: " + ", ".join(f"{p} {lo}-{hi}x" for p, (lo, hi) in paper.items())
                    + " (BEPS, KVM guests, 1 GbE between NUCs)") if suite == "beps" else ""
            rows += _pairs(part, d2, ["platform", "backend", "isolation", "payload", "op"],
                           {"suite": suite, "comparison": "deployment", "deployment": deployment},
                           f"d{deployment} ({host}: {name})", "d2", mid,
                           keep={"host": host, "note": note})
    return rows


def _device_base(suite: str, comparison: str, board) -> dict:
    return {"suite": suite, "comparison": comparison, "platform": "specialized",
            "backend": "device", "board": board}


def device_ratios(device: pd.DataFrame) -> list[dict]:
    rows = []
    for board, g in device.groupby("board", dropna=False):
        micro, beps = _cell(g, suite="micro"), _cell(g, suite="beps")
        rows += _pairs(_cell(micro, isolation="isolated", deployment=2),
                       _cell(micro, isolation="co-located", deployment=1), ["payload", "op"],
                       _device_base("micro", "device-isolation", board), "isolated d2",
                       "co-located d1", keep={"isolation": "isolated",
                                              "paper_ratio": PAPER_DEVICE["isolation"]})
        for iso, b in beps.groupby("isolation"):
            rows += _pairs(_cell(b, deployment=2), _cell(b, deployment=1), ["op"],
                           _device_base("beps", "device-deployment", board), f"{iso} d2",
                           f"{iso} d1", keep={"isolation": iso, "deployment": 2,
                                              "paper_ratio": PAPER_DEVICE["d2/d1"]})
            d4, d2 = _cell(b, deployment=4), _cell(b, deployment=2)
            rows += _pairs(d4, d2, ["op"], _device_base("beps", "device-deployment", board),
                           f"{iso} d4", f"{iso} d2", keep={"isolation": iso, "deployment": 4})
            common = sorted(set(d4["op"]) & set(d2["op"]))
            if iso == "co-located" and common:   # the paper's 134x: total over the request types
                total = {k: pd.DataFrame([{"op": "all", "mean_us": f[f["op"].isin(common)][
                    "mean_us"].sum(), "p50_us": f[f["op"].isin(common)]["p50_us"].sum()}])
                    for k, f in (("n", d4), ("d", d2))}
                rows += _pairs(total["n"], total["d"], ["op"],
                               _device_base("beps", "device-deployment", board),
                               f"{iso} d4 (sum of request types)", f"{iso} d2 (sum)",
                               keep={"isolation": iso, "deployment": 4,
                                     "paper_ratio": PAPER_DEVICE["d4/d2"]})
    return rows


def server_label(rows: pd.DataFrame) -> pd.Series:
    """Per row, where its server side ran (tables from before server_host: this machine)."""
    from msdbench.figures import accel_label

    if "server_host_kind" not in rows.columns:
        return pd.Series("this machine (bare)", index=rows.index)
    accel = rows["server_accel"] if "server_accel" in rows.columns else pd.Series(None, index=rows.index)
    return pd.Series([f"VM ({accel_label(a) or a})" if k == "vm" else
                      "this machine (bare)" if k in (None, "local") or pd.isna(k) else k
                      for k, a in zip(rows["server_host_kind"], accel)], index=rows.index)


def ratios(micro: pd.DataFrame | None = None, beps: pd.DataFrame | None = None,
           device: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ratio table (columns COLUMNS); empty tables or absent suites give no rows."""
    micro, beps, device = _ok(micro), _ok(beps), _ok(device)
    rows = []
    if not device.empty:
        rows += device_ratios(device)
    for df, suite, own in ((micro, "micro", micro_isolation), (beps, "beps", beps_isolation)):
        if df.empty:
            continue
        where = server_label(df)
        for server in where.unique():  # one server layout at a time: never pooled
            part = df[where == server]
            rows += [r | {"server": server} for r in own(part) + platform_ratio(part, suite)
                     + deployment_ratio(part, suite)]
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
        # Board cells compare with each other only (the device rows), never with the host's.
        on_board = df["backend"] == "device" if "backend" in df.columns else False
        for key, part in (("device", df[on_board]), (None, df[~on_board])):
            for suite, g in part.groupby("suite"):
                k = key or suite
                by_suite[k] = pd.concat([by_suite[k], g]) if k in by_suite else g
    out = ratios(by_suite.get("micro"), by_suite.get("beps"), by_suite.get("device"))
    atomic_write_csv(out_csv, out)
    return out
