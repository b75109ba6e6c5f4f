"""Rule figures: results/tables/micro.parquet -> results/figures/micro.png and .pdf."""

import sys

import pandas as pd

from msdbench.figures.micro import plot

if __name__ == "__main__":
    table, png, pdf = sys.argv[1:4]
    plot(pd.read_parquet(table), png, pdf)
