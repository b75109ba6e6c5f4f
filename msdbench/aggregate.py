"""Cells -> one summary table per suite (CSV for everyone, Parquet for pandas users). The suite
says which rows a cell gives, in which column order and row order."""

from __future__ import annotations

import pandas as pd

from msdbench import suites
from msdbench.results import atomic_write_csv, atomic_write_parquet


def table(suite: str, meta_paths) -> pd.DataFrame:
    s = suites.get(suite)
    rows_of = suites.resolve(s.rows)
    df = pd.DataFrame([row for m in meta_paths for row in rows_of(m)])
    if s.all_columns:
        if df.empty:
            return pd.DataFrame(columns=list(s.columns))
        for c in s.columns:
            if c not in df.columns:
                df[c] = None
    cols = [c for c in s.columns if c in df.columns] + [c for c in df.columns if c not in s.columns]
    keys = [c for c in s.sort if c in df.columns]
    return df[cols].sort_values(keys, kind="stable").reset_index(drop=True)


def aggregate(suite: str, meta_paths, csv_path, parquet_path) -> pd.DataFrame:
    df = table(suite, meta_paths)
    atomic_write_csv(csv_path, df)
    atomic_write_parquet(parquet_path, df)
    return df
