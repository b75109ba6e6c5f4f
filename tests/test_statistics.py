"""Statistics on known inputs: CI coverage on synthetic samples, `compare` on known shifts, and
the claims table on hand-made summary tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from msdbench import claims, compare, statistics
from msdbench.statistics import MIN_BOOTSTRAP_REPS, across_repetitions, interval

TRUE_MEAN = 50.0


def synthetic_cell(rng, k: int, n: int = 400, between_sd: float = 3.0, shift: float = 0.0):
    """k repetitions of a cell whose true mean latency is TRUE_MEAN + shift (us): each
    repetition runs at its own speed (a normal offset: the machine's speed modes) and its calls
    are skewed (lognormal, mean 1 us above the floor) as real round trips are."""
    reps = {}
    for r in range(k):
        offset = rng.normal(0.0, between_sd)
        reps[r] = TRUE_MEAN + shift + offset + rng.lognormal(0.0, 0.6, n) - math.exp(0.18)
    return reps


@pytest.mark.parametrize("k,method,low,high", [
    (3, "t", 0.90, 0.99),                      # few repetitions: Student's t
    (MIN_BOOTSTRAP_REPS * 2, "bootstrap-bca", 0.88, 0.99),  # enough: scipy's BCa bootstrap
])
def test_ci_of_the_mean_covers_the_true_value_at_about_the_nominal_rate(k, method, low, high):
    rng = np.random.default_rng(11)
    trials, hits = 300, 0
    for _ in range(trials):
        reps = synthetic_cell(rng, k)
        lo, hi, used = interval([v.mean() for v in reps.values()])
        assert used == method
        hits += lo <= TRUE_MEAN <= hi
    assert low <= hits / trials <= high, hits / trials


def test_one_repetition_gives_a_within_run_interval_that_says_so():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(200):  # no run-to-run variation here: the within-run interval is right
        s = TRUE_MEAN + rng.lognormal(0.0, 0.6, 1000) - math.exp(0.18)
        lo, hi, used = interval([s.mean()], s)
        assert used == "bootstrap-samples" and lo < s.mean() < hi
        hits += lo <= TRUE_MEAN <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_the_echo_normalised_view_removes_a_speed_mode_the_absolute_one_keeps():
    """Two repetitions, the second on a machine 1.6x slower (a speed mode): the absolute medians
    vary by ~0.33 (coefficient of variation), the medians as multiples of each repetition's echo
    do not vary at all, and the CIs say the same."""
    base = np.linspace(40.0, 60.0, 501)
    out = across_repetitions({0: base, 1: base * 1.6}, {0: 20.0, 1: 32.0})
    assert out["repeats"] == 2 and out["ci_method"] == "t"
    assert out["p50_rep_cv"] == pytest.approx(0.6 / 1.3 / math.sqrt(2), rel=1e-3)
    assert out["p50_x_echo"] == pytest.approx(2.5) and out["p50_x_echo_rep_cv"] == 0.0
    assert out["p50_x_echo_ci95_low"] == out["p50_x_echo_ci95_high"] == pytest.approx(2.5)
    assert out["p50_ci95_low_us"] < 50.0 < 80.0 < out["p50_ci95_high_us"]
    assert out["echo_p50_us"] == pytest.approx(26.0)


def _table(reps_by_cell: dict) -> pd.DataFrame:
    """A summary table (the columns `compare` and `claims` read) from synthetic repetitions."""
    rows = []
    for (platform, isolation, op), reps in reps_by_cell.items():
        pooled = np.concatenate(list(reps.values()))
        rows.append({"suite": "beps", "platform": platform, "backend": "process",
                     "isolation": isolation, "deployment": 2, "payload": pd.NA, "op": op,
                     "status": "ok", "mean_us": pooled.mean(), "p50_us": np.median(pooled),
                     **across_repetitions(reps, {})})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("stat", ["p50", "mean"])
def test_compare_flags_a_shift_larger_than_the_ci_and_not_a_smaller_one(tmp_path, stat):
    rng = np.random.default_rng(3)
    k, sd = 5, 2.0
    a = _table({("linux", "tiered", "create_user"): synthetic_cell(rng, k, between_sd=sd),
                ("linux", "tiered", "publish"): synthetic_cell(rng, k, between_sd=sd)})
    width = float((a["p50_ci95_high_us"] - a["p50_ci95_low_us"]).max())
    b = _table({("linux", "tiered", "create_user"):  # far beyond both CIs
                synthetic_cell(rng, k, between_sd=sd, shift=3 * width),
                ("linux", "tiered", "publish"):      # well inside them
                synthetic_cell(rng, k, between_sd=sd, shift=0.05 * width)})
    out = compare.compare(a, b, stat)
    assert out.set_index("op")["differs"].to_dict() == {"create_user": True, "publish": False}
    # and the command: exit 1 with the differing cell listed, 0 against itself
    for name, df in (("a", a), ("b", b)):
        (tmp_path / name / "tables").mkdir(parents=True)
        df.to_csv(tmp_path / name / "tables" / "beps.csv", index=False)
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--stat", stat]) == 1
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "a"), "--stat", stat]) == 0
    assert compare.main([str(tmp_path / "a"), "no-such-revision"]) == 2


def test_claims_table_has_one_row_per_claim_with_a_verdict():
    beps = _table({(p, iso, op): {r: np.full(50, v * (1.0 + 0.01 * r)) for r in range(3)}
                   for p, scale in (("linux", 10.0), ("specialized", 1.0))
                   for iso, f in (("co-located", 1.0), ("tiered", 1.2), ("isolated", 1.3))
                   for op, v in (("create_user", 100.0 * scale * f),
                                 ("publish", 1300.0 * scale * f))})
    out = claims.claims_table({"beps": beps})
    assert list(out["claim"]) == [c.name for c in claims.CLAIMS]
    assert out["claim"].is_unique
    assert set(out["verdict"]) <= {claims.HOLDS, claims.FAILS, claims.NOT_MEASURED}
    v = out.set_index("claim")
    # publish/create_user is 13x in every linux cell: inside the paper's 11-15x
    assert v.loc["publish-vs-create-one-host", "verdict"] == claims.HOLDS
    assert v.loc["publish-vs-create-one-host", "ours_value"] == pytest.approx(13.0, rel=0.02)
    # tiered is 1.2x co-located on linux (holds) and on specialized (the paper: 1.3-1.7x)
    assert v.loc["tiered-vs-co-located-linux", "verdict"] == claims.HOLDS
    assert v.loc["tiered-vs-co-located-specialized", "verdict"] == claims.FAILS
    assert "below" in v.loc["tiered-vs-co-located-specialized", "why"]
    assert v.loc["linux-vs-specialized-beps", "verdict"] == claims.HOLDS  # 10x: ">= 10x"
    # what this run cannot test says why
    assert v.loc["d3-vs-d2-linux", "verdict"] == claims.NOT_MEASURED
    assert "deployment 3" in v.loc["d3-vs-d2-linux", "why"]
    assert "device" in v.loc["device-d2-vs-d1", "why"]
    assert "no micro table" in v.loc["micro-isolation-linux", "why"]
    assert "throughput" in v.loc["throughput-peak-linux", "why"]
