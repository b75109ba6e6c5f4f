"""Writing a cell's results so that nothing half-written is ever taken as done, and the summary
statistics every table shares."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99, "p99.9": 99.9}


def _atomic(path: str | Path, write) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: readers (and
    Snakemake) see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for other users (and containers) too
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_parquet(path: str | Path, df) -> None:
    _atomic(path, lambda f: df.to_parquet(f, index=False))


def atomic_write_csv(path: str | Path, df) -> None:
    _atomic(path, lambda f: f.write(df.to_csv(index=False).encode()))


def samples_frame(samples: dict):
    """Driver samples ({op: {column: list}}) -> one long table, a row per call, in call order."""
    import pandas as pd  # here, not at the top: containers load manifests without pandas

    frames = []
    for op, cols in samples.items():
        df = pd.DataFrame(cols)
        df.insert(0, "seq", np.arange(len(df), dtype=np.int64))
        df.insert(0, "op", op)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def summarize(ns: np.ndarray) -> dict:
    """Mean, spread and tail of one series of nanosecond samples, reported in microseconds."""
    us = np.asarray(ns, dtype=np.float64) / 1000.0
    if us.size == 0:
        return {"n": 0}
    out = {"n": int(us.size), "mean_us": us.mean(), "sd_us": us.std(ddof=1) if us.size > 1 else 0.0,
           "min_us": us.min()}
    for name, q in PERCENTILES.items():
        out[f"{name}_us"] = float(np.percentile(us, q))
    out["max_us"] = us.max()
    # 95% confidence interval of the mean (normal approximation; n is in the thousands).
    half = 1.96 * out["sd_us"] / np.sqrt(us.size)
    out["ci95_low_us"], out["ci95_high_us"] = out["mean_us"] - half, out["mean_us"] + half
    return {k: (round(float(v), 3) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}
