"""Rule ratios: the suites' summary tables -> results/tables/ratios.csv (msdbench/figures/ratios.py).

    python scripts/ratios.py OUT.csv TABLE.parquet [TABLE.parquet ...]
"""

import sys

import pandas as pd

from msdbench.figures.ratios import write

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = write(sys.argv[1], sys.argv[2:])
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(out[["suite", "comparison", "platform", "backend", "isolation", "deployment",
                   "payload", "op", "ratio", "ratio_p50", "paper_ratio", "host"]].to_string(index=False))
