"""Client drivers: they run inside the client's domain and time calls to the entry service.

`run_driver(spec, connect)` dispatches on spec["driver"]; `connect()` returns a fresh stub to the
entry service (one per client). A driver returns a JSON-able dict whose "samples" maps an
operation to columns of equal length (lists of ints; "warmup" marks warm-up rows).
"""

from __future__ import annotations

import numpy as np

DRIVERS = ("micro", "beps", "throughput")


def run_driver(spec: dict, connect) -> dict:
    name = spec.get("driver")
    if name == "micro":
        from msdbench.drivers.micro import run
    elif name == "beps":
        from msdbench.drivers.beps import run
    elif name == "throughput":
        from msdbench.drivers.throughput import run
    else:
        raise ValueError(f"driver: {name!r} is not one of {DRIVERS}")
    return run(spec, connect)


def columns(**arrays) -> dict:
    """numpy columns -> JSON-able lists (the control plane speaks JSON)."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in arrays.items()}
