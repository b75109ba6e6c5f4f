"""The real snakemake on a tiny matrix: tables and figures, no-op rerun, incremental rerun, lint."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import domain_processes, snakemake

pytestmark = pytest.mark.slow

TINY = {
    "platforms": ["linux"],
    "backends": ["process"],
    "pinning": "same-core",
    "deadline_s": 120,
    "docker_host": None,
    "micro": {"isolations": ["co-located", "isolated"], "deployments": [1, 2], "payloads": [0, 64],
              "payload_mode": "binary", "requests": 50, "warmup": 10},
    "beps": {"isolations": ["tiered"], "deployments": [2], "workers": 2,
             "workload": {"users": 12, "active_users": 4, "follows_per_user": 2,
                          "publishes_per_user": 2, "name_len": 10, "message_len": 280}},
}


def write_config(workdir, config):
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


TINY["throughput"] = {
    "isolations": ["co-located"], "modes": ["closed", "open"], "pinning": "same-core",
    "clients": [1, 2], "pairs_per_client": 40, "warmup_pairs": 5,
    "open": {"clients": 1, "rates": [100], "duration_s": 0.5}, "point_deadline_s": 60}


def starts(wd) -> dict[str, int]:
    """Each measured cell (and sweep) by its output stem: when its measurement started."""
    raw = wd / "results/raw"
    return {str(p.relative_to(raw).with_suffix("")): json.loads(p.read_text())["start_ns"]
            for p in raw.rglob("*.json")}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def figure_is_drawn(path) -> None:
    """A PNG that decodes, of a sensible size, with more than a blank canvas on it."""
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert h > 200 and w > 300, (path, img.shape)
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20, f"{path} is blank"


def rerun(wd, config) -> tuple[dict, dict]:
    """Write `config`, run the workflow; the cells' start times before and after."""
    before = starts(wd)
    write_config(wd, config)
    snakemake(wd, "results/figures/")
    return before, starts(wd)


def test_tiny_matrix_end_to_end_and_incremental(workflow_copy):
    wd = workflow_copy
    write_config(wd, TINY)
    # the README's command: the figures, and beside them the ratio, claims and run tables
    r = snakemake(wd, "results/figures/")
    out = r.stdout + r.stderr
    cells = starts(wd)
    micro_cells = {k for k in cells if k.startswith("micro/")}
    assert micro_cells == {"micro/linux/process/co-located/d1/p0", "micro/linux/process/co-located/d1/p64",
                           "micro/linux/process/isolated/d2/p0", "micro/linux/process/isolated/d2/p64"}
    assert {k for k in cells if not k.startswith("micro/")} == {
        "beps/linux/process/tiered/d2", "throughput/closed/linux/process/co-located/d2",
        "throughput/open/linux/process/co-located/d2"}
    figures = {p.name for p in (wd / "results/figures").iterdir() if not p.name.startswith(".")}
    assert figures == {f"{n}.{e}" for n in ("micro", "beps", "throughput", "throughput-latency",
                                            "claims") for e in ("png", "pdf")} | {
        "ratios.csv", "claims.csv", "run.csv"}
    for name in figures:
        if name.endswith(".csv"):
            assert len(pd.read_csv(wd / "results/figures" / name)) > 0
        elif name.endswith(".png"):
            figure_is_drawn(wd / "results/figures" / name)
        else:
            assert (wd / "results/figures" / name).read_bytes().startswith(b"%PDF")

    # The table's statistics are the raw samples' own (warm-up excluded), cell by cell.
    micro = pd.read_csv(wd / "results/tables/micro.csv")
    assert len(micro) == 4 and set(micro["status"]) == {"ok"}
    for row in micro.itertuples():
        raw = pd.read_parquet(wd / f"results/raw/micro/linux/process/{row.isolation}/"
                                   f"d{row.deployment}/p{row.payload}.parquet")
        raw = raw[raw["op"] == "poll"]  # beside the cell's TCP echo reference
        us = raw.loc[~raw["warmup"], "e2e_ns"].to_numpy() / 1000
        assert len(raw) == 60 and row.n == len(us) == 50
        assert row.mean_us == pytest.approx(us.mean(), abs=1e-3)
        assert row.p50_us == pytest.approx(np.median(us), abs=1e-3)
        assert (row.min_us, row.max_us) == (pytest.approx(us.min(), abs=1e-3),
                                            pytest.approx(us.max(), abs=1e-3))
        assert row.min_us <= row.p50_us <= row.p90_us <= row.p99_us <= row.max_us
        assert row.ci95_low_us < row.mean_us < row.ci95_high_us
    # Measurements never overlapped, though snakemake had 2 cores (the profile's testbed=1).
    assert "Using workflow specific profile profiles/default" in out
    spans = sorted((m["start_ns"], m["end_ns"]) for m in
                   (json.loads(p.read_text()) for p in (wd / "results/raw").rglob("*.json")))
    assert len(spans) == 7
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    beps = pd.read_csv(wd / "results/tables/beps.csv")
    assert set(beps["op"]) == {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"}
    assert set(beps["status"]) == {"ok"}
    counts = dict(zip(beps["op"], beps["n"]))
    assert counts["create_user"] == counts["delete_user"] == 12 and counts["publish"] == 4 * 2

    # The throughput rules: a row per point, both modes, nothing lost.
    tp = pd.read_csv(wd / "results/tables/throughput.csv")
    assert sorted(zip(tp["mode"], tp["clients"])) == [("closed", 1), ("closed", 2), ("open", 1)]
    assert set(tp["status"]) == {"ok"} and (tp["lost_users"] == 0).all() and (tp["rps"] > 0).all()
    closed = tp[tp["mode"] == "closed"].set_index("clients")
    assert closed.loc[2, "completed"] == 2 * closed.loc[1, "completed"] == 2 * 2 * 40
    assert tp.loc[tp["mode"] == "open", "offered_rps"].tolist() == [100]

    # The ratios table: isolated d2 over co-located d1 per payload, from the micro table.
    ratios = pd.read_csv(wd / "results/tables/ratios.csv")
    iso = ratios[(ratios["suite"] == "micro") & (ratios["comparison"] == "isolation")]
    assert sorted(iso["payload"]) == [0, 64]
    by = micro.set_index(["isolation", "payload"])["mean_us"]
    for row in iso.itertuples():
        # (the table rounds ratios to 0.001)
        assert row.ratio == pytest.approx(by["isolated", row.payload] / by["co-located", row.payload],
                                          abs=1e-3)
        assert row.paper_ratio == 1.3

    # A complete run leaves nothing to do.
    r = snakemake(wd, "-n", "results/figures/")
    assert "Nothing to be done" in r.stdout + r.stderr

    # One payload more: only its cells are measured (one per micro isolation); every other cell
    # keeps its own start time, and the BEPS figure is not redrawn.
    beps_png = digest(wd / "results/plots/beps.png")
    micro_png = digest(wd / "results/plots/micro.png")
    TINY2 = yaml.safe_load(yaml.safe_dump(TINY))
    TINY2["micro"]["payloads"].append(128)
    before, after = rerun(wd, TINY2)
    new = set(after) - set(before)
    assert new == {"micro/linux/process/co-located/d1/p128", "micro/linux/process/isolated/d2/p128"}
    assert {k: after[k] for k in before} == before, "a cell the change did not touch was remeasured"
    assert len(pd.read_csv(wd / "results/tables/micro.csv")) == 6
    assert digest(wd / "results/plots/beps.png") == beps_png
    assert digest(wd / "results/plots/micro.png") != micro_png

    # A setting that shapes only BEPS cells reruns only them.
    TINY2["beps"]["workload"]["publishes_per_user"] = 3
    before, after = rerun(wd, TINY2)
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"beps/linux/process/tiered/d2"}
    beps = pd.read_csv(wd / "results/tables/beps.csv")
    assert dict(zip(beps["op"], beps["n"]))["publish"] == 4 * 3

    # A change to the measured code (the environment stamp) reruns every cell and sweep.
    poll = wd / "msdbench/services/poll.py"
    poll.write_text(poll.read_text() + "\n# a change to measured code\n")
    before, after = rerun(wd, TINY2)
    assert set(after) == set(before)
    assert all(after[k] > before[k] for k in before), \
        sorted(k for k in before if after[k] == before[k])
    stamp = json.loads((wd / "results/images/process.json").read_text())
    assert stamp["code_sha256"] != "" and stamp["backend"] == "process"


def test_sigint_of_snakemake_stops_the_cell_and_leaves_it_undone(workflow_copy, no_leftovers):
    """Ctrl-C of snakemake while a cell measures (SIGINT to the terminal's foreground process
    group: snakemake and the job it runs): snakemake ends, the cell's domains are stopped by its
    teardown and its outputs are absent, so the next run measures it again."""
    wd = workflow_copy
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config.pop("throughput")
    config["beps"]["isolations"] = []
    config["micro"].update(isolations=["isolated"], deployments=[2], payloads=[0],
                           requests=10_000_000)
    write_config(wd, config)
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "results/figures/"],
                            cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=str(wd)), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(domain_processes()) < 2:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the cell never came up"
            time.sleep(0.1)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out
    cell = wd / "results/raw/micro/linux/process/isolated/d2/p0"
    assert not cell.with_suffix(".json").exists() and not cell.with_suffix(".parquet").exists()
    assert not list(cell.parent.glob(".p0.*")), "a temporary file was left"
    log = (wd / "results/logs/run/micro/linux/process/isolated/d2/p0.log").read_text()
    assert "interrupted" in log and "torn down" in log, log
    r = snakemake(wd, "-n", "results/figures/")
    assert "cell=micro/linux/process/isolated/d2/p0" in r.stdout, \
        "the interrupted cell would not be measured again"


def test_bad_config_stops_snakemake_with_the_field(workflow_copy):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["micro"]["isolations"] = ["sharded"]
    write_config(workflow_copy, bad)
    r = snakemake(workflow_copy, "-n", check=False)
    assert r.returncode != 0
    assert "micro.isolations[0]" in r.stderr + r.stdout
    assert "['co-located', 'isolated']" in r.stderr + r.stdout


def test_lint_is_clean(workflow_copy):
    write_config(workflow_copy, TINY)
    r = snakemake(workflow_copy, "--lint", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
