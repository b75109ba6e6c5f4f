"""`msdbench bench`: how our Thrift poll compares with the floor a Python program can reach.

In one run, both ends pinned to the same CPU: a raw Python TCP echo (length-prefixed request of
N bytes, 8-byte reply: the shape of a poll call without Thrift), then the real microbenchmark cell
(linux platform, isolated, deployment 2: client and poll in separate processes), at each payload;
and the harness's own cost per sample. Prints medians, p99 and the ratio thriftpy2 / echo.
Machines here are noisy: compare the ratio, not the absolute numbers, across runs.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

ECHO_SERVER = r"""
import os, socket, struct, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
lst = socket.create_server(("127.0.0.1", 0))
print(lst.getsockname()[1], flush=True)
conn, _ = lst.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buf = bytearray(1 << 20)
view = memoryview(buf)
reply = b"\0" * 8
while True:
    got = 0
    while got < 4:
        n = conn.recv_into(view[got:], 1 << 20)
        if not n:
            sys.exit(0)
        got += n
    (size,) = struct.unpack_from("!I", buf)
    while got < 4 + size:
        n = conn.recv_into(view[got:], 1 << 20)
        if not n:
            sys.exit(0)
        got += n
    conn.sendall(reply)
"""


def echo_samples(cpu: int, payload: int, n: int, warmup: int) -> np.ndarray:
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(cpu)], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = struct.pack("!I", payload) + b"\xa5" * payload
        out = np.empty(n, dtype=np.int64)
        clock, send, recv = time.perf_counter_ns, sock.sendall, sock.recv
        for i in range(warmup + n):
            t0 = clock()
            send(msg)
            recv(64)
            t1 = clock()
            if i >= warmup:
                out[i - warmup] = t1 - t0
        sock.close()
        return out
    finally:
        server.kill()
        server.wait()


def poll_samples(payload: int, n: int, warmup: int) -> np.ndarray:
    from msdbench.cell import run_cell
    from msdbench.planning import Cell, plan

    m = plan(Cell("micro", "linux", "process", "isolated", 2, payload),
             {"requests": n, "warmup": warmup, "pinning": "same-core", "payload_mode": "binary"})
    with tempfile.TemporaryDirectory(prefix="msdbench-bench-") as tmp:
        run_cell(m, f"{tmp}/c.parquet", f"{tmp}/c.json")
        df = pd.read_parquet(f"{tmp}/c.parquet")
    return df.loc[~df["warmup"], "e2e_ns"].to_numpy()


def harness_cost(n: int = 200_000) -> float:
    """ns a sample costs the timing loop itself (clock reads, array store, a no-op call)."""
    a = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    noop = (lambda: None)
    for i in range(n):
        t0 = clock()
        noop()
        t1 = clock()
        a[i] = t1 - t0
    return float(np.median(a))


def main(args) -> int:
    cpu = args.cpu
    os.sched_setaffinity(0, {cpu})
    payloads = [int(p) for p in args.payloads.split(",")]
    n, warmup = args.requests, min(1000, args.requests)
    print(f"both ends pinned to CPU {cpu}; {n} timed calls after {warmup} warm-up; microseconds")
    print(f"harness cost per sample (clock x2 + no-op call + store): {harness_cost():.0f} ns")
    print(f"{'payload':>8} {'echo p50':>9} {'echo p99':>9} {'poll p50':>9} {'poll p99':>9} "
          f"{'ratio p50':>9}")
    for p in payloads:
        echo = echo_samples(cpu, p, n, warmup) / 1000
        poll = poll_samples(p, n, warmup) / 1000
        ratio = np.median(poll) / np.median(echo)
        print(f"{p:>8} {np.median(echo):>9.1f} {np.percentile(echo, 99):>9.1f} "
              f"{np.median(poll):>9.1f} {np.percentile(poll, 99):>9.1f} {ratio:>9.2f}", flush=True)
    return 0
