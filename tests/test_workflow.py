"""The real snakemake on a tiny matrix: tables and figures, no-op rerun, incremental rerun, lint."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import snakemake

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
    "throughput": {"isolations": ["co-located"], "modes": ["closed"], "platforms": ["linux"],
                   "clients": [1], "pairs_per_client": 20, "warmup_pairs": 5},
}


def write_config(workdir, config):
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def measured(stdout_and_err: str, suite: str) -> int:
    """How many cells of `suite` the run measured (jobs of the one rule `run`)."""
    cells = re.findall(r"^(?:local)?rule run:\n(?:    .*\n)*?    wildcards: cell=(\S+)$", stdout_and_err, re.M)
    return sum(c.split("/")[0] == suite for c in cells)


def test_tiny_matrix_end_to_end_and_incremental(workflow_copy):
    wd = workflow_copy
    write_config(wd, TINY)
    r = snakemake(wd, "results/figures/")
    out = r.stdout + r.stderr
    assert measured(out, "micro") == 4 and measured(out, "beps") == 1
    assert measured(out, "throughput") == 1
    for name in ("micro.png", "micro.pdf", "beps.png", "beps.pdf", "throughput.png",
                 "throughput-latency.pdf"):
        assert (wd / "results/figures" / name).stat().st_size > 1000
    micro = pd.read_csv(wd / "results/tables/micro.csv")
    assert len(micro) == 4 and set(micro["status"]) == {"ok"} and (micro["n"] == 50).all()
    for col in ("mean_us", "sd_us", "min_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us"):
        assert micro[col].notna().all()
    # Measurements never overlapped, though snakemake had 2 cores (the profile's testbed=1).
    assert "Using workflow specific profile profiles/default" in out
    spans = sorted((m["start_ns"], m["end_ns"]) for m in
                   (json.loads(p.read_text()) for p in (wd / "results/raw").rglob("*.json")))
    assert len(spans) == 6
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    beps = pd.read_csv(wd / "results/tables/beps.csv")
    assert set(beps["op"]) == {"create_user", "subscribe", "publish", "unsubscribe", "delete_user"}
    assert set(beps["status"]) == {"ok"}
    sweep = pd.read_csv(wd / "results/tables/throughput.csv")
    assert list(sweep[["mode", "clients", "status"]].itertuples(index=False, name=None)) == [
        ("closed", 1, "ok")]

    # A complete run leaves nothing to do.
    r = snakemake(wd, "-n", "results/figures/")
    assert "Nothing to be done" in r.stdout + r.stderr

    # One payload more: only its cells are measured (one per micro isolation).
    TINY2 = yaml.safe_load(yaml.safe_dump(TINY))
    TINY2["micro"]["payloads"].append(128)
    write_config(wd, TINY2)
    r = snakemake(wd, "results/figures/")
    out = r.stdout + r.stderr
    assert measured(out, "micro") == 2, out[-3000:]
    assert measured(out, "beps") == 0 and measured(out, "throughput") == 0
    assert len(pd.read_csv(wd / "results/tables/micro.csv")) == 6

    # A setting that shapes only BEPS cells reruns only them.
    TINY2["beps"]["workload"]["publishes_per_user"] = 3
    write_config(wd, TINY2)
    r = snakemake(wd, "results/figures/")
    out = r.stdout + r.stderr
    assert measured(out, "beps") == 1 and measured(out, "micro") == 0, out[-3000:]


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
