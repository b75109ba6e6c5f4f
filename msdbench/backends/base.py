"""What every backend shares: bring a manifest up through the domains' control services, and
always take it down again.

A backend only knows how to start one domain (a process, a container, ...) and learn its control
address, how to tell whether it still lives, and how to stop it. The two-phase bring-up, the
driver call and the teardown order live here, once. The hosts the manifest names
(msdbench/hosts) are brought up before the first domain starts (`self.hosts`, for start_domain)
and taken down after the last one stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from msdbench import idl
from msdbench.culprits import LOG_TAIL_LINES
from msdbench.errors import BackendError  # noqa: F401  (re-exported: its home for the backends' users)
from msdbench.hosts import HostSet
from msdbench.manifest import Manifest
from msdbench.transports.thrift_tcp import ThriftClient, split_address

CONTROL_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 5.0       # a domain's control service that takes longer "is not answering"
ENDING_GRACE_S = 1.0        # how long a domain whose control failed may take to be seen ending


@dataclass
class DomainHandle:
    name: str
    control_address: str
    native: object                     # the backend's own handle (Popen, Container, ...)
    hello: dict = field(default_factory=dict)
    control: ThriftClient | None = None


class Backend:
    name = "abstract"
    hosts: HostSet | None = None

    # -- what a backend provides -------------------------------------------------------------
    def before_hosts(self, manifest: Manifest, hosts: HostSet) -> None:
        """Before the hosts come up: a backend whose domains bring their own network namespace (a
        container's) gives it to the netns hosts here (`NetnsHost.join`)."""

    def prepare(self, manifest: Manifest) -> None:
        """Before any domain starts (e.g. write the manifest where domains can read it)."""

    def start_domain(self, manifest: Manifest, domain: str) -> DomainHandle:
        raise NotImplementedError

    def exit_status(self, handle: DomainHandle) -> str | None:
        """None while the domain lives; else how it ended (e.g. "exit code 1", "signal 9")."""
        raise NotImplementedError

    def log_tail(self, handle: DomainHandle, lines: int = 20) -> str:
        raise NotImplementedError

    def stop_domain(self, handle: DomainHandle) -> None:
        raise NotImplementedError

    def teardown(self, manifest: Manifest) -> None:
        """After every domain was stopped, also after a failed bring-up: remove what `prepare` made
        (e.g. a network). Must not raise."""

    def describe(self) -> dict:
        """What this backend adds to a cell's metadata (e.g. the image id)."""
        return {"backend": self.name}

    def seen_from(self, domain: str, advertised: str) -> str:
        """A service address as its domain advertised it -> as `domain` (a caller) reaches it
        (the docker backend: a published port, for a client on another host)."""
        return advertised

    def reachable(self, handle: DomainHandle, advertised: str) -> str:
        """A service address as a domain advertised it -> as the harness's host reaches it."""
        return advertised

    def where(self, handle: DomainHandle) -> str:
        """Where a domain runs, for a person looking for it (e.g. "process 123 on HOST")."""
        return f"pid {handle.hello.get('pid')}"

    def unavailable_reason(self) -> str | None:
        """Why no cell of this backend can run here (e.g. the engine that does not answer), or
        None; such cells are recorded as skipped with the reason."""
        return None

    def close(self) -> None:
        """Release what the backend holds across its cells (a client, a temp dir); called last."""

    # -- shared ------------------------------------------------------------------------------
    # Called between bring-up steps: the cell sets it to raise an interrupt that Python dropped
    # while a domain was being started (msdbench/cell.py, Interrupts).
    between_steps = staticmethod(lambda: None)

    def up(self, manifest: Manifest) -> "Deployment":
        dep = Deployment(self, manifest)
        try:
            self.hosts = dep.hosts = HostSet(manifest)
            self.before_hosts(manifest, dep.hosts)
            dep.hosts.up()
            self.prepare(manifest)
            for d in manifest.domains:
                dep.handles[d.name] = self.start_domain(manifest, d.name)
                self.between_steps()
            for h in dep.handles.values():
                host, port = split_address(h.control_address)
                h.control = ThriftClient(idl.load("control").Control, host, port,
                                         timeout=CONTROL_TIMEOUT_S)
                h.hello = json.loads(dep.call(h, "hello"))
            endpoints = {svc: addrs for h in dep.handles.values()
                         for svc, addrs in h.hello["services"].items()}
            for e in manifest.edges:
                if e.transport != "direct":
                    e.address = self.seen_from(manifest.service(e.caller).domain,
                                               endpoints[e.callee][e.transport])
            for h in dep.handles.values():
                seen = {svc: {t: self.seen_from(h.name, a) for t, a in addrs.items()}
                        for svc, addrs in endpoints.items()}
                dep.call(h, "connect", json.dumps(seen))
        except BaseException:
            dep.down()
            raise
        return dep


class Deployment:
    """A manifest brought up; a context manager whose exit always tears everything down."""

    def __init__(self, backend: Backend, manifest: Manifest):
        self.backend = backend
        self.manifest = manifest
        self.handles: dict[str, DomainHandle] = {}
        self.hosts: HostSet | None = None
        self.started_ns = time.time_ns()

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def call(self, h: DomainHandle, method: str, *args, timeout: float | None = None):
        """A control call that turns a dead or failing domain into a BackendError that names it."""
        if timeout is not None:
            h.control.sock.settimeout(timeout)
        try:
            return getattr(h.control, method)(*args)
        except idl.load("control").ControlError as e:
            raise BackendError(f"domain {h.name!r}{self._on_host(h)}: {method} failed: {e.why}") from None
        except Exception as e:
            status = self.backend.exit_status(h)
            why = f"it ended ({status})" if status else f"{type(e).__name__}: {e}"
            raise BackendError(f"domain {h.name!r}{self._on_host(h)}: {method}: {why}\n"
                               f"--- last lines of its log ---\n{self.backend.log_tail(h)}") from None
        finally:
            if timeout is not None:
                h.control.sock.settimeout(CONTROL_TIMEOUT_S)

    def _on_host(self, h: DomainHandle) -> str:
        host = self.manifest.domain(h.name).host
        return "" if host == "local" or not self.hosts else f" on {self.hosts[host].where()}"

    def client_handle(self) -> DomainHandle:
        return self.handles[self.manifest.client_domain().name]

    def run_driver(self, spec: dict) -> dict:
        deadline = spec.get("deadline_s")
        timeout = deadline + 30 if deadline else None
        return json.loads(self.call(self.client_handle(), "run_driver", json.dumps(spec),
                                    timeout=timeout))

    def handle_of(self, service: str) -> DomainHandle:
        return self.handles[self.manifest.service(service).domain]

    def counters(self, service: str) -> dict:
        return json.loads(self.call(self.handle_of(service), "counters", service))

    def set_fault(self, service: str, fault: str, count: int = 1) -> None:
        self.call(self.handle_of(service), "set_fault", service, fault, count)

    def probe(self) -> dict[str, dict]:
        """Each domain's control stats, or {"error": why} for one that ended or does not answer
        within PROBE_TIMEOUT_S."""
        out = {}
        for name, h in self.handles.items():
            status = self.backend.exit_status(h)
            if status:
                out[name] = {"error": f"ended ({status})"}
                continue
            try:
                out[name] = json.loads(self.call(h, "stats", timeout=PROBE_TIMEOUT_S))
            except BackendError as e:
                out[name] = {"error": str(e).splitlines()[0]}
        return out

    def culprits(self, probed: dict[str, dict] | None = None) -> list[dict]:
        """The domains that died or stopped answering: which (its services, where it runs), how
        (exit status, signal, or the control call that failed) and the last lines of its log.
        `probed`: what `probe()` returned just before, else it is asked now."""
        probed = self.probe() if probed is None else probed
        out = []
        for name, h in self.handles.items():
            status = self.backend.exit_status(h)
            if not status and "error" in probed.get(name, {}):
                status = self._ended_within(h, ENDING_GRACE_S)
            if status:
                why = status
            elif "error" in probed.get(name, {}):
                why = f"not answering (control stats: {probed[name]['error']})"
            else:
                continue
            out.append({"domain": name, "services": self.manifest.domain(name).services,
                        "host": self.manifest.domain(name).host, "where": self.backend.where(h),
                        "status": why, "log_tail": self.backend.log_tail(h, LOG_TAIL_LINES)})
        return out

    def _ended_within(self, h: DomainHandle, seconds: float) -> str | None:
        """A dying process closes its sockets before its parent can see it end: a control call
        that failed may precede the exit status by a moment."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            status = self.backend.exit_status(h)
            if status:
                return status
            time.sleep(0.02)
        return None

    def placement(self) -> dict:
        """Where each domain really ran: the affinity it reported after pinning."""
        return {name: {"pid": h.hello.get("pid"), "affinity": h.hello.get("affinity")}
                for name, h in self.handles.items()}

    def down(self) -> None:
        try:
            for h in list(self.handles.values()):
                if h.control is not None:
                    try:
                        h.control.shutdown()
                    except Exception:
                        pass
                    h.control.close()
            for h in list(self.handles.values()):
                try:
                    self.backend.stop_domain(h)
                except Exception:
                    pass
            self.handles.clear()
        finally:
            try:
                self.backend.teardown(self.manifest)
            finally:
                if self.hosts is not None:
                    self.hosts.down()
