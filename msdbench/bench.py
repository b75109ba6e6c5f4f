"""`msdbench bench`: what one poll() costs on each binding, beside a raw TCP echo, in one run.

    msdbench bench [--sizes 0,512,8192] [-n 10000] [--cpu 0] [--server-cpu 0] [--json FILE]

Paths measured (round trips, us):
  direct      specialized, caller and callee in one domain: the handler's bound method, through
              the same DirectStub the domain runtime hands out (no serialization)
  shm         specialized, two domains on one host: Thrift binary over the shared-memory channel
              (ShmThriftClient -> ShmThriftServer in another process)
  thrift-tcp  linux: Thrift binary over TCP (ThriftClient -> ThriftServer in another process)
  tcp-echo    a raw Python TCP echo (msdbench/echo.py), the floor a Python service on sockets
              cannot go below
  shm-echo    the shared-memory channel alone (ShmClient -> ShmServer echo, no Thrift): what of
              `shm` is the channel and what is serialization and dispatch

The servers run in one child process pinned to --server-cpu (default: same as --cpu, as the
default `same-core` pinning of the cells); the calling thread is pinned to --cpu. The paths are
sampled in alternating blocks so that drift hits all alike. Prints median and p99 per path and
size, and the ratios the issue asks for (goal: shm <= 0.75 x tcp-echo; direct <= 1 us).
`--json FILE` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from array import array

# ------------------------------------------------------------------------------ server process


def serve(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # before any thread: every thread inherits it
    from msdbench import idl
    from msdbench.echo import start_server
    from msdbench.services.poll import PollHandler
    from msdbench.transports.shm import ShmServer
    from msdbench.transports.shm_thrift import SLOT_SIZE, ShmThriftServer
    from msdbench.transports.thrift_tcp import ThriftServer

    poll = idl.load("poll").Poll
    shm = ShmThriftServer(poll).start(PollHandler())
    tcp = ThriftServer(poll, "127.0.0.1", 0).start(PollHandler())
    raw = ShmServer(lambda b: b, slot_size=SLOT_SIZE).start()
    echo = start_server()
    print(json.dumps({"shm": shm.address, "thrift-tcp": tcp.address[1], "shm-echo": raw.address,
                      "tcp-echo": echo.getsockname()[1], "pid": os.getpid()}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    shm.close()
    raw.close()
    tcp.close()


# ------------------------------------------------------------------------------------ client


def sample_interleaved(paths: dict, n: int, warmup: int, block: int = 1000) -> dict:
    """{name: (fn, arg)} -> {name: array of n round trips (ns)}, the paths sampled in alternating
    blocks so that drift of a noisy machine hits all of them alike."""
    now = time.perf_counter_ns
    for fn, arg in paths.values():
        for _ in range(warmup):
            fn(arg)
    samples = {k: array("q") for k in paths}
    done = 0
    while done < n:
        m = min(block, n - done)
        for name, (fn, arg) in paths.items():
            out = samples[name]
            for _ in range(m):
                t0 = now()
                fn(arg)
                out.append(now() - t0)
        done += m
    return samples


def _pct(samples, q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] / 1000


def bench(sizes, n: int, cpu: int, server_cpu: int, warmup: int) -> list[dict]:
    from msdbench.services import KINDS
    from msdbench.services.poll import PollHandler
    from msdbench.transports import bindings
    from msdbench.transports.shm import ShmClient

    from msdbench.echo import EchoClient, frame

    proc = subprocess.Popen([sys.executable, "-m", "msdbench.bench", "serve", "--cpu",
                             str(server_cpu)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    before = os.sched_getaffinity(0)
    stubs = []
    try:
        addr = json.loads(proc.stdout.readline())
        os.sched_setaffinity(0, {cpu})
        kind = KINDS["poll"]
        direct = bindings.direct(kind, PollHandler())
        shm = bindings.connect("shm", kind, addr["shm"])
        tcp = bindings.connect("thrift-tcp", kind, f"127.0.0.1:{addr['thrift-tcp']}")
        echo = EchoClient(addr["tcp-echo"])
        raw = ShmClient(addr["shm-echo"])
        stubs = [shm, tcp, echo, raw]
        rows = []
        now = time.perf_counter_ns
        for size in sizes:
            payload = b"\xa5" * size
            framed = frame(payload)
            paths = {"direct": (direct.poll, payload), "shm": (shm.poll, payload),
                     "thrift-tcp": (tcp.poll, payload), "tcp-echo": (echo.call, framed),
                     "shm-echo": (raw.call, payload)}
            samples = sample_interleaved(paths, n, warmup)
            # the timer's own cost, to read the direct call's number against
            empty = array("q")
            for _ in range(n):
                t0 = now()
                empty.append(now() - t0)
            for name in paths:
                rows.append({"path": name, "size": size, "n": n,
                             "median_us": round(_pct(samples[name], 0.5), 3),
                             "p99_us": round(_pct(samples[name], 0.99), 3),
                             "timer_us": round(_pct(empty, 0.5), 3),
                             "client_cpu": cpu, "server_cpu": server_cpu})
        return rows
    finally:
        for s in stubs:
            s.close()
        os.sched_setaffinity(0, before)
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def report(rows: list[dict]) -> str:
    lines = [f"{'path':>11} {'size':>6} {'median_us':>10} {'p99_us':>9} {'/tcp-echo':>10} "
             f"{'/thrift-tcp':>12}"]
    by = {(r["path"], r["size"]): r for r in rows}
    for r in rows:
        echo = by[("tcp-echo", r["size"])]["median_us"]
        tcp = by[("thrift-tcp", r["size"])]["median_us"]
        lines.append(f"{r['path']:>11} {r['size']:>6} {r['median_us']:>10.3f} {r['p99_us']:>9.3f} "
                     f"{r['median_us'] / echo:>10.3f} {r['median_us'] / tcp:>12.3f}")
    lines.append(f"(timer cost ~{rows[0]['timer_us']:.3f} us is inside every number; "
                 f"client CPU {rows[0]['client_cpu']}, servers CPU {rows[0]['server_cpu']})")
    goals = []
    for size in sorted({r["size"] for r in rows}):
        d = by[("direct", size)]["median_us"]
        ratio = by[("shm", size)]["median_us"] / by[("tcp-echo", size)]["median_us"]
        goals.append(f"size {size}: direct {d:.3f} us ({'ok' if d <= 1.0 else 'MISSED'} <= 1 us), "
                     f"shm/tcp-echo {ratio:.3f} ({'ok' if ratio <= 0.75 else 'MISSED'} <= 0.75)")
    return "\n".join(lines + goals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="msdbench bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="(internal) the server process")
    s.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--sizes", default="0,512,8192")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(a.cpu)
        return 0
    rows = bench([int(x) for x in a.sizes.split(",")], a.n, a.cpu,
                 a.cpu if a.server_cpu is None else a.server_cpu, a.warmup)
    print(report(rows))
    if a.json:
        from msdbench.results import atomic_write_json

        atomic_write_json(a.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
