"""`msdbench bench`: what one call costs on each binding, beside a C TCP echo, in one run.

    msdbench bench [--sizes 0,512,8192] [-n 10000] [--cpu 0] [--server-cpu 0] [--no-beps]
                   [--json FILE]

Paths measured (round trips, us), all in one run, sampled in alternating blocks of 1,000 calls
so that drift of a noisy machine hits all alike:
  c-echo        a TCP echo in C, client and server (msdbench/c/tcp_echo.c, compiled now with the
                system's C compiler; skipped with a note where there is none): the kernel floor
  tcp-echo      a raw Python TCP echo (msdbench/echo.py): the floor of a Python service on sockets
  thrift-tcp    linux poll: Thrift binary over TCP (ThriftClient -> ThriftServer in another process)
  poll-list     linux poll_list: the same, the payload as size/8 i64 (size 512 = the C++'s list 64)
  unchecked     thrift-tcp, same server process and connection, with the compiled codec's limit
                checks switched off for these blocks only (a signal flips them in the server):
                the limits' cost on the measured path (compiled codec only)
  shm           specialized poll: Thrift binary over the shared-memory channel
  shm-echo      the shared-memory channel alone (no Thrift)
  direct        specialized, caller and callee in one domain: the handler's bound method
  c-chain       the C echo's server as a chain of 3 threads of one process over loopback TCP
                (client -> load balancer -> worker -> user DB, create_user's route): the floor of
                that route, whatever the services are written in (beside the BEPS paths)
  beps-<platform> create_user / publish: BEPS co-located, deployment 2 (every service in one
                domain, the client - this process - in its own), 5 workers, through the load
                balancer; publish to a user with 20 followers, reported per feed update
                (publish / 20), as the issue compares it with the C++

Ratios: every path / c-echo of the same size (BEPS / c-echo at 0 B), and / thrift-tcp. Goals
(issue 15): thrift-tcp <= 1.5x c-echo at every size, create_user (linux) <= 4.5x c-echo at 0 B;
beside the latter, c-chain / c-echo: how much of that budget the route's kernel work alone takes.
The servers run pinned to --server-cpu (default: --cpu, the cells' default same-core pinning);
the calling thread is pinned to --cpu. `--json FILE` also writes the rows.

Before/after: `cd OLD && PYTHONPATH=OLD python NEW/msdbench/bench.py` benches the tree OLD with
this file. Run it from OLD: the BEPS domains start as `python -m msdbench.domain`, which imports
msdbench from the working directory before PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

C_ECHO_SOURCE = Path(__file__).resolve().parent / "c" / "tcp_echo.c"
FOLLOWERS = 20  # a publish's fan-out in the BEPS paths
ROUTE_HOPS = 3  # create_user's route: load balancer, worker, user DB (the c-chain path)


# ------------------------------------------------------------------------------ server process


def serve(cpu: int | None, tcp_only: bool) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # before any thread: every thread inherits it
    from msdbench import idl
    from msdbench.echo import start_server
    from msdbench.services.poll import PollHandler
    from msdbench.transports.shm import ShmServer
    from msdbench.transports.shm_thrift import SLOT_SIZE, ShmThriftServer
    from msdbench.transports.thrift_tcp import ThriftServer

    poll = idl.load("poll").Poll
    codec = _codec()
    if tcp_only:  # a process serving poll over TCP alone (thrift-tcp and unchecked)
        if codec.COMPILED:
            def flip(signum, frame):  # SIGUSR1: limit checks off, SIGUSR2: on; then say so
                codec.set_checks(signum == signal.SIGUSR2)
                print("ok", flush=True)

            signal.signal(signal.SIGUSR1, flip)
            signal.signal(signal.SIGUSR2, flip)
        tcp = ThriftServer(poll, "127.0.0.1", 0).start(PollHandler())
        print(json.dumps({"port": tcp.address[1], "pid": os.getpid()}), flush=True)
        sys.stdin.read()
        return
    shm = ShmThriftServer(poll).start(PollHandler())
    raw = ShmServer(lambda b: b, slot_size=SLOT_SIZE).start()
    echo = start_server()
    print(json.dumps({"shm": shm.address, "shm-echo": raw.address,
                      "tcp-echo": echo.getsockname()[1], "compiled": codec.COMPILED}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    shm.close()
    raw.close()


# ------------------------------------------------------------------------------------ client


def _codec():
    """msdbench.transports.codec, or a stand-in saying "not compiled" when this file benches an
    older tree that has none, or one from before the compiled path (before/after: module doc)."""
    import types

    try:
        from msdbench.transports import codec
    except ImportError:
        return types.SimpleNamespace(COMPILED=False)
    return codec if hasattr(codec, "COMPILED") else types.SimpleNamespace(COMPILED=False)


class Each(list):
    """A path's arguments, one per call (e.g. unique user names), instead of one fixed argument."""


def sample_interleaved(paths: dict, n: int, warmup: int, block: int = 1000) -> dict:
    """{name: (fn, arg)} -> {name: array of n round trips (ns)}, the paths sampled in alternating
    blocks so that drift of a noisy machine hits all of them alike. `arg` may be an `Each` (one
    argument per call, warm-up first), and a path may instead be an object with
    `.block(m) -> m round trips` (a path timed by another program, e.g. the C echo)."""
    now = time.perf_counter_ns
    pos = dict.fromkeys(paths, 0)

    def run(name, m, out):
        spec = paths[name]
        if hasattr(spec, "block"):
            out.extend(spec.block(m))
            return
        fn, arg = spec
        if isinstance(arg, Each):
            i = pos[name]
            for a in arg[i:i + m]:
                t0 = now()
                fn(a)
                out.append(now() - t0)
            pos[name] = i + m
            return
        for _ in range(m):
            t0 = now()
            fn(arg)
            out.append(now() - t0)

    for name in paths:
        run(name, warmup, array("q"))
    samples = {k: array("q") for k in paths}
    done = 0
    while done < n:
        m = min(block, n - done)
        for name in paths:
            run(name, m, samples[name])
        done += m
    return samples


class Unchecked:
    """thrift-tcp's blocks with the server's limit checks off (same process, same connection)."""

    def __init__(self, proc: subprocess.Popen, fn, arg):
        self.proc, self.fn, self.arg = proc, fn, arg

    def _flip(self, sig) -> None:
        os.kill(self.proc.pid, sig)
        if self.proc.stdout.readline().strip() != "ok":
            raise RuntimeError("the thrift-tcp server did not switch its limit checks")

    def block(self, m: int) -> array:
        now, fn, arg, out = time.perf_counter_ns, self.fn, self.arg, array("q")
        self._flip(signal.SIGUSR1)
        try:
            for _ in range(m):
                t0 = now()
                fn(arg)
                out.append(now() - t0)
        finally:
            self._flip(signal.SIGUSR2)
        return out


class CEcho:
    """The C echo's client process, driven block by block (its own clock, its own samples)."""

    def __init__(self, binary: str, port: int, cpu: int, size: int):
        self.size = size
        self.proc = subprocess.Popen([binary, "client", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))

    def block(self, m: int) -> array:
        self.proc.stdin.write(f"{self.size} {m}\n".encode())
        self.proc.stdin.flush()
        out = array("q")
        out.frombytes(self.proc.stdout.read(8 * m))
        if len(out) != m:
            raise RuntimeError(f"the C echo client ended (exit {self.proc.poll()})")
        return out

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(5)


def build_c_echo(workdir: str) -> tuple[str | None, str]:
    """(path of the compiled C echo (and chain) or None, a note saying why not)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (cc/gcc): the c-echo path is skipped"
    out = os.path.join(workdir, "tcp_echo")
    r = subprocess.run([cc, "-O2", "-pthread", "-o", out, str(C_ECHO_SOURCE)],
                       capture_output=True, text=True)
    if r.returncode:
        return None, f"{cc} failed: {r.stderr.strip()[:300]}; the c-echo path is skipped"
    return out, f"built with {cc} -O2 -pthread"


def _pct(samples, q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] / 1000


def _spawn(args: list[str], cpu: int, procs: list) -> dict:
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    procs.append(proc)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{args[0]} did not start")
    return json.loads(line) if line.lstrip().startswith("{") else {"port": int(line)}


def _beps(platform: str, pinning: str, stack):
    """A BEPS deployment (co-located, deployment 2) and a stub of its load balancer."""
    from msdbench.backends.process import ProcessBackend
    from msdbench.planning import Cell, plan
    from msdbench.services import KINDS
    from msdbench.transports import bindings

    m = plan(Cell("beps", platform, "process", "co-located", 2), {"workers": 5, "pinning": pinning})
    dep = stack.enter_context(ProcessBackend().up(m))
    (edge,) = dep.manifest.edges_from("client")
    return bindings.connect(edge.transport, KINDS["lb"], edge.address)


def bench(sizes, n: int, cpu: int, server_cpu: int, warmup: int, beps: bool = True) -> dict:
    from contextlib import ExitStack

    from msdbench.echo import EchoClient, frame
    from msdbench.services import KINDS
    from msdbench.services.poll import PollHandler
    from msdbench.transports import bindings
    from msdbench.transports.shm import ShmClient

    codec = _codec()

    before = os.sched_getaffinity(0)
    procs: list[subprocess.Popen] = []
    notes = [f"codec: {'compiled' if codec.COMPILED else 'pure Python'}"]
    rows = []
    c_echo = None
    with tempfile.TemporaryDirectory(prefix="msdbench-bench-") as tmp, ExitStack() as stack:
        try:
            me = [sys.executable, __file__, "serve"]  # this file (it may bench an older tree)
            addr = _spawn(me, server_cpu, procs)
            tcp = _spawn(me + ["--tcp-only"], server_cpu, procs)
            tcp_proc = procs[-1]
            c_echo, note = build_c_echo(tmp)
            notes.append(f"c-echo: {note}")
            c_port = _spawn([c_echo, "server"], server_cpu, procs)["port"] if c_echo else None
            os.sched_setaffinity(0, {cpu})
            kind = KINDS["poll"]
            stubs = {
                "direct": bindings.direct(kind, PollHandler()),
                "shm": bindings.connect("shm", kind, addr["shm"]),
                "thrift-tcp": bindings.connect("thrift-tcp", kind, f"127.0.0.1:{tcp['port']}"),
            }
            for s in stubs.values():
                stack.callback(s.close)
            echo, raw = EchoClient(addr["tcp-echo"]), ShmClient(addr["shm-echo"])
            stack.callback(echo.close)
            stack.callback(raw.close)
            for size in sizes:
                payload = b"\xa5" * size
                paths = {}
                if c_port:
                    paths["c-echo"] = stack.enter_context(_closing(CEcho(c_echo, c_port, cpu, size)))
                paths.update({"tcp-echo": (echo.call, frame(payload)),
                              "thrift-tcp": (stubs["thrift-tcp"].poll, payload),
                              "poll-list": (stubs["thrift-tcp"].poll_list, list(range(size // 8)))})
                if codec.COMPILED:
                    paths["unchecked"] = Unchecked(tcp_proc, stubs["thrift-tcp"].poll, payload)
                paths.update({"shm": (stubs["shm"].poll, payload), "shm-echo": (raw.call, payload),
                              "direct": (stubs["direct"].poll, payload)})
                rows += _rows(sample_interleaved(paths, n, warmup), size, n)
            if beps:
                chain = _spawn([c_echo, "server", str(ROUTE_HOPS)], server_cpu,
                               procs)["port"] if c_echo else None
                rows += _bench_beps(stack, n, warmup, cpu, server_cpu, c_echo, c_port, chain)
        finally:
            os.sched_setaffinity(0, before)
            for p in procs:
                if p.args[0] == c_echo:
                    p.terminate()  # it serves until killed
                else:
                    p.stdin.close()
            for p in procs:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    for r in rows:
        r.update(client_cpu=cpu, server_cpu=server_cpu)
    return {"rows": rows, "notes": notes}


class _closing:
    def __init__(self, obj):
        self.obj = obj

    def __enter__(self):
        return self.obj

    def __exit__(self, *exc):
        self.obj.close()


def _bench_beps(stack, n: int, warmup: int, cpu: int, server_cpu: int, c_echo, c_port,
                chain_port) -> list:
    """create_user and publish (per feed update) through each platform's load balancer, in
    blocks interleaved with the C echo and the C chain at 0 B."""
    pinning = "same-core" if server_cpu == cpu else "split"
    os.sched_setaffinity(0, {cpu})
    paths, per = {}, {}
    if c_port:
        paths["c-echo (beps)"] = stack.enter_context(_closing(CEcho(c_echo, c_port, cpu, 0)))
        paths["c-chain (beps)"] = stack.enter_context(_closing(CEcho(c_echo, chain_port, cpu,
                                                                     0)))
    for platform in ("linux", "specialized"):
        lb = _beps(platform, pinning, stack)
        os.sched_setaffinity(0, {cpu})
        tag = platform[:3]
        publisher = f"pub-{tag}"
        lb.create_user(publisher)
        for i in range(FOLLOWERS):
            lb.create_user(f"fol-{tag}-{i}")
            lb.subscribe(f"fol-{tag}-{i}", publisher)
        names = Each(f"u{tag}{i:08d}" for i in range(warmup + n))
        paths[f"beps-{platform} create_user"] = (lb.create_user, names)
        text = "t" * 280
        paths[f"beps-{platform} publish"] = (lambda u, lb=lb: lb.publish(u, text), publisher)
        per[f"beps-{platform} publish"] = FOLLOWERS
    samples = sample_interleaved(paths, n, warmup, block=500)
    rows = []
    for name, s in samples.items():
        rows += _rows({name: s}, 0, n, per=per.get(name, 1))
    return rows


def _rows(samples: dict, size: int, n: int, per: int = 1) -> list[dict]:
    return [{"path": name, "size": size, "n": n, "per": per,
             "median_us": round(_pct(s, 0.5) / per, 3), "p99_us": round(_pct(s, 0.99) / per, 3)}
            for name, s in samples.items()]


def report(result: dict) -> str:
    rows = result["rows"]
    lines = [f"{'path':>28} {'size':>6} {'median_us':>10} {'p99_us':>9} {'/c-echo':>8} "
             f"{'/thrift-tcp':>12}"]
    by = {(r["path"], r["size"]): r["median_us"] for r in rows}
    c_echo_0 = [r["median_us"] for r in rows if r["path"] == "c-echo (beps)"]

    def ratio(v, ref):
        return f"{v / ref:.3f}" if ref else "-"

    for r in rows:
        c = by.get(("c-echo", r["size"]))
        if r["path"].startswith(("beps", "c-echo (beps)", "c-chain (beps)")) and c_echo_0:
            c = c_echo_0[-1]  # the c-echo blocks interleaved with the BEPS ones
        t = by.get(("thrift-tcp", r["size"]))
        per = f" (/{r['per']})" if r["per"] != 1 else ""
        lines.append(f"{r['path'] + per:>28} {r['size']:>6} {r['median_us']:>10.3f} "
                     f"{r['p99_us']:>9.3f} {ratio(r['median_us'], c):>8} "
                     f"{ratio(r['median_us'], t) if not r['path'].startswith('beps') else '-':>12}")
    lines += [f"note: {x}" for x in result["notes"]]
    if rows:
        lines.append(f"client CPU {rows[0]['client_cpu']}, servers CPU {rows[0]['server_cpu']}; "
                     "medians; the timer's cost (~0.1 us) is inside every Python path")
    goals = []
    for size in sorted({r["size"] for r in rows}):
        c, t, u = (by.get((p, size)) for p in ("c-echo", "thrift-tcp", "unchecked"))
        if c and t:
            goals.append(f"size {size}: thrift-tcp/c-echo {t / c:.2f} "
                         f"({'ok' if t / c <= 1.5 else 'MISSED'} <= 1.5)"
                         + (f"; limits cost {100 * (t / u - 1):+.1f}% (thrift-tcp/unchecked)"
                            if u else ""))
    cu = by.get(("beps-linux create_user", 0))
    if cu and c_echo_0:
        floor = by.get(("c-chain (beps)", 0))
        goals.append(f"create_user linux/c-echo {cu / c_echo_0[-1]:.2f} "
                     f"({'ok' if cu / c_echo_0[-1] <= 4.5 else 'MISSED'} <= 4.5)"
                     + (f"; its route in C (c-chain/c-echo) {floor / c_echo_0[-1]:.2f}, "
                        f"create_user/c-chain {cu / floor:.2f}" if floor else ""))
    return "\n".join(lines + goals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="msdbench bench", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="(internal) the server process")
    s.add_argument("--tcp-only", action="store_true")
    ap.add_argument("--sizes", default="0,512,8192")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--server-cpu", type=int, default=None)
    ap.add_argument("--no-beps", action="store_true", help="skip the BEPS paths")
    ap.add_argument("--json", default=None, help="also write the rows")
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(None, a.tcp_only)  # pinned by the parent (preexec)
        return 0
    result = bench([int(x) for x in a.sizes.split(",")], a.n, a.cpu,
                   a.cpu if a.server_cpu is None else a.server_cpu, a.warmup, not a.no_beps)
    print(report(result))
    if a.json:
        from msdbench.results import atomic_write_json

        atomic_write_json(a.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
