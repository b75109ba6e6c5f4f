"""Repetitions for real: a micro and a BEPS cell measured twice through the workflow (samples per
repetition, CIs across them, the echo reference, the claims table, the figures directory), the
report built by snakemake itself, and a repetition that outside load disturbs measured again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from msdbench.cell import ECHO_CALLS, run_cell
from msdbench.claims import CLAIMS, FAILS, HOLDS, NOT_MEASURED
from msdbench.planning import Cell, plan
from msdbench.summary import cell_rows

from conftest import snakemake

TWICE = {
    "platforms": ["linux"],
    "backends": ["process"],
    "pinning": "same-core",
    "deadline_s": 120,
    "docker_host": None,
    "repeats": 2,
    "micro": {"isolations": ["isolated"], "deployments": [2], "payloads": [0],
              "payload_mode": "binary", "requests": 300, "warmup": 50},
    "beps": {"isolations": ["co-located"], "deployments": [2], "workers": 2,
             "workload": {"users": 12, "active_users": 4, "follows_per_user": 2,
                          "publishes_per_user": 2, "name_len": 10, "message_len": 280}},
}


@pytest.mark.slow
def test_two_repetitions_through_the_workflow_and_the_report(workflow_copy):
    wd = workflow_copy
    (wd / "config/config.yaml").write_text(yaml.safe_dump(TWICE, sort_keys=False))
    snakemake(wd, "results/figures/")
    # every sample keeps its repetition; each repetition measured its own echo reference
    for stem, ops in (("micro/linux/process/isolated/d2/p0", {"poll"}),
                      ("beps/linux/process/co-located/d2",
                       {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"})):
        raw = pd.read_parquet(wd / f"results/raw/{stem}.parquet")
        assert set(raw["rep"]) == {0, 1}
        assert set(raw["op"]) == ops | {"echo"}
        assert (raw[raw["op"] == "echo"].groupby("rep").size() == 2 * ECHO_CALLS).all()
        rec = json.loads((wd / f"results/raw/{stem}.json").read_text())
        kept = [r for r in rec["repetitions"] if r["kept"]]
        assert [r["rep"] for r in kept] == [0, 1]
        assert len({r["placement"]["client"]["pid"] for r in kept}) == 2  # fresh bring-ups
        assert all(r["host"]["busy"] and r["host"]["unaccounted_util"] >= 0 for r in kept)
    for suite in ("micro", "beps"):
        t = pd.read_csv(wd / f"results/tables/{suite}.csv")
        assert (t["repeats"] == 2).all() and set(t["ci_method"]) == {"t"}
        assert (t["ci95_low_us"] <= t["mean_us"]).all() and (t["mean_us"] <= t["ci95_high_us"]).all()
        assert (t["p50_ci95_low_us"] <= t["p50_ci95_high_us"]).all()
        assert (t["echo_p50_us"] > 0).all() and (t["p50_x_echo"] > 0).all()
        # the normalised median: per repetition, its median over its own echo's, averaged
        raw = pd.read_parquet(next((wd / "results/raw" / suite).rglob("*.parquet")))
        raw = raw[~raw["warmup"]]
        med = raw.groupby(["op", "rep"])["e2e_ns"].median() / 1000
        for r in t.itertuples():
            ratios = [med[(r.op, k)] / med[("echo", k)] for k in (0, 1)]
            assert r.p50_x_echo == pytest.approx(sum(ratios) / 2, rel=1e-3)
        assert t[["p50_rep_cv", "p50_x_echo_rep_cv", "redone"]].notna().all().all()
    claims = pd.read_csv(wd / "results/tables/claims.csv")
    assert list(claims["claim"]) == [c.name for c in CLAIMS]
    assert set(claims["verdict"]) <= {HOLDS, FAILS, NOT_MEASURED}
    assert claims.set_index("claim").loc["d3-vs-d2-linux", "verdict"] == NOT_MEASURED
    names = {p.name for p in (wd / "results/figures").iterdir()}
    assert {"micro.png", "beps.png", "ratios.csv", "claims.csv", "claims.png", "run.csv"} <= names
    run = pd.read_csv(wd / "results/tables/run.csv").set_index("what")["value"]
    assert run["repetitions kept"] == "4" and run["pinning"] == "same-core"

    # the report, by snakemake itself, right after the run
    snakemake(wd, "--report", "report.html")
    html = (wd / "report.html").read_text()
    assert len(html) > 100_000
    for text in ("The paper's quantitative claims against this run",  # claims caption
                 "Poll round trip against request payload",           # micro caption
                 "repetition(s) of each micro and BEPS cell"):        # the config, per figure
        assert text in html, text


@pytest.fixture
def spinner():
    """Outside load on CPU 0: a busy loop, pinned there, for as long as the test runs."""
    code = "import os\nos.sched_setaffinity(0, {0})\nprint('spinning', flush=True)\nwhile True:\n    pass\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    # a repetition lasts ~50 ms: the loop must already spin when the cell starts, not still be
    # starting its interpreter
    assert p.stdout.readline().strip() == "spinning"
    yield p
    p.kill()
    p.wait()


def test_a_repetition_that_outside_load_disturbs_is_measured_again(tmp_path, spinner, no_leftovers):
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0),
             {"requests": 2000, "warmup": 100, "pinning": "same-core", "repeats": 1,
              "quiet": {"max_unaccounted": 0.2, "retries": 2}})
    meta = run_cell(m, tmp_path / "c.parquet", tmp_path / "c.json")
    reps = meta["repetitions"]
    # the busy loop shares CPU 0 with the cell: every attempt is disturbed, two are redone (the
    # budget), the third is kept and marked; the table says so
    assert [(r["attempt"], r["kept"], r["disturbed"]) for r in reps] == [
        (0, False, True), (1, False, True), (2, True, True)]
    assert all(r["host"]["unaccounted_util"] > 0.2 for r in reps)
    (row,) = cell_rows(tmp_path / "c.json")
    assert (row["repeats"], row["redone"], row["disturbed"]) == (1, 2, 1)
    assert row["other_cpu"] > 0.2 and row["ci_method"] == "bootstrap-samples"
    raw = pd.read_parquet(tmp_path / "c.parquet")
    assert set(raw["rep"]) == {0} and (raw["op"] == "poll").sum() == 2100  # only the kept one
    assert os.sched_getaffinity(spinner.pid) == {0}
