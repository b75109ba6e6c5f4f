"""Planning: one cell of the matrix -> a manifest. Pure: no processes, no sockets, no files.

The two mappings of the paper: services -> isolation domains (`isolation`) and domains -> hosts
(`deployment`, where the client sits). The platform decides how each edge travels. What a suite
deploys (its services, its entry point, its isolations) comes from the suite registry.
"""

from __future__ import annotations

from msdbench import suites
from msdbench.axes import OTHER_HOST_DEPLOYMENTS, Cell, PlanError, choose
from msdbench.manifest import Domain, Edge, Manifest, Service
from msdbench.suites.micro import contradiction as micro_contradiction  # noqa: F401 (its old home)

SUITES = tuple(suites.SUITES)
PLATFORMS = ("linux", "specialized")
BACKENDS = ("process", "docker", "device")
ISOLATIONS = {name: s.isolations for name, s in suites.SUITES.items() if s.services}
DEPLOYMENTS = {
    1: "client inside the entry service's domain",
    2: "client in its own domain, same host",
    3: "client in its own VM, same host",
    4: "client in a VM on another host",
    5: "client on another host, bare metal",
}
SUPPORTED_DEPLOYMENTS = (1, 2, 3, 4, 5)
# What the client's host must be, per deployment: (allowed kinds, where a VM must run, example entry)
CLIENT_HOST_KINDS = {
    3: (("vm",), "local", "{kind: vm, on: local}"),
    4: (("vm",), "other", "{kind: vm, on: edge1} (edge1 a netns host)"),
    5: (("netns", "ssh"), None, "{kind: netns} (or kind ssh)"),
}
# The backends that can start the client's domain there: a container in a VM is not built.
OTHER_HOST_BACKENDS = {3: ("process",), 4: ("process",), 5: ("process", "docker")}
# On a board (the device backend) the client sits in the entry service's group (1), in a group of
# its own (2), or on another node across the serial link (4).
DEVICE_DEPLOYMENTS = (1, 2, 4)
LINK_KEYS = ("link_rate_bps", "call_deadline_s", "retry_s")  # device settings of the link
PINNINGS = {
    "same-core": "every domain and the client on CPU 0 (the original's one-vCPU runs)",
    "split": "the client on CPU 0, every server domain on CPU 1",
    "none": "not pinned: the scheduler decides (numbers jump between runs)",
}

__all__ = ["Cell", "PlanError", "check_cell", "plan", "SUITES", "PLATFORMS", "BACKENDS",
           "ISOLATIONS", "DEPLOYMENTS", "SUPPORTED_DEPLOYMENTS", "PINNINGS"]


def check_cell(cell: Cell) -> None:
    """Raise PlanError unless the cell can be planned and run by what exists today."""
    suite = suites.get(cell.suite)
    choose("platform", cell.platform, PLATFORMS)
    choose("backend", cell.backend, BACKENDS)
    choose(f"isolation (suite {cell.suite})", cell.isolation, suite.isolations)
    choose("deployment", cell.deployment, tuple(DEPLOYMENTS))
    if cell.backend == "device":
        if cell.platform != "specialized":
            raise PlanError(f"platform: {cell.platform!r} cannot run on a board (the device "
                            "backend runs 'specialized': direct calls in a group, marshalled "
                            "calls across groups, the serial link across nodes)")
        choose("deployment (backend device)", cell.deployment, DEVICE_DEPLOYMENTS)
    elif cell.deployment in OTHER_HOST_DEPLOYMENTS and cell.backend not in OTHER_HOST_BACKENDS[
            cell.deployment]:
        raise PlanError(
            f"deployment {cell.deployment} with backend {cell.backend!r}: "
            + ("the client's VM is started by the process backend only; use backend 'process'"
               if cell.deployment in (3, 4) else
               "use backend 'process' or 'docker'"))
    for key, value in suite.fixed.items():
        if getattr(cell, key) != value:
            raise PlanError(f"{key}: the {cell.suite} suite runs at {key} {value} only, "
                            f"not {getattr(cell, key)!r}")
    suite.check(cell)


def _group(isolation: str, svc: Service) -> str:
    """Mapping 1: the isolation domain a service belongs to (paper fig 3)."""
    if isolation == "co-located":
        return "server"
    if isolation == "isolated":
        return svc.name
    # tiered: LB + workers | user DB + payload DB | read endpoint
    return {"lb": "front", "worker": "front", "userdb": "data", "payloaddb": "data",
            "reader": "read"}[svc.kind]


def _edges(services: list[Service]) -> list[tuple[str, str]]:
    """Who calls whom: the client calls the entry point (the suite's first service); the rest
    follows the service kinds."""
    from msdbench.services import KINDS

    pairs = [("client", services[0].name)]
    for s in services:
        if s.kind not in KINDS:
            continue
        for kind in KINDS[s.kind].deps.values():
            pairs += [(s.name, t.name) for t in services if t.kind == kind]
    return pairs


def _transport(platform: str, caller: Domain, callee: Domain, backend: str = "process") -> str:
    """The platform axis: linux sends every call through Thrift over TCP, even inside a domain;
    specialized picks the cheapest binding the placement allows (as Ambience's lidl does).
    On a board: a direct call in a group, a marshalled copy across groups, the serial link
    across nodes."""
    if backend == "device":
        if caller.host != callee.host:
            return "serial"
        return "direct" if caller.name == callee.name else "marshal"
    if platform == "linux" or caller.host != callee.host:
        return "thrift-tcp"
    return "direct" if caller.name == callee.name else "shm"


def _cpus(pinning: str, is_client_only: bool) -> list[int] | None:
    if pinning == "none" or pinning == "board":
        return None
    if pinning == "same-core":
        return [0]
    return [0] if is_client_only else [1]


def client_host(cell: Cell, settings: dict) -> tuple[str, dict]:
    """Mapping 2, for the deployments on another host: which host the client goes to and its
    entry (config: `deployments: {5: {client_host: NAME}}` and `hosts: {NAME: {kind: ...}}`)."""
    from msdbench.hosts import HostError, host_entry, make_host

    if cell.deployment not in OTHER_HOST_DEPLOYMENTS or cell.backend == "device":
        return "local", {}  # a board's deployment 4 is another node on its serial link
    name = settings.get("client_host")
    hosts = settings.get("hosts") or {}
    kinds, vm_on, example = CLIENT_HOST_KINDS[cell.deployment]
    if not name:
        raise PlanError(f"deployment {cell.deployment} ({DEPLOYMENTS[cell.deployment]}) needs the "
                        f"client's host named: `deployments: {{{cell.deployment}: {{client_host: "
                        f"NAME}}}}` and `hosts: {{NAME: {example}}}`")
    if name not in hosts or name == "local":
        raise PlanError(f"deployments.{cell.deployment}.client_host: {name!r} is not a host of "
                        f"`hosts:` other than 'local' (defined: {sorted(hosts) or 'none'})")
    spec = host_entry(dict(hosts[name]))
    on = spec.get("on", "local")
    if spec.get("kind") == "vm" and on != "local":
        if on not in hosts:
            raise PlanError(f"hosts.{name}.on: {on!r} is not a host of `hosts:` "
                            f"(defined: {sorted(hosts)})")
        spec["on_host"] = dict(hosts[on])  # the VM's own host, brought up by the VM host
    try:
        host = make_host(name, spec)
    except HostError as e:
        raise PlanError(str(e)) from None
    if host.kind not in kinds:
        raise PlanError(f"deployments.{cell.deployment}.client_host: {name!r} is kind {host.kind!r}; "
                        f"deployment {cell.deployment} ({DEPLOYMENTS[cell.deployment]}) puts the "
                        f"client on a host of kind {' or '.join(map(repr, kinds))}: {example}")
    if host.kind == "vm" and (on == "local") != (vm_on == "local"):
        raise PlanError(f"hosts.{name}.on: {on!r}; deployment {cell.deployment} "
                        f"({DEPLOYMENTS[cell.deployment]}) needs a VM "
                        + ("on local (this machine)" if vm_on == "local" else
                           "on another host (a netns host's name)"))
    return name, spec


# Where the server side may go instead of this machine (`deployments: {N: {server_host: NAME}}`):
# the paper's server VM. Deployments 1 and 2 put every domain there (the client too); in 3-5 the
# client's host (its own guest, a namespace, a guest in a namespace) reaches the server's guest
# through this machine, which forwards between the two (msdbench/hosts/forward.py): so the client's
# host must be one of this machine's (an ssh host would need a route to the guest's private
# address on its side: not built).
SERVER_VM_CLIENT_KINDS = ("vm", "netns")


def server_host(cell: Cell, settings: dict) -> tuple[str, dict]:
    """Mapping 2 for the server side: "local" (the default: this machine, bare), or the VM that
    `deployments.N.server_host` names, with its entry."""
    from msdbench.hosts import HostError, host_entry, make_host

    name = settings.get("server_host") or "local"
    if name == "local":
        return "local", {}
    field = f"deployments.{cell.deployment}.server_host"
    if cell.backend != "process":
        raise PlanError(f"{field}: {name!r} with backend {cell.backend!r}: domains in a VM are "
                        "started by the process backend only; use backend 'process'")
    hosts = settings.get("hosts") or {}
    if name not in hosts:
        raise PlanError(f"{field}: {name!r} is not a host of `hosts:` "
                        f"(defined: {sorted(hosts) or 'none'})")
    spec = host_entry(dict(hosts[name]))
    try:
        host = make_host(name, spec)
    except HostError as e:
        raise PlanError(str(e)) from None
    if host.kind != "vm" or spec.get("on", "local") != "local":
        raise PlanError(f"{field}: {name!r} is kind {host.kind!r} on {spec.get('on', 'local')!r}; "
                        "the server side goes to a host of kind 'vm' on local: "
                        "`hosts: {NAME: {kind: vm, on: local}}`")
    if cell.deployment in OTHER_HOST_DEPLOYMENTS:
        client = settings.get("client_host")
        if client == name:
            raise PlanError(f"{field}: {name!r} is the client's host too; deployment "
                            f"{cell.deployment} ({DEPLOYMENTS[cell.deployment]}) puts the client "
                            "on a host of its own (every domain in one guest is deployment 2 "
                            "with server_host)")
        kind = host_entry(dict(hosts.get(client) or {})).get("kind")
        if client and kind not in SERVER_VM_CLIENT_KINDS:
            raise PlanError(f"{field}: {name!r} with client_host {client!r} of kind {kind!r}: the "
                            "client reaches the server's guest through this machine, from a host "
                            f"of kind {' or '.join(map(repr, SERVER_VM_CLIENT_KINDS))} only (an ssh "
                            "host would need a route to the guest's private address: not built); "
                            "leave server_host out there")
    return name, spec


def plan(cell: Cell, settings: dict | None = None) -> Manifest:
    """The manifest of one cell. `settings` carries the run's knobs (pinning, workers, requests,
    payload_mode, for deployments 3-5 `client_host`, optionally `server_host`, and their
    `hosts` entries); they are copied into the manifest for the driver and the record."""
    settings = dict(settings or {})
    check_cell(cell)
    chost, chost_spec = client_host(cell, settings)
    shost, shost_spec = ("local", {}) if cell.backend == "device" else server_host(cell, settings)
    suite = suites.get(cell.suite)
    device = cell.backend == "device"
    pinning = "board" if device else settings.get("pinning", "same-core")
    if not device:
        choose("pinning", pinning, tuple(PINNINGS))
    settings = suite.plan_settings(cell, settings)

    services = suite.services(settings)
    order: list[str] = []
    for s in services:
        s.domain = _group(cell.isolation, s)
        if s.domain not in order:
            order.append(s.domain)
    entry = services[0]
    client = Service("client", "client", entry.domain if cell.deployment == 1 else "client")
    edges_of = _edges(services)
    services.append(client)
    if cell.deployment != 1:
        order.append("client")

    domains = []
    for name in order:
        members = [s.name for s in services if s.domain == name]
        host = chost if members == ["client"] and chost != "local" else shost
        cpus = _cpus(pinning, members == ["client"])
        if host == shost != "local" and cpus:
            cpus = [0]  # the guest's one vCPU; QEMU itself is pinned to the bare host's CPUs
        if device:  # the server side on the board; the client too, unless across the link
            host = "local" if members == ["client"] and cell.deployment == 4 else "board"
        domains.append(Domain(name, members, host, cpus))
    by_name = {d.name: d for d in domains}
    by_service = {s.name: by_name[s.domain] for s in services}
    edges = [Edge(a, b, _transport(cell.platform, by_service[a], by_service[b], cell.backend))
             for a, b in edges_of]

    if not device:  # a board pins nothing: its groups share its one CPU
        settings["pinning"] = pinning
    hosts = {"local": dict((settings.get("hosts") or {}).get("local") or {"kind": "local"})}
    if chost != "local":
        hosts[chost] = dict(chost_spec)
        if hosts[chost].get("kind") == "vm":  # QEMU runs where the client would have run
            hosts[chost].setdefault("cpus", by_name["client"].cpus)
    if shost != "local":  # QEMU runs where its domains would have run: every CPU they had
        cpus = sorted({c for d in domains if d.host == shost
                       for c in _cpus(pinning, d.services == ["client"]) or []})
        hosts[shost] = dict(shost_spec) | {"cpus": shost_spec.get("cpus", cpus or None)}
    if device:  # the board is a host (kind board); the link's settings go to the backend
        from msdbench.hosts.board import BoardHost

        d = settings.get("device") or {}
        hosts["board"] = {"kind": "board"} | {k: d[k] for k in BoardHost.FIELDS if k in d}
        settings["backend_options"] = {"link": {k: d[k] for k in LINK_KEYS if k in d}}
    return Manifest(cell.suite, cell.platform, cell.isolation, cell.deployment, cell.backend,
                    domains, services, edges, "client", settings, hosts)
