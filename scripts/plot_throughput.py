"""Rule plot_throughput: results/tables/throughput.parquet -> fig 11 (requests/s against clients)
and latency against offered load, each as .png and .pdf."""

import sys

import pandas as pd

from msdbench.figures.throughput import plot_latency, plot_rps

if __name__ == "__main__":
    table, png, pdf, latency_png, latency_pdf = sys.argv[1:6]
    df = pd.read_parquet(table)
    plot_rps(df, png, pdf)
    plot_latency(df, latency_png, latency_pdf)
