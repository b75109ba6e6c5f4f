"""Cells -> one summary table per suite (CSV for everyone, Parquet for pandas users)."""

from __future__ import annotations

import pandas as pd

from msdbench.results import atomic_write_csv, atomic_write_parquet
from msdbench.summary import cell_rows

ORDER = ["suite", "platform", "backend", "isolation", "deployment", "client_host", "client_host_kind",
         "payload", "payload_mode",
         "wire_bytes", "op", "status", "n", "mean_us", "sd_us", "ci95_low_us", "ci95_high_us",
         "min_us", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "server_mean_us",
         "call_mean_us", "return_mean_us", "pinning", "problems", "reason", "config_hash",
         "git_revision"]


def table(meta_paths) -> pd.DataFrame:
    df = pd.DataFrame([row for m in meta_paths for row in cell_rows(m)])
    cols = [c for c in ORDER if c in df.columns] + [c for c in df.columns if c not in ORDER]
    keys = [c for c in ("platform", "backend", "isolation", "deployment", "payload", "op")
            if c in df.columns]
    return df[cols].sort_values(keys, kind="stable").reset_index(drop=True)


def aggregate(suite: str, meta_paths, csv_path, parquet_path) -> pd.DataFrame:
    df = table(meta_paths)
    atomic_write_csv(csv_path, df)
    atomic_write_parquet(parquet_path, df)
    return df
