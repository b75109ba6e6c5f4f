"""The throughput driver: N client processes drive the BEPS entry service at once.

It runs inside the client's domain (`control.run_driver`, spec["driver"] == "throughput"), so the
clients inherit that domain's CPU pinning. Processes:

  client domain (driver: `run`)  --spawns-->  coordinator (`python -m msdbench.drivers.throughput`)
                                              --forks-->  worker 0 .. worker N-1

The coordinator is a fresh, single-threaded process that imports everything once and then forks
the N workers (a fork costs milliseconds; a fresh interpreter per client costs ~0.6 s of CPU on
the clients' CPU). Each worker opens its own connection to the entry service (the load
balancer). Every process of the chain asks the kernel to kill it when its parent ends
(PR_SET_PDEATHSIG), and the domain's process group is killed at teardown, so none outlives a point.

One point, as the paper's section 4.3 describes it:
  1. census() through the entry service (the nothing-lost check's "before"; in the driver);
  2. every worker connects and warms up (`warmup_pairs` create_user/delete_user pairs, names of
     its own), then reports READY: a barrier;
  3. the coordinator picks a common start a little ahead (CLOCK_MONOTONIC is one clock for every
     process of the host) and sends it to all; each worker waits for it, so the timed phases
     start together;
  4. closed loop (`mode: closed`): each worker issues `pairs_per_client` create_user/delete_user
     pairs back to back (or as many as fit in `duration_s`), one call in flight;
     open loop (`mode: open`): each worker sends at a fixed rate (the point's offered rate / N),
     request i at its intended time start + (phase + i) / rate; a late request goes out at once
     and its latency counts from its intended send time, not from when it went out (no
     coordinated omission, as wrk2 does); the clients' phases interleave;
  5. each worker reports its counts and every call's raw numbers (send offset from the common
     start, latency, ok; intended offset in the open loop) as int64 arrays;
  6. census() again (the "after").

A call that ends in an IDL error (UnknownUser, DuplicateUser, ...) counts as a failed call and
the worker goes on; a transport failure (the service died, or the point's deadline cut the
socket) ends that worker's timed phase and is reported with how far it got. The driver never
raises on a point's failure: the harness (msdbench/throughput.py) reads the result and names the
culprit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from msdbench.lifetime import die_with_parent, exit_status

CLOCK = time.monotonic_ns  # CLOCK_MONOTONIC: comparable between the processes of one host
READY_TIMEOUT_S = 60.0
CENSUS_TIMEOUT_S = 5.0
OP_CREATE, OP_DELETE = 0, 1
OPS = {OP_CREATE: "create_user", OP_DELETE: "delete_user"}


# -- raw samples travel as base64'd little-endian arrays ----------------------------------------

def pack(a) -> dict:
    import numpy as np

    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack(d: dict):
    import numpy as np

    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"]))


# -- the driver (a thread of the client domain) -------------------------------------------------

def _census(stub) -> dict | str:
    """census() through the entry service, bounded: a service that stopped answering must not
    hold the point up (a Deadline cuts the stub's socket; the stub is then done for)."""
    from msdbench.transports.deadline import Deadline

    with Deadline(CENSUS_TIMEOUT_S, stub) as deadline:
        try:
            c = stub.census()
            return {"users": c.users, "messages": c.messages, "feed_entries": c.feed_entries}
        except Exception as e:  # the entry service (or one behind it) died or stopped answering
            if deadline.fired:
                return f"no answer within {CENSUS_TIMEOUT_S:g} s"
            return f"{type(e).__name__}: {e}"


def _read_all(proc: subprocess.Popen, deadline: float) -> bytes | None:
    """The coordinator's stdout up to EOF, or None at the deadline."""
    chunks = []
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if sel.select(timeout=min(left, 1.0)):
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)


def run(spec: dict, connect) -> dict:
    n = int(spec["clients"])
    if n < 1:
        raise ValueError(f"clients: {n} must be >= 1")
    mode = spec.get("mode", "closed")
    if mode not in ("closed", "open"):
        raise ValueError(f"mode: {mode!r} is not one of 'closed', 'open'")
    point_deadline = float(spec.get("deadline_s") or 600)
    result: dict = {"clients": n, "mode": mode, "driver_pid": os.getpid(),
                    "driver_affinity": sorted(os.sched_getaffinity(0))}
    stub = connect()
    with tempfile.TemporaryFile() as err:
        result["census_before"] = _census(stub)
        env = dict(os.environ, PYTHONUNBUFFERED="1", MSDBENCH_PARENT_PID=str(os.getpid()))
        proc = subprocess.Popen([sys.executable, "-m", "msdbench.drivers.throughput"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        result["coordinator_pid"] = proc.pid
        out = None
        try:
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            proc.stdin.close()
            out = _read_all(proc, time.monotonic() + point_deadline + 15)
        finally:
            if proc.poll() is None and out is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        stderr_tail = "\n".join(err.read().decode(errors="replace").splitlines()[-20:])
        line = out.strip().splitlines()[-1] if out and out.strip() else b""
        if line.startswith(b"RESULT "):
            result.update(json.loads(line[7:]))
        else:
            why = ("the coordinator was still running at the point's deadline: killed"
                   if out is None else f"the coordinator gave no result "
                                       f"({exit_status(proc.returncode)})")
            result.update(ok=False, results=[],
                          failures=[{"client": None, "error": why, "stderr_tail": stderr_tail}])
        if not result.get("ok", False) and stderr_tail:
            result["stderr_tail"] = stderr_tail
        result["census_after"] = _census(stub)
    with contextlib.suppress(Exception):
        stub.close()
    return result


# -- the coordinator (its own process): forks the workers, holds the barrier --------------------

class _Child:
    def __init__(self, index: int, spec: dict, inherited: list[int]):
        self.index = index
        to_r, to_w = os.pipe()      # coordinator -> worker: GO <start>
        from_r, from_w = os.pipe()  # worker -> coordinator: READY / RESULT / ERROR
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for fd in inherited + [to_w, from_r]:
                    os.close(fd)
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)  # the coordinator's stdout carries its result alone
                die_with_parent(parent)
                code = _worker(spec, to_r, from_w)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(to_r)
        os.close(from_w)
        self.pid, self.to_w, self.from_r = pid, to_w, from_r
        self.buf, self.lines, self.eof, self.rc = b"", [], False, None

    def fds(self) -> list[int]:
        return [self.to_w, self.from_r]

    def feed(self) -> None:
        chunk = os.read(self.from_r, 1 << 20)
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.lines.append(line)

    def message(self, kind: str) -> dict | None:
        for line in self.lines:
            head, _, body = line.partition(b" ")
            if head in (kind.encode(), b"ERROR"):
                obj = json.loads(body) if body else {}
                if head == b"ERROR":
                    obj.setdefault("error", "the worker failed")
                return obj
        return None

    def status(self) -> str | None:
        if self.rc is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.rc = os.waitstatus_to_exitcode(st)
        return exit_status(self.rc)

    def kill(self) -> None:
        if self.rc is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, st = os.waitpid(self.pid, 0)
            self.rc = os.waitstatus_to_exitcode(st)
        for fd in self.fds():
            try:
                os.close(fd)
            except OSError:
                pass


def _wait_for(children: list[_Child], kind: str, deadline: float) -> None:
    """Read until every child has sent `kind` (or ERROR), ended, or the deadline passed."""
    with selectors.DefaultSelector() as sel:
        for c in children:
            if not c.eof:
                sel.register(c.from_r, selectors.EVENT_READ, c)
        while not all(c.eof or c.message(kind) is not None for c in children):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in sel.select(timeout=min(left, 1.0)):
                c = key.data
                c.feed()
                if c.eof:
                    sel.unregister(c.from_r)


def _missing(c: _Child, kind: str) -> dict:
    status = c.status()
    why = f"worker {c.index}: no {kind}"
    why += f" (it ended: {status})" if status else " (still running at the deadline: killed)"
    return {"client": c.index, "error": why}


def coordinate(spec: dict) -> dict:
    n = int(spec["clients"])
    point_deadline = float(spec.get("deadline_s") or 600)
    children: list[_Child] = []
    t0 = time.monotonic()
    try:
        for i in range(n):
            wspec = dict(spec, client=i)
            if spec.get("mode") == "open":
                wspec["rate_rps"] = float(spec["rate_rps"]) / n
                wspec["phase"] = i / n  # of one interval: the clients' sends interleave
            children.append(_Child(i, wspec, [fd for c in children for fd in c.fds()]))
        # Each worker's own deadline (point_deadline from the fork) bounds its life; these waits
        # only guard against a worker stuck outside a call.
        _wait_for(children, "READY", t0 + min(READY_TIMEOUT_S, point_deadline + 5))
        ready = {c.index: c.message("READY") for c in children}
        failed = [_missing(c, "READY") if ready[c.index] is None
                  else {"client": c.index, "error": ready[c.index]["error"]}
                  for c in children if ready[c.index] is None or "error" in ready[c.index]]
        out = {"ready_s": round(time.monotonic() - t0, 3),
               "worker_pids": [c.pid for c in children]}
        if failed:
            return out | {"ok": False, "failures": failed, "results": []}
        # Far enough ahead that every worker (all on the client's CPUs) waits for it.
        start_ns = CLOCK() + int(max(0.05, 0.005 * n) * 1e9)
        for c in children:
            os.write(c.to_w, f"GO {start_ns}\n".encode())
        _wait_for(children, "RESULT", t0 + point_deadline + 10)
        results, failed = [], []
        for c in children:
            r = c.message("RESULT")
            if r is None:
                failed.append(_missing(c, "RESULT"))
                continue
            r["client"] = c.index
            r["warmup"] = ready[c.index]["warmup"]
            if r.get("error"):
                failed.append({"client": c.index, "error": r["error"]})
            results.append(r)
        return out | {"ok": not failed, "start_ns": start_ns, "results": results,
                      "failures": failed}
    finally:
        for c in children:
            c.kill()


def coordinator_main() -> int:
    parent = os.environ.get("MSDBENCH_PARENT_PID")
    if parent:
        die_with_parent(int(parent))
    spec = json.loads(sys.stdin.readline())
    # Everything a worker needs, imported once before the forks.
    import importlib

    for module in ("numpy", "msdbench.transports.bindings", "msdbench.services.beps"):
        importlib.import_module(module)
    from msdbench.services import KINDS

    KINDS[spec["entry"]["kind"]].thrift_service()
    result = coordinate(spec)
    ru = resource.getrusage(resource.RUSAGE_SELF)  # the coordinator's own (workers report theirs)
    result["coordinator_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# -- a worker (a forked child of the coordinator) ----------------------------------------------

class _Calls:
    """The two timed operations: an IDL error is counted and returns False; a transport failure
    raises."""

    def __init__(self, stub):
        from thriftpy2.thrift import TApplicationException
        from thriftpy2.transport import TTransportException

        from msdbench.services.beps import IDL_ERRORS

        self.fns = (stub.create_user, stub.delete_user)
        self.call_errors = IDL_ERRORS + (TApplicationException,)
        self.transport_errors = (TTransportException, OSError, EOFError)
        self.errors: dict[str, int] = {}

    def __call__(self, op: int, name: str) -> bool:
        try:
            self.fns[op](name)
            return True
        except self.call_errors as e:
            key = f"{OPS[op]}: {type(e).__name__}"
            self.errors[key] = self.errors.get(key, 0) + 1
            return False


def _send(fd: int, kind: str, obj: dict) -> None:
    data = f"{kind} {json.dumps(obj)}\n".encode()
    while data:
        data = data[os.write(fd, data):]


def _worker(spec: dict, go_fd: int, out_fd: int) -> int:
    import numpy as np

    from msdbench.services import KINDS
    from msdbench.transports import bindings
    from msdbench.transports.deadline import Deadline

    entry = spec["entry"]
    try:
        stub = bindings.connect(entry["transport"], KINDS[entry["kind"]], entry["address"])
    except Exception as e:
        _send(out_fd, "ERROR", {"error": f"worker {spec['client']}: connect to {entry['address']} "
                                         f"({entry['transport']}): {type(e).__name__}: {e}"})
        return 1
    calls = _Calls(stub)
    prefix = f"{spec.get('name_prefix', 'tp')}-c{spec['client']}-"
    with Deadline(float(spec.get("deadline_s") or 600), stub) as deadline:
        warm = {"creates_ok": 0, "deletes_ok": 0}
        nw = int(spec.get("warmup_pairs", 0))
        wlat = np.zeros(2 * nw, dtype=np.int64)
        try:
            for j in range(nw):
                name = f"{prefix}w{j}"
                for op in (OP_CREATE, OP_DELETE):
                    t0 = CLOCK()
                    ok = calls(op, name)
                    wlat[2 * j + op] = CLOCK() - t0
                    warm["creates_ok" if op == OP_CREATE else "deletes_ok"] += ok
        except calls.transport_errors as e:
            why = "the point's deadline expired" if deadline.fired else f"{type(e).__name__}: {e}"
            _send(out_fd, "ERROR", {"error": f"worker {spec['client']}: during warm-up: {why}"})
            return 1
        warm["latency_ns"] = pack(wlat)
        warm["errors"] = dict(calls.errors)
        calls.errors.clear()
        _send(out_fd, "READY", {"warmup": warm})

        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(go_fd, 64)
            if not chunk:
                return 1  # the coordinator gave up on this point
            line += chunk
        start_ns = int(line.split()[1])
        while (wait := start_ns - CLOCK()) > 0:
            time.sleep(wait / 1e9)
        loop = _open_loop if spec.get("mode") == "open" else _closed_loop
        timed = loop(spec, calls, prefix, start_ns, deadline)
    with contextlib.suppress(Exception):
        stub.close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    timed.update(pid=os.getpid(), affinity=sorted(os.sched_getaffinity(0)), errors=calls.errors,
                 usage={"user_s": ru.ru_utime, "system_s": ru.ru_stime, "maxrss_kb": ru.ru_maxrss})
    _send(out_fd, "RESULT", timed)
    return 0


def _finish(op, send, lat, ok, intended, n: int, error: str | None) -> dict:
    """The timed phase's outcome: the first n calls' raw arrays and the counts."""
    import numpy as np

    op, send, lat, ok = op[:n], send[:n], lat[:n], ok[:n]
    out = {
        "completed": int(ok.sum()),
        "attempted": n,
        "creates_ok": int(ok[op == OP_CREATE].sum()),
        "deletes_ok": int(ok[op == OP_DELETE].sum()),
        "first_send_ns": int(send[0]) if n else None,   # offsets from the common start
        "last_done_ns": int(send[n - 1] + lat[n - 1]) if n else None,
        "error": error,
        "samples": {"op": pack(op), "ok": pack(ok.astype(np.uint8)), "send_ns": pack(send),
                    "latency_ns": pack(lat)},
    }
    if intended is not None:
        out["samples"]["intended_ns"] = pack(intended[:n])
        # the open loop's latency runs from the intended time: last completion = intended + latency
        out["last_done_ns"] = int(intended[n - 1] + lat[n - 1]) if n else None
    return out


def _transport_error(e, deadline, i: int) -> str:
    if deadline.fired:
        return f"the point's deadline of {deadline.seconds:g} s expired after {i} timed calls"
    return f"transport failure after {i} timed calls: {type(e).__name__}: {e}"


def _closed_loop(spec, calls, prefix, start_ns, deadline) -> dict:
    """Back-to-back create/delete pairs, one call in flight."""
    import numpy as np

    duration = spec.get("duration_s")
    pairs = int(spec["pairs_per_client"]) if not duration else 1 << 14
    end_ns = start_ns + int(float(duration) * 1e9) if duration else None
    cap = 2 * pairs
    send = np.empty(cap, dtype=np.int64)
    lat = np.empty(cap, dtype=np.int64)
    ok = np.zeros(cap, dtype=bool)
    i, j, error, clock = 0, 0, None, CLOCK
    try:
        while (j < pairs) if end_ns is None else (clock() < end_ns):
            if i + 2 > cap:  # duration mode: grow
                send, lat = np.resize(send, 2 * cap), np.resize(lat, 2 * cap)
                ok = np.concatenate([ok, np.zeros(cap, dtype=bool)])
                cap *= 2
            name = prefix + str(j)
            t0 = clock()
            ok[i] = calls(OP_CREATE, name)
            t1 = clock()
            send[i], lat[i] = t0 - start_ns, t1 - t0
            i += 1
            ok[i] = calls(OP_DELETE, name)
            t2 = clock()
            send[i], lat[i] = t1 - start_ns, t2 - t1
            i += 1
            j += 1
    except calls.transport_errors as e:
        error = _transport_error(e, deadline, i)
    op = np.tile(np.array([OP_CREATE, OP_DELETE], dtype=np.uint8), cap // 2)
    return _finish(op, send, lat, ok, None, i, error)


def _open_loop(spec, calls, prefix, start_ns, deadline) -> dict:
    """A fixed rate: request i is due at start + (phase + i) / rate; latency from that time."""
    import numpy as np

    rate = float(spec["rate_rps"])
    interval = 1e9 / rate
    total = max(2, 2 * math.ceil(rate * float(spec["duration_s"]) / 2))
    phase = float(spec.get("phase", 0.0))
    intended = ((phase + np.arange(total)) * interval).astype(np.int64)  # offsets from the start
    op = np.tile(np.array([OP_CREATE, OP_DELETE], dtype=np.uint8), total // 2)
    send = np.empty(total, dtype=np.int64)
    lat = np.empty(total, dtype=np.int64)
    ok = np.zeros(total, dtype=bool)
    i, error, clock, sleep = 0, None, CLOCK, time.sleep
    due_list = (intended + start_ns).tolist()
    try:
        for i in range(total):
            due = due_list[i]
            now = clock()
            if due > now:
                sleep((due - now) / 1e9)
            t0 = clock()
            ok[i] = calls(i & 1, prefix + str(i >> 1))
            t1 = clock()
            send[i], lat[i] = t0 - start_ns, t1 - due  # from the intended send time
        i = total
    except calls.transport_errors as e:
        error = _transport_error(e, deadline, i)
    return _finish(op, send, lat, ok, intended, i, error)


if __name__ == "__main__":
    sys.exit(coordinator_main())
