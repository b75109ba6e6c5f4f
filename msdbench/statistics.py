"""Confidence intervals across repetitions, and the reference-normalised view of a cell.

A cell runs `repeats` times, each a fresh bring-up. Run-to-run variation (CPU speed modes,
placement, other tenants) is usually far larger than the spread inside one run, so an interval
computed from the pooled samples alone would be much too narrow. The intervals here are across
repetitions: one value per repetition (its mean, its median, or either divided by that
repetition's TCP echo median), then

* k >= MIN_BOOTSTRAP_REPS repetitions: a BCa bootstrap of those k values (scipy.stats.bootstrap);
* 2 <= k < MIN_BOOTSTRAP_REPS: Student's t interval of those k values (scipy.stats.t). With so
  few values a bootstrap cannot see the spread it should estimate (at k = 3 its 95% percentile
  interval covers the true value about 70% of the time, BCa at k = 10 about 89%); t is honest
  about it, and wide;
* k = 1: a percentile bootstrap over that one repetition's samples: within-run noise only,
  labelled as such (`ci_method` = "bootstrap-samples").
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
MIN_BOOTSTRAP_REPS = 10
N_RESAMPLES = 2000
_SEED = 20221  # intervals are reproducible: the same samples give the same table


def interval(values, samples=None, statistic=np.mean) -> tuple[float, float, str]:
    """(low, high, method) of a 95% interval for the cell's `statistic`, from one value per
    repetition (`values`); `samples` (the raw values of a lone repetition) are used when there
    is only one."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    k = v.size
    if k >= 2 and np.ptp(v) == 0:
        return float(v[0]), float(v[0]), "bootstrap-bca" if k >= MIN_BOOTSTRAP_REPS else "t"
    if k >= MIN_BOOTSTRAP_REPS:
        r = scipy.stats.bootstrap((v,), np.mean, method="BCa", n_resamples=N_RESAMPLES,
                                  confidence_level=CONFIDENCE, rng=np.random.default_rng(_SEED))
        return float(r.confidence_interval.low), float(r.confidence_interval.high), "bootstrap-bca"
    if k >= 2:
        low, high = scipy.stats.t.interval(CONFIDENCE, k - 1, loc=v.mean(),
                                           scale=scipy.stats.sem(v))
        return max(float(low), 0.0), float(high), "t"  # latencies and their ratios are > 0
    if samples is not None:
        s = np.asarray(samples, dtype=np.float64)
        s = s[np.isfinite(s)]
        if s.size >= 2 and np.ptp(s) > 0:
            r = scipy.stats.bootstrap((s,), statistic, method="percentile", vectorized=True,
                                      n_resamples=N_RESAMPLES, batch=200, axis=-1,
                                      confidence_level=CONFIDENCE,
                                      rng=np.random.default_rng(_SEED))
            return (float(r.confidence_interval.low), float(r.confidence_interval.high),
                    "bootstrap-samples")
    if k == 1:
        return float(v[0]), float(v[0]), "none"
    return math.nan, math.nan, "none"


def _cv(values) -> float:
    """Coefficient of variation (sd / mean) across repetitions; NaN with fewer than two."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1) / v.mean()) if v.size >= 2 and v.mean() else math.nan


def across_repetitions(us_by_rep: dict[int, np.ndarray], echo_p50_by_rep: dict[int, float]) -> dict:
    """The across-repetition columns of one operation of one cell.

    `us_by_rep`: repetition -> that repetition's measured latencies (us, warm-up excluded);
    `echo_p50_by_rep`: repetition -> the median of that repetition's TCP echo (us), where one
    was measured. Returns the CIs of the mean and the median in us, the same as multiples of the
    echo, and how much each varied from repetition to repetition (`*_rep_cv`)."""
    reps = sorted(r for r, v in us_by_rep.items() if len(v))
    means = np.array([us_by_rep[r].mean() for r in reps])
    medians = np.array([np.median(us_by_rep[r]) for r in reps])
    lone = us_by_rep[reps[0]] if len(reps) == 1 else None
    out = {"repeats": len(reps)}
    out["ci95_low_us"], out["ci95_high_us"], out["ci_method"] = interval(means, lone, np.mean)
    out["p50_ci95_low_us"], out["p50_ci95_high_us"], _ = interval(medians, lone, np.median)
    out["p50_rep_cv"] = _cv(medians)
    echo = np.array([echo_p50_by_rep.get(r, math.nan) for r in reps], dtype=np.float64)
    if np.isfinite(echo).any():
        out["echo_p50_us"] = float(np.nanmean(echo))
        for name, per_rep, stat in (("mean", means, np.mean), ("p50", medians, np.median)):
            ratio = per_rep / echo
            ok = np.isfinite(ratio)
            out[f"{name}_x_echo"] = float(ratio[ok].mean()) if ok.any() else math.nan
            lone_ratio = lone / echo[0] if lone is not None and ok.all() else None
            low, high, _ = interval(ratio, lone_ratio, stat)
            out[f"{name}_x_echo_ci95_low"], out[f"{name}_x_echo_ci95_high"] = low, high
        out["p50_x_echo_rep_cv"] = _cv(medians / echo)
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in out.items()}


def overlap(a_low, a_high, b_low, b_high) -> bool:
    """Whether two intervals share a point (NaN bounds: unknown, taken as overlapping)."""
    if any(not np.isfinite(x) for x in (a_low, a_high, b_low, b_high)):
        return True
    return a_low <= b_high and b_low <= a_high


def ratio_interval(num: tuple[float, float, float], den: tuple[float, float, float]):
    """(value, low, high) of num/den from each one's (value, low, high): the quotient of the
    values and the widest quotient of the bounds (conservative: assumes nothing about how the
    two were correlated; both must be positive)."""
    (n, nl, nh), (d, dl, dh) = num, den
    if not (d > 0 and dl > 0):
        return math.nan, math.nan, math.nan
    return n / d, nl / dh, nh / dl
