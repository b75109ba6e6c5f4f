"""One module per paper figure; each reads a summary table only, never raw samples."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on testbeds

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from msdbench.results import atomic_write_bytes  # noqa: E402


def good_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows fit to plot, and a note for each cell left out (a failed check is never plotted)."""
    bad = df[df["status"] != "ok"]
    notes = sorted({f"{r.platform}/{r.backend} {r.isolation} d{r.deployment}: {r.status}"
                    for r in bad.itertuples()})
    return df[df["status"] == "ok"], notes


def save(fig, png: str, pdf: str) -> None:
    """Both formats, each written whole or not at all."""
    import io

    for path, fmt in ((png, "png"), (pdf, "pdf")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight")
        atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
