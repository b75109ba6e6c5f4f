"""The microbenchmark's client: closed loop, one call in flight, every call timed on its own."""

from __future__ import annotations

import time

import numpy as np

from msdbench.drivers import columns
from msdbench.transports.deadline import Deadline

PAYLOAD_MODES = ("binary", "list")


def make_payload(size: int, mode: str):
    if mode == "binary":
        return b"\xa5" * size            # exactly `size` bytes on the wire
    if mode == "list":
        return list(range(size))         # `size` i64 values: 8 * size bytes, as the original
    raise ValueError(f"payload_mode: {mode!r} is not one of {PAYLOAD_MODES}")


def same_clock() -> bool:
    """The server stamps with time.monotonic_ns; the split into call and return is only
    meaningful if perf_counter_ns reads that same clock (true on Linux: CLOCK_MONOTONIC)."""
    return (time.get_clock_info("perf_counter").implementation
            == time.get_clock_info("monotonic").implementation)


def run(spec: dict, connect) -> dict:
    size, mode = int(spec["payload"]), spec.get("payload_mode", "binary")
    warmup, n = int(spec.get("warmup", 1000)), int(spec["requests"])
    payload = make_payload(size, mode)
    total = warmup + n
    start = np.empty(total, dtype=np.int64)
    end = np.empty(total, dtype=np.int64)
    stamp = np.empty(total, dtype=np.int64)
    stub = connect()
    call = stub.poll if mode == "binary" else stub.poll_list
    clock = time.perf_counter_ns
    with Deadline(spec.get("deadline_s"), stub) as deadline:
        try:
            # The loop does nothing but time: stores into preallocated arrays (no append, no
            # histogram), so the harness adds ~0.1 us a sample (see `msdbench bench`).
            for i in range(total):
                t0 = clock()
                s = call(payload)
                t1 = clock()
                start[i] = t0
                end[i] = t1
                stamp[i] = s
        except Exception as e:
            if deadline.fired:
                raise TimeoutError(f"the cell's deadline of {deadline.seconds} s expired "
                                   f"after {i} of {total} calls") from e
            raise
    stub.close()
    cols = {"warmup": np.arange(total) < warmup, "e2e_ns": end - start}
    split = same_clock() and spec.get("shared_clock", True)
    if split:
        cols["call_ns"] = stamp - start
        cols["return_ns"] = end - stamp
    return {"samples": {"poll": columns(**cols)}, "clock_split": split,
            "wire_bytes": size if mode == "binary" else 8 * size}
