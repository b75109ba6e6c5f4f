"""The numbers in the tables, against numbers worked out by hand; what the figures leave out."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from msdbench.aggregate import table
from msdbench.records import CellRecord
from msdbench.results import summarize

US = 1000  # ns


def test_summarize_against_hand_computed_numbers():
    # 1, 2, ..., 10 us. mean 5.5; sd (n-1) = sqrt(82.5 / 9); percentiles by linear interpolation
    # between order statistics: p at rank 9 * q (0-based), e.g. p90 = x[8.1] = 9 + 0.1 * (10 - 9).
    s = summarize(np.arange(1, 11) * US)
    sd = math.sqrt(82.5 / 9)
    half = 1.96 * sd / math.sqrt(10)
    expect = {"n": 10, "mean_us": 5.5, "sd_us": sd, "min_us": 1.0, "max_us": 10.0,
              "p50_us": 5.5, "p90_us": 9.1, "p99_us": 9.91, "p99.9_us": 9.991,
              "ci95_low_us": 5.5 - half, "ci95_high_us": 5.5 + half}
    for key, value in expect.items():
        assert s[key] == pytest.approx(value, abs=1e-3), key


def test_summarize_skewed_series_and_edge_cases():
    # 99 calls of 10 us and one of 1010 us: the mean moves (+10 us), the median does not, p99
    # sits between the last 10 and the 1010 (rank 98.01: 10 + 0.01 * 1000).
    s = summarize(np.r_[np.full(99, 10 * US), 1010 * US])
    assert (s["n"], s["p50_us"], s["mean_us"], s["max_us"]) == (100, 10.0, 20.0, 1010.0)
    assert s["p99_us"] == pytest.approx(20.0)
    assert s["p90_us"] == 10.0
    one = summarize(np.array([7 * US]))
    assert (one["n"], one["mean_us"], one["sd_us"], one["p99_us"]) == (1, 7.0, 0.0, 7.0)
    assert summarize(np.array([], dtype=np.int64)) == {"n": 0}


def write_cell(d, name, cell, status, ops, warmup_ns=10**9, problems=(), server_vm=False):
    """A cell's two files as `msdbench measure` writes them: samples per op (plus two warm-up
    rows of `warmup_ns` that must never count) and the metadata."""
    frames = []
    for op, values in ops.items():
        e2e = np.r_[[warmup_ns, warmup_ns], np.asarray(values) * US]
        frames.append(pd.DataFrame({"op": op, "seq": np.arange(len(e2e)),
                                    "warmup": np.arange(len(e2e)) < 2, "e2e_ns": e2e}))
    pd.concat(frames).to_parquet(d / f"{name}.parquet", index=False)
    cell = dict(cell)
    payload = cell.pop("payload", None)  # a setting of the cell, not part of its identity
    settings = {"pinning": "same-core", "payload": payload, "payload_mode": "binary"}
    hosts = None
    if server_vm:  # the paper's layout: every domain in one guest (deployments.N.server_host)
        settings["server_host"] = "vm0"
        hosts = {"local": {"kind": "local"}, "vm0": {"kind": "vm", "accel": "tcg"}}
    record = CellRecord(cell=cell, status=status, config_hash="x", environment={"git_revision": "r"},
                        settings=settings, hosts=hosts,
                        driver={"problems": list(problems), "wire_bytes": payload})
    (d / f"{name}.json").write_text(json.dumps(record.dump()))
    return d / f"{name}.json"


def micro(isolation, deployment, payload):
    return {"suite": "micro", "platform": "linux", "backend": "process", "isolation": isolation,
            "deployment": deployment, "payload": payload}


def test_table_rows_are_the_cells_measured_calls(tmp_path):
    """A row per cell (per op for BEPS); warm-up rows never count; the status travels."""
    metas = [write_cell(tmp_path, "a", micro("isolated", 2, 0), "ok", {"poll": [1, 2, 3, 4]}),
             write_cell(tmp_path, "b", micro("co-located", 1, 0), "ok", {"poll": [5, 5, 5]})]
    beps = {"suite": "beps", "platform": "linux", "backend": "process", "isolation": "tiered",
            "deployment": 2}
    beps_meta = write_cell(tmp_path, "c", beps, "failed-check",
                           {"create_user": [10, 30], "publish": [100, 200, 300]},
                           problems=["feed of u1 lacks 1 message"])
    t = pd.concat([table("micro", metas), table("beps", [beps_meta])]).set_index(["isolation", "op"])
    a = t.loc[("isolated", "poll")]
    assert (a["n"], a["mean_us"], a["min_us"], a["max_us"], a["p50_us"]) == (4, 2.5, 1.0, 4.0, 2.5)
    assert a["sd_us"] == pytest.approx(math.sqrt(5 / 3), abs=1e-3)
    b = t.loc[("co-located", "poll")]
    assert (b["n"], b["mean_us"], b["sd_us"]) == (3, 5.0, 0.0)
    pub = t.loc[("tiered", "publish")]
    assert (pub["n"], pub["mean_us"], pub["p50_us"], pub["status"]) == (3, 200.0, 200.0, "failed-check")
    assert "lacks" in pub["problems"]
    assert t.loc[("tiered", "create_user"), "mean_us"] == 20.0


def captured(monkeypatch, module):
    """Draw with `module.plot`, keeping the figure instead of writing it."""
    figs = []
    monkeypatch.setattr(module, "save", lambda fig, png, pdf: figs.append(fig))
    return figs


def test_failed_check_cells_are_kept_out_of_the_micro_figure(tmp_path, monkeypatch):
    from msdbench.figures import micro as fig_micro

    metas = [write_cell(tmp_path, f"i{p}", micro("isolated", 2, p), "ok", {"poll": [40, 40]})
             for p in (0, 64)]
    metas.append(write_cell(tmp_path, "c0", micro("co-located", 1, 0), "ok", {"poll": [20, 20]}))
    metas.append(write_cell(tmp_path, "c64", micro("co-located", 1, 64), "failed-check",
                            {"poll": [777, 777]}))
    figs = captured(monkeypatch, fig_micro)
    fig_micro.plot(table("micro", metas), "x.png", "x.pdf")
    (fig,) = figs
    plotted = np.concatenate([line.get_ydata() for ax in fig.axes for line in ax.get_lines()])
    assert 40.0 in plotted and 20.0 in plotted
    assert 777.0 not in plotted, "a cell that failed its check was drawn"
    assert "left out" in fig._suptitle.get_text() and "failed-check" in fig._suptitle.get_text()


def test_failed_check_cells_are_kept_out_of_the_beps_figure(tmp_path, monkeypatch):
    from msdbench.figures import beps as fig_beps

    def cell(iso):
        return {"suite": "beps", "platform": "linux", "backend": "process", "isolation": iso,
                "deployment": 2}

    metas = [write_cell(tmp_path, "t", cell("tiered"), "ok", {"create_user": [50, 50]}),
             write_cell(tmp_path, "i", cell("isolated"), "failed-check", {"create_user": [900, 900]})]
    figs = captured(monkeypatch, fig_beps)
    fig_beps.plot(table("beps", metas), "x.png", "x.pdf")
    (fig,) = figs
    heights = [p.get_height() for ax in fig.axes for p in ax.patches]
    assert 50.0 in heights and 900.0 not in heights
    assert "isolated d2: failed-check" in fig._suptitle.get_text()


def test_figures_never_pool_a_bare_and_a_vm_layout_of_one_deployment(tmp_path, monkeypatch):
    """Deployment 2 measured bare and with every domain in a guest: two series (micro) and two bar
    groups (BEPS), each labelled with its layout, never one mean of both."""
    from msdbench.figures import beps as fig_beps
    from msdbench.figures import micro as fig_micro

    metas = [write_cell(tmp_path, "bare", micro("isolated", 2, 0), "ok", {"poll": [40, 40]}),
             write_cell(tmp_path, "vm", micro("isolated", 2, 0), "ok", {"poll": [900, 900]},
                        server_vm=True)]
    figs = captured(monkeypatch, fig_micro)
    fig_micro.plot(table("micro", metas), "x.png", "x.pdf")
    top = figs[0].axes[0]
    labels = top.get_legend_handles_labels()[1]
    assert labels == ["isolated, d2, process", "isolated, d2 (VM (TCG, emulated)), process"], labels
    means = sorted({float(line.get_ydata()[0]) for line in top.get_lines() if len(line.get_ydata())})
    assert means == [40.0, 900.0], means

    cell = {"suite": "beps", "platform": "linux", "backend": "process", "isolation": "tiered",
            "deployment": 2}
    metas = [write_cell(tmp_path, "bb", cell, "ok", {"create_user": [50, 50]}),
             write_cell(tmp_path, "bv", cell, "ok", {"create_user": [700, 700]}, server_vm=True)]
    figs = captured(monkeypatch, fig_beps)
    fig_beps.plot(table("beps", metas), "x.png", "x.pdf")
    ax = figs[0].axes[0]
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() == p.get_height())
    assert heights == [50.0, 700.0], heights
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "create_user\nd2" in ticks and "create_user\nd2\n(VM (TCG, emulated))" in ticks, ticks
