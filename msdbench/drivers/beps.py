"""The BEPS client: the workload of beps_workload, timed per request, through the load balancer."""

from __future__ import annotations

import numpy as np

from msdbench.drivers import columns
from msdbench.drivers.beps_workload import BepsWorkload, run_workload
from msdbench.transports.deadline import Deadline


def _rows(series: dict, warmup: bool) -> dict:
    n = len(series["e2e_ns"])
    return {"warmup": np.full(n, warmup), "e2e_ns": np.asarray(series["e2e_ns"], dtype=np.int64),
            "server_ns": np.asarray(series["server_ns"], dtype=np.int64)}


def run(spec: dict, connect) -> dict:
    workload = BepsWorkload(**spec.get("workload", {}))
    stub = connect()
    with Deadline(spec.get("deadline_s"), stub) as deadline:
        try:
            result = run_workload(stub, workload)
        except Exception as e:
            if deadline.fired:
                raise TimeoutError(f"the cell's deadline of {deadline.seconds} s expired") from e
            raise
    stub.close()
    samples = {}
    for op, series in result.pop("samples").items():
        parts = [_rows(series, False)]
        if op in result.get("warmup", {}):
            parts.insert(0, _rows(result["warmup"][op], True))
        samples[op] = columns(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    result.pop("warmup", None)
    result.pop("workload", None)
    result["samples"] = samples
    return result
