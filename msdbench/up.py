"""`msdbench up`: one cell's services, up for a person or a foreign client to call.

The cell is planned as for a measurement, with one change: the client is whoever connects, so the
edge into the entry service is Thrift over TCP whatever the platform (the other edges are as the
platform plans them: a `specialized` cell keeps its in-domain calls direct and its cross-domain
calls in shared memory, which no foreign client can reach). Once every service's listener answers,
the addresses file is written (atomically):

    {"lb": "127.0.0.1:40123", "worker0": "127.0.0.1:40125", ..., "wire": {...}}

every key but "wire" a service instance reachable over Thrift/TCP at host:port, "wire" the format
those ports speak (see README, "Wire format"), their limits, and which IDL service each implements. The services
stay up until Ctrl-C, SIGTERM or `seconds`; then the cell is torn down as after any measurement and
the file removed. A domain that dies meanwhile ends `up` with the culprit named (exit status 1).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from msdbench.backends import make_backend
from msdbench.backends.base import BackendError, Deployment
from msdbench.cell import interrupts_unwind
from msdbench.culprits import culprits_report
from msdbench.idl import IDL_DIR
from msdbench.manifest import Manifest
from msdbench.results import atomic_write_json
from msdbench.scratch import work_dir
from msdbench.services import KINDS
from msdbench.transports.codec import Limits
from msdbench.transports.thrift_tcp import DEFAULT_MAX_CONNECTIONS

WIRE_KEY = "wire"
ANSWER_TIMEOUT_S = 30.0
WATCH_EVERY_S = 0.5


def wire_format(manifest: Manifest, services: list[str]) -> dict:
    """What a foreign Thrift client needs besides an address."""
    idl = {}
    for name in services:
        kind = KINDS[manifest.service(name).kind]
        idl[name] = {"idl": str(IDL_DIR / f"{kind.idl}.thrift"), "service": kind.service}
    limits = Limits.from_settings(manifest.settings.get("wire"))
    return {"protocol": "binary: strict or non-strict requests, strict replies",
            "transport": "buffered or framed, detected per connection",
            "limits": {"max_message_bytes": limits.max_message_bytes,
                       "max_container_len": limits.max_container_len,
                       "max_connections": int((manifest.settings.get("wire") or {}).get(
                           "max_connections", DEFAULT_MAX_CONNECTIONS))},
            "services": idl}


def for_foreign_client(manifest: Manifest) -> Manifest:
    """The manifest with the client's edge on Thrift/TCP (so the entry service listens on TCP)."""
    for e in manifest.edges_from(manifest.client):
        e.transport = "thrift-tcp"
    return manifest


def tcp_addresses(dep: Deployment) -> dict[str, str]:
    """Every Thrift/TCP listener of the deployment, as the harness's host reaches it."""
    out = {}
    for h in dep.handles.values():
        for svc, by_transport in h.hello["services"].items():
            if "thrift-tcp" in by_transport:
                out[svc] = dep.backend.reachable(h, by_transport["thrift-tcp"])
    return out


def _wait_answering(addresses: dict[str, str]) -> None:
    """Until a TCP connection to every address is accepted (the listeners run)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    for name, address in addresses.items():
        host, _, port = address.rpartition(":")
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise BackendError(f"service {name} at {address} does not answer: {e}") from None
                time.sleep(0.05)


def _hold(dep: Deployment, seconds: float | None) -> bool:
    """Until `seconds` pass or Ctrl-C/SIGTERM (True), or a domain ends (False, culprit printed)."""
    end = time.monotonic() + seconds if seconds else None
    try:
        while end is None or time.monotonic() < end:
            if any(dep.backend.exit_status(h) for h in dep.handles.values()):
                print("msdbench up: a domain ended: " + culprits_report(dep.culprits()),
                      file=sys.stderr)
                return False
            time.sleep(WATCH_EVERY_S if end is None
                       else max(0.0, min(WATCH_EVERY_S, end - time.monotonic())))
    except KeyboardInterrupt:  # the way to end `up`: not an error
        pass
    return True


def up(manifest: Manifest, addresses_path: str | Path, seconds: float | None = None,
       backend_options: dict | None = None, log=print) -> int:
    """Bring the cell up, write the addresses, hold until interrupted or `seconds`; 0 when it
    ended as asked, 1 when a domain died meanwhile (named in the log)."""
    manifest = for_foreign_client(manifest)
    addresses_path = Path(addresses_path)
    with interrupts_unwind(), work_dir("up") as work:
        backend = make_backend(manifest.backend, work, **(backend_options or {}))
        skip = backend.unavailable_reason()
        if skip:
            raise BackendError(skip)
        try:
            with backend.up(manifest) as dep:
                addresses = tcp_addresses(dep)
                _wait_answering(addresses)
                atomic_write_json(addresses_path, {**addresses,
                                                   WIRE_KEY: wire_format(manifest, list(addresses))})
                log(f"msdbench up: {', '.join(addresses)} answer; addresses in {addresses_path}"
                    + (f"; down in {seconds:g} s" if seconds else "; Ctrl-C or SIGTERM ends them"))
                if not _hold(dep, seconds):
                    return 1
        finally:
            addresses_path.unlink(missing_ok=True)
            backend.close()
    log("msdbench up: torn down")
    return 0
