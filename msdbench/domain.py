"""One isolation domain at run time: `python -m msdbench.domain --manifest M --domain NAME`.

Every backend starts this same program once per domain (as a process, in a container, ...).
Bring-up has two phases so that no port is fixed in advance:
  1. bind a listening socket for each service of the domain and for the control service, then
     print one line `MSDBENCH-CONTROL host:port` on stdout;
  2. when the harness calls control.connect(endpoints), build the handlers (callees first),
     connect every outgoing edge, and start serving.
The client, when it lives in this domain, runs when the harness calls control.run_driver.

`--manifest -` reads the manifest (one JSON line) from stdin and then keeps stdin as a lifeline:
when it closes (the harness, or the ssh connection that started this domain on another host,
ended) the domain stops. That is how no domain outlives its harness on a remote host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback

import numpy as np

from msdbench import echo, idl
from msdbench.manifest import Edge, Manifest
from msdbench.pinning import pin_self
from msdbench.services import KINDS
from msdbench.transports import bindings
from msdbench.transports.codec import Limits
from msdbench.transports.thrift_tcp import DEFAULT_MAX_CONNECTIONS, ThriftServer

STATE_LINE = "msdbench.domain"  # on stderr (the domain's log): up, stopped (why)


class DomainRuntime:
    def __init__(self, manifest: Manifest, domain: str, bind_host: str, advertise_host: str,
                 stop: threading.Event, entry_port: int = 0):
        self.stop = stop
        self.manifest = manifest
        self.domain = manifest.domain(domain)
        self.affinity = pin_self(self.domain.cpus)
        self.advertise_host = advertise_host
        self.handlers: dict[str, object] = {}
        self.endpoints: dict[str, dict[str, str]] = {}
        self.listeners: dict[str, dict[str, object]] = {}
        self._stubs: list[object] = []
        wire = manifest.settings.get("wire") or {}
        limits = Limits.from_settings(wire)
        max_connections = int(wire.get("max_connections", DEFAULT_MAX_CONNECTIONS))
        # The TCP echo reference lives beside the entry service (the client's callee), so that it
        # crosses the same boundary and runs under the same pinning as the cell's own calls.
        entry = [e.callee for e in manifest.edges_from(manifest.client)]
        # entry_port: the ports the client calls are fixed (entry_port, entry_port + 1 for the echo)
        # so that a container can publish them to a client on another host.
        ours = set(entry) & set(self.domain.services)
        self.echo = echo.start_server(bind_host, entry_port + 1 if entry_port else 0) \
            if ours else None
        for name in self.domain.services:
            svc = manifest.service(name)
            if svc.kind == "client":
                continue
            transports = {e.transport for e in manifest.edges if e.callee == name}
            self.listeners[name] = {
                t: bindings.listen(t, KINDS[svc.kind], bind_host, limits, max_connections,
                                   entry_port if name in entry and t == "thrift-tcp" else 0)
                for t in transports if t != "direct"
            }

    def hello(self) -> dict:
        return {
            "domain": self.domain.name,
            "pid": os.getpid(),
            "affinity": sorted(self.affinity),
            "echo": f"{self.advertise_host}:{self.echo.getsockname()[1]}" if self.echo else None,
            "services": {
                name: {t: bindings.advertise(t, lst, self.advertise_host) for t, lst in by_t.items()}
                for name, by_t in self.listeners.items()
            },
        }

    # -- phase two ---------------------------------------------------------------------------
    def connect(self, endpoints: dict[str, dict[str, str]]) -> None:
        self.endpoints = endpoints
        pending = [n for n in self.domain.services if self.manifest.service(n).kind != "client"]
        # Callees first, so that a `direct` edge finds its callee's handler already built.
        while pending:
            ready = [n for n in pending if all(
                e.callee in self.handlers or e.transport != "direct"
                for e in self.manifest.edges_from(n))]
            if not ready:
                raise RuntimeError(f"cyclic direct edges among {pending}")
            for name in ready:
                self.handlers[name] = self._build(name)
                pending.remove(name)
        for name, by_t in self.listeners.items():
            for lst in by_t.values():
                lst.start(self.handlers[name])

    def _build(self, name: str):
        kind = KINDS[self.manifest.service(name).kind]
        args = {}
        for arg, callee_kind in kind.deps.items():
            stubs = [self.bind(e) for e in self.manifest.edges_from(name)
                     if self.manifest.service(e.callee).kind == callee_kind]
            args[arg] = stubs if arg.endswith("s") else stubs[0]
        return kind.handler_class()(**args)

    def bind(self, edge: Edge, timeout: float | None = None):
        """A stub for one edge: an object with the callee's IDL methods."""
        callee_kind = KINDS[self.manifest.service(edge.callee).kind]
        if edge.transport == "direct":
            return bindings.direct(callee_kind, self.handlers[edge.callee])
        address = self.endpoints[edge.callee][edge.transport]
        stub = bindings.connect(edge.transport, callee_kind, address, timeout=timeout)
        self._stubs.append(stub)
        return stub

    def run_driver(self, spec: dict) -> dict:
        from msdbench.drivers import columns, run_driver

        client = self.manifest.client
        if self.manifest.service(client).domain != self.domain.name:
            raise RuntimeError(f"the client does not live in domain {self.domain.name!r}")
        (edge,) = self.manifest.edges_from(client)
        sockets = []

        def connect():
            stub = self.bind(edge)
            sock = getattr(stub, "sock", None)
            if sock is not None and not sockets:  # what the measured path really connects
                def text(a):
                    return f"{a[0]}:{a[1]}" if isinstance(a, tuple) else str(a)

                sockets.append({"local": text(sock.getsockname()), "peer": text(sock.getpeername())})
            return stub

        ref = spec.get("echo")  # {"address", "calls"}: measured right before and right after
        before = echo.round_trips(ref["address"], ref["calls"]) if ref else None
        result = run_driver(spec, connect)
        if ref:
            after = echo.round_trips(ref["address"], ref["calls"])
            warm = np.arange(2 * ref["calls"]) < ref.get("warmup", 0)
            result["samples"]["echo"] = columns(warmup=warm, e2e_ns=np.concatenate([before, after]))
        result["client_affinity"] = sorted(os.sched_getaffinity(0))
        result["client_socket"] = sockets[0] if sockets else None
        return result

    def close(self) -> None:
        if self.echo is not None:
            self.echo.close()
        for by_t in self.listeners.values():
            for lst in by_t.values():
                lst.close()
        for stub in self._stubs:
            with contextlib.suppress(Exception):
                stub.close()


class ControlHandler:
    """The harness's way into a domain (msdbench/idl/control.thrift)."""

    def __init__(self, rt: DomainRuntime):
        self.rt = rt
        self.err = idl.load("control").ControlError

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            traceback.print_exc()
            raise self.err(why=f"{type(e).__name__}: {e}")

    def hello(self):
        return json.dumps(self.rt.hello())

    def connect(self, endpoints_json):
        self._guard(self.rt.connect, json.loads(endpoints_json))

    def run_driver(self, spec_json):
        return json.dumps(self._guard(self.rt.run_driver, json.loads(spec_json)))

    def _handler(self, target):
        if target not in self.rt.handlers:
            raise KeyError(f"no service {target!r} in domain {self.rt.domain.name!r}; "
                           f"it holds {sorted(self.rt.handlers)}")
        return self.rt.handlers[target]

    def set_fault(self, target, fault, count):
        self._guard(lambda: self._handler(target).set_fault(fault, count))

    def counters(self, target):
        return json.dumps(self._guard(lambda: self._handler(target).counters()))

    def stats(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        with open(f"/proc/{os.getpid()}/statm") as f:
            rss_pages = int(f.read().split()[1])
        return json.dumps({"pid": os.getpid(), "user_s": ru.ru_utime, "system_s": ru.ru_stime,
                           "rss_bytes": rss_pages * os.sysconf("SC_PAGE_SIZE"),
                           "wall_ns": time.monotonic_ns()})

    def shutdown(self):
        self.rt.stop_reason = "shutdown by the harness"
        self.rt.stop.set()


def _stdin_line() -> bytes:
    """The first line of stdin, read from the file descriptor itself (no buffered reader: a
    thread left blocked in one would hold its lock at interpreter exit)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def _lifeline(rt: "DomainRuntime") -> None:
    """Stop when stdin closes: the harness (or the ssh connection from it) is gone."""
    while os.read(0, 4096):
        pass
    if not rt.stop.is_set():
        rt.stop_reason = "stdin closed: the harness is gone"
        rt.stop.set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msdbench.domain", description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True,
                    help="manifest file (YAML or JSON); '-': one JSON line on stdin, and stdin "
                         "then is the lifeline (the domain stops when it closes)")
    ap.add_argument("--domain", required=True, help="which of the manifest's domains this is")
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    ap.add_argument("--advertise", default=None, help="host name peers use (default: --bind)")
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--entry-port", type=int, default=0,
                    help="the entry service's thrift-tcp listener binds this port and the TCP echo "
                         "reference the next one, so that a container can publish them (0: any)")
    ap.add_argument("--owner", default=None,
                    help="the harness's owner label (<host>:<pid>:<start>): labels this process, "
                         "so that `msdbench clean` can tell whether its harness is gone")
    args = ap.parse_args(argv)

    stop = threading.Event()
    signalled = []

    def on_signal(signum, frame):
        signalled.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    manifest = Manifest.from_dict(json.loads(_stdin_line())) if args.manifest == "-" \
        else Manifest.load(args.manifest)
    rt = DomainRuntime(manifest, args.domain, args.bind, args.advertise or args.bind, stop,
                       args.entry_port)
    if args.manifest == "-":
        threading.Thread(target=_lifeline, args=(rt,), daemon=True, name="lifeline").start()
    # threads: a status call (stats, counters) must not wait behind a long run_driver
    control = ThriftServer(idl.load("control").Control, args.bind, args.control_port, threads=4)
    control.start(ControlHandler(rt))
    address = f"{args.advertise or args.bind}:{control.address[1]}"
    print(f"{idl.CONTROL_LINE} {address}", flush=True)
    print(f"{STATE_LINE} {args.domain}: up, control at {address}", file=sys.stderr, flush=True)
    # A timeout keeps the main thread responsive to signals while it waits.
    while not stop.wait(1.0):
        pass
    control.close()
    rt.close()
    # The log's last line says how the domain ended: by the harness's teardown, or by a signal.
    why = getattr(rt, "stop_reason", None) or (signalled and signalled[0]) or "unknown"
    print(f"{STATE_LINE} {args.domain}: stopped ({why})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
