"""Rule figures: results/tables/beps.parquet -> results/figures/beps.png and .pdf."""

import sys

import pandas as pd

from msdbench.figures.beps import plot

if __name__ == "__main__":
    table, png, pdf = sys.argv[1:4]
    plot(pd.read_parquet(table), png, pdf)
