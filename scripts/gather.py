"""Rule figures: gather the per-suite plots into one directory (hard links; a copy elsewhere)."""

import os
import shutil
import sys
from pathlib import Path

if __name__ == "__main__":
    out, *files = sys.argv[1:]
    tmp = Path(out + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        try:
            os.link(f, tmp / Path(f).name)
        except OSError:
            shutil.copy2(f, tmp / Path(f).name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
