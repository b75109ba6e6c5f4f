"""The throughput driver: N client processes drive the BEPS entry service at once.

It runs inside the client's domain (`control.run_driver`, spec["driver"] == "throughput") and
spawns N worker processes (`python -m msdbench.drivers.throughput`), each with its own connection
to the entry service (the load balancer). The workers inherit the client domain's CPU pinning.

One point, as the paper's section 4.3 describes it:
  1. census() through the entry service (the nothing-lost check's "before");
  2. every worker connects and warms up (`warmup_pairs` create_user/delete_user pairs, on names
     of its own), then reports READY: a barrier;
  3. the driver picks a common start time a little in the future (CLOCK_MONOTONIC is one clock
     for every process of the host) and sends it to all; each worker waits for it, so the timed
     phases start together;
  4. closed loop (`mode: closed`): each worker issues `pairs_per_client` create_user/delete_user
     pairs back to back (or as many as fit in `duration_s`), one call in flight;
     open loop (`mode: open`): each worker sends at a fixed rate (the point's offered rate / N),
     request i at its intended time start + phase + i/rate; a late request is sent at once and
     its latency is counted from its intended send time, not from when it went out (no
     coordinated omission, as wrk2 does);
  5. each worker reports its counts, its first send and last completion, and every call's
     send offset, intended offset (open loop) and latency, as raw int64 arrays;
  6. census() again (the "after").

Calls that end in an IDL error (UnknownUser, DuplicateUser, ...) count as failed calls and the
worker goes on; a transport failure (the service died or the point's deadline cut the socket)
ends that worker's timed phase and is reported with how far it got. The driver never raises on a
point's failure: the harness (msdbench/throughput.py) reads the result and names the culprit.

Worker protocol (one JSON or text line each way, over the worker's stdin/stdout):
  driver -> worker: the worker spec (JSON);  worker -> driver: READY <json> (or the error
  result);  driver -> worker: GO <start_ns>;  worker -> driver: RESULT <json>.
"""

from __future__ import annotations

import base64
import ctypes
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

import numpy as np

CLOCK = time.monotonic_ns  # CLOCK_MONOTONIC: comparable between the processes of one host
READY_TIMEOUT_S = 60.0
OP_CREATE, OP_DELETE = 0, 1
OPS = {OP_CREATE: "create_user", OP_DELETE: "delete_user"}
PR_SET_PDEATHSIG = 1


# -- array transport (raw samples travel as base64'd little-endian arrays) --------------------

def pack(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack(d: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(d["b64"]), dtype=np.dtype(d["dtype"]))


# -- the driver (inside the client domain) -----------------------------------------------------

class _Worker:
    def __init__(self, index: int, spec: dict):
        self.index = index
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1", MSDBENCH_PARENT_PID=str(os.getpid()))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "msdbench.drivers.throughput"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.buf = b""
        self.lines: list[bytes] = []
        self.eof = False
        self.proc.stdin.write((json.dumps(spec) + "\n").encode())
        self.proc.stdin.flush()

    def feed(self) -> None:
        chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.lines.append(line)

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            self.stderr.seek(0)
            text = self.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> str | None:
        rc = self.proc.poll()
        if rc is None:
            return None
        return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                f.close()
            except (OSError, ValueError, BrokenPipeError):
                pass


def _wait_lines(workers: list[_Worker], want: str, deadline: float) -> None:
    """Read until every worker has a line starting with `want` (or ended, or the deadline)."""
    sel = selectors.DefaultSelector()
    try:
        for w in workers:
            if not w.eof:
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)

        def done(w):
            return w.eof or any(line.startswith(want.encode()) or line.startswith(b"ERROR")
                                for line in w.lines)

        while not all(done(w) for w in workers):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for key, _ in sel.select(timeout=min(left, 1.0)):
                w = key.data
                w.feed()
                if w.eof:
                    sel.unregister(w.proc.stdout)
    finally:
        sel.close()


def _line(w: _Worker, prefix: str) -> dict | None:
    for line in w.lines:
        if line.startswith(prefix.encode()) or line.startswith(b"ERROR"):
            head, _, body = line.partition(b" ")
            obj = json.loads(body) if body else {}
            if head == b"ERROR":
                obj.setdefault("error", "worker failed")
            return obj
    return None


def _client_failure(w: _Worker, stage: str) -> dict:
    status = w.status()
    tail = w.stderr_tail()
    why = f"worker {w.index}: no {stage} line"
    why += f" ({status})" if status else " (still running at the deadline: killed)"
    return {"client": w.index, "error": why, "stderr_tail": tail}


def _census(stub) -> dict | str:
    try:
        c = stub.census()
        return {"users": c.users, "messages": c.messages, "feed_entries": c.feed_entries}
    except Exception as e:  # the entry service may be the one that died
        return f"{type(e).__name__}: {e}"


def run(spec: dict, connect) -> dict:
    from msdbench.transports.thrift_tcp import Deadline

    n = int(spec["clients"])
    if n < 1:
        raise ValueError(f"clients: {n} must be >= 1")
    mode = spec.get("mode", "closed")
    if mode not in ("closed", "open"):
        raise ValueError(f"mode: {mode!r} is not one of 'closed', 'open'")
    point_deadline = float(spec.get("deadline_s") or 600)
    stub = connect()
    result: dict = {"clients": n, "mode": mode, "driver_pid": os.getpid(),
                    "driver_affinity": sorted(os.sched_getaffinity(0))}
    workers: list[_Worker] = []
    with Deadline(point_deadline + 20) as deadline:  # bounds the census calls
        if hasattr(stub, "sock"):
            deadline.watch(stub.sock)
        result["census_before"] = _census(stub)
        try:
            for i in range(n):
                wspec = dict(spec, client=i, deadline_s=point_deadline)
                if mode == "open":
                    wspec["rate_rps"] = float(spec["rate_rps"]) / n
                    wspec["phase"] = i / n  # of one interval: the clients' sends interleave
                workers.append(_Worker(i, wspec))
            t0 = time.monotonic()
            # Each worker's own deadline (point_deadline from its start) bounds its whole life;
            # these waits only guard against a worker that hangs outside a call.
            _wait_lines(workers, "READY", t0 + min(READY_TIMEOUT_S, point_deadline + 5))
            ready = {w.index: _line(w, "READY") for w in workers}
            failed = [(_client_failure(w, "READY") if ready[w.index] is None
                       else {"client": w.index, "error": ready[w.index]["error"],
                             "stderr_tail": w.stderr_tail()})
                      for w in workers if ready[w.index] is None or "error" in ready[w.index]]
            result["ready_s"] = round(time.monotonic() - t0, 3)
            if failed:
                result.update(ok=False, failures=failed, results=[])
                return result
            # The start: far enough ahead that every worker (all on the client's CPUs) is
            # waiting for it when it comes.
            start_ns = CLOCK() + int(max(0.05, 0.01 * n) * 1e9)
            for w in workers:
                w.proc.stdin.write(f"GO {start_ns}\n".encode())
                w.proc.stdin.flush()
            _wait_lines(workers, "RESULT", t0 + point_deadline + 10)
            results, failed = [], []
            for w in workers:
                r = _line(w, "RESULT")
                if r is None:
                    failed.append(_client_failure(w, "RESULT"))
                    continue
                r["client"] = w.index
                r["ready"] = ready[w.index]
                if r.get("error"):
                    failed.append({"client": w.index, "error": r["error"],
                                   "stderr_tail": w.stderr_tail()})
                results.append(r)
            result.update(start_ns=start_ns, results=results, failures=failed, ok=not failed)
        finally:
            for w in workers:
                w.kill()
            result["census_after"] = _census(stub)
            result["deadline_fired"] = deadline.fired
    try:
        stub.close()
    except Exception:
        pass
    return result


# -- a worker (its own process) ---------------------------------------------------------------

def _die_with_parent() -> None:
    """If the driver (the thread that started us) ends, even by SIGKILL, this worker ends too."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    parent = os.environ.get("MSDBENCH_PARENT_PID")
    if parent and os.getppid() != int(parent):  # it ended before prctl took effect
        os._exit(3)


def _emit(kind: str, obj: dict) -> None:
    sys.stdout.write(f"{kind} {json.dumps(obj)}\n")
    sys.stdout.flush()


def _usage() -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_s": ru.ru_utime, "system_s": ru.ru_stime, "maxrss_kb": ru.ru_maxrss}


class _Calls:
    """The two timed operations, with IDL errors counted per call and transport failures raised."""

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


def _names(spec: dict, tag: str, count: int) -> list[str]:
    return [f"{spec.get('name_prefix', 'tp')}-{tag}{spec['client']}-{j}" for j in range(count)]


def worker_main() -> int:
    _die_with_parent()
    spec = json.loads(sys.stdin.readline())
    from msdbench.services import KINDS
    from msdbench.transports import bindings
    from msdbench.transports.thrift_tcp import Deadline

    entry = spec["entry"]
    try:
        stub = bindings.connect(entry["transport"], KINDS[entry["kind"]], entry["address"])
    except Exception as e:
        _emit("ERROR", {"error": f"connect to {entry['address']} ({entry['transport']}): "
                                 f"{type(e).__name__}: {e}"})
        return 1
    calls = _Calls(stub)
    out = {"pid": os.getpid(), "affinity": sorted(os.sched_getaffinity(0))}
    with Deadline(float(spec["deadline_s"])) as deadline:
        if hasattr(stub, "sock"):
            deadline.watch(stub.sock)
        # warm-up: timed but kept apart, not part of the point
        warm = {"creates_ok": 0, "deletes_ok": 0}
        wlat = np.zeros(2 * int(spec.get("warmup_pairs", 0)), dtype=np.int64)
        try:
            for j, name in enumerate(_names(spec, "w", int(spec.get("warmup_pairs", 0)))):
                for op in (OP_CREATE, OP_DELETE):
                    t0 = CLOCK()
                    ok = calls(op, name)
                    wlat[2 * j + op] = CLOCK() - t0
                    warm["creates_ok" if op == OP_CREATE else "deletes_ok"] += ok
        except calls.transport_errors as e:
            why = "the point's deadline expired" if deadline.fired else f"{type(e).__name__}: {e}"
            _emit("ERROR", {"error": f"during warm-up: {why}", "warmup": warm})
            return 1
        warm["latency_ns"] = pack(wlat)
        warm["errors"] = dict(calls.errors)
        calls.errors.clear()
        _emit("READY", {"warmup": warm})

        line = sys.stdin.readline().split()
        if not line or line[0] != "GO":
            return 1
        start_ns = int(line[1])
        while (wait := start_ns - CLOCK()) > 0:
            time.sleep(wait / 1e9)
        try:
            timed = (_open_loop if spec.get("mode") == "open" else _closed_loop)(
                spec, calls, start_ns, deadline)
        finally:
            try:
                stub.close()
            except Exception:
                pass
    out.update(timed)
    out["errors"] = calls.errors
    out["usage"] = _usage()
    _emit("RESULT", out)
    return 0


def _finish(op, send, lat, ok, intended, n, error, start_ns) -> dict:
    """The timed phase's outcome: the first n calls' raw arrays and the counts."""
    op, send, lat, ok = op[:n], send[:n], lat[:n], ok[:n]
    out = {
        "completed": int(ok.sum()),
        "attempted": n,
        "creates_ok": int(ok[op == OP_CREATE].sum()),
        "deletes_ok": int(ok[op == OP_DELETE].sum()),
        "first_send_ns": int(send[0]) if n else None,          # offsets from the common start
        "last_done_ns": int(send[n - 1] + lat[n - 1]) if n else None,
        "error": error,
        "samples": {"op": pack(op), "ok": pack(ok.astype(np.uint8)), "send_ns": pack(send),
                    "latency_ns": pack(lat)},
    }
    if intended is not None:
        out["samples"]["intended_ns"] = pack(intended[:n])
    return out


def _transport_error(e, deadline, i) -> str:
    if deadline.fired:
        return f"the point's deadline of {deadline.seconds:g} s expired after {i} calls"
    return f"transport failure after {i} calls: {type(e).__name__}: {e}"


def _closed_loop(spec, calls, start_ns, deadline) -> dict:
    """Back-to-back create/delete pairs, one call in flight."""
    duration = spec.get("duration_s")
    pairs = int(spec["pairs_per_client"]) if not duration else 1 << 14
    end_ns = start_ns + int(float(duration) * 1e9) if duration else None
    cap = 2 * pairs
    op = np.tile(np.array([OP_CREATE, OP_DELETE], dtype=np.uint8), pairs)
    send = np.empty(cap, dtype=np.int64)
    lat = np.empty(cap, dtype=np.int64)
    ok = np.zeros(cap, dtype=bool)
    prefix = f"{spec.get('name_prefix', 'tp')}-c{spec['client']}-"
    i, error, clock = 0, None, CLOCK
    try:
        j = 0
        while True:
            if end_ns is None:
                if j >= pairs:
                    break
            elif clock() >= end_ns:
                break
            if i + 2 > cap:  # duration mode: grow
                op = np.concatenate([op, op])
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
    return _finish(op, send, lat, ok, None, i, error, start_ns)


def _open_loop(spec, calls, start_ns, deadline) -> dict:
    """A fixed rate: request i is due at start + (phase + i) / rate; latency from that time."""
    rate = float(spec["rate_rps"])
    interval = 1e9 / rate
    total = max(2, 2 * math.ceil(rate * float(spec["duration_s"]) / 2))
    phase = float(spec.get("phase", 0.0))
    intended = (start_ns + ((phase + np.arange(total)) * interval)).astype(np.int64)
    op = np.tile(np.array([OP_CREATE, OP_DELETE], dtype=np.uint8), total // 2)
    send = np.empty(total, dtype=np.int64)
    lat = np.empty(total, dtype=np.int64)
    ok = np.zeros(total, dtype=bool)
    prefix = f"{spec.get('name_prefix', 'tp')}-c{spec['client']}-"
    i, error, clock, sleep = 0, None, CLOCK, time.sleep
    due_list = intended.tolist()
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
    return _finish(op, send, lat, ok, intended - start_ns, i, error, start_ns)


if __name__ == "__main__":
    sys.exit(worker_main())
