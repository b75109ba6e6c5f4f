"""One edge's binding, by transport name: how a callee listens and how a caller reaches it.

The manifest names a transport per edge (planning chose it); this is the one place that maps the
name to code, so a new transport is one entry here.
"""

from __future__ import annotations

from msdbench.services import ServiceKind
from msdbench.transports.codec import DEFAULT_LIMITS, Limits
from msdbench.transports.thrift_tcp import (DEFAULT_MAX_CONNECTIONS, ThriftClient, ThriftServer,
                                            split_address)

TRANSPORTS = ("thrift-tcp", "direct", "shm")


class DirectStub:
    """The `direct` binding: the callee's handler itself, called in place (arguments and results
    by reference, no serialization). Its IDL methods are the handler's bound methods, copied onto
    this object once, so a call costs what calling the handler does; `close()` does nothing (the
    callee is not the caller's to end). Only the callee's IDL methods are exposed, as on a stub of
    any other transport (not its control methods such as counters)."""

    def __init__(self, kind: ServiceKind, handler):
        self.handler = handler
        for name in kind.thrift_service().thrift_services:
            setattr(self, name, getattr(handler, name))

    def close(self) -> None:
        pass


def direct(kind: ServiceKind, handler) -> DirectStub:
    """A stub for a callee in the caller's own domain."""
    return DirectStub(kind, handler)


def serve_threads(kind: ServiceKind) -> int:
    """Calls a TCP service serves at once: one (in its loop's thread, no hand-off), except a
    service that forwards to a list of callees (the load balancer), whose calls to different
    callees must overlap as they would with a thread per connection."""
    return 8 if any(arg.endswith("s") for arg in kind.deps) else 1


def listen(transport: str, kind: ServiceKind, host: str, limits: Limits = DEFAULT_LIMITS,
           max_connections: int = DEFAULT_MAX_CONNECTIONS, port: int = 0):
    """A listener bound now and started later with `.start(handler)`; `.close()` ends it.
    `port` (thrift-tcp): 0 = any free port."""
    if transport == "thrift-tcp":
        return ThriftServer(kind.thrift_service(), host, port, limits=limits,
                            max_connections=max_connections, threads=serve_threads(kind))
    if transport == "shm":
        from msdbench.transports.shm_thrift import ShmThriftServer

        return ShmThriftServer(kind.thrift_service(), limits=limits)
    raise ValueError(f"transport: {transport!r} has no listener; known: {TRANSPORTS}")


def advertise(transport: str, listener, host: str) -> str:
    """The address a peer uses to reach `listener`."""
    if transport == "thrift-tcp":
        return f"{host}:{listener.address[1]}"
    return listener.address


def connect(transport: str, kind: ServiceKind, address: str, timeout: float | None = None):
    """A stub with the callee's IDL methods and `.close()`."""
    if transport == "thrift-tcp":
        host, port = split_address(address)
        return ThriftClient(kind.thrift_service(), host, port, timeout=timeout)
    if transport == "shm":
        from msdbench.transports.shm_thrift import ShmThriftClient

        return ShmThriftClient(kind.thrift_service(), address)
    raise ValueError(f"transport: {transport!r} cannot be connected to; known: {TRANSPORTS}")
