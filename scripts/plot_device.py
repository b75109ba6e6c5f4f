"""Rule plot_device: results/tables/device.parquet -> paper figs 7 and 10 (PNG and PDF).

    python scripts/plot_device.py TABLE.parquet OUT_DIR
"""

import sys
from pathlib import Path

import pandas as pd

from msdbench.figures.device import plot_beps, plot_micro

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    table, out = pd.read_parquet(sys.argv[1]), Path(sys.argv[2])
    plot_micro(table, str(out / "fig7-device-micro.png"), str(out / "fig7-device-micro.pdf"))
    plot_beps(table, str(out / "fig10-device-beps.png"), str(out / "fig10-device-beps.pdf"))
