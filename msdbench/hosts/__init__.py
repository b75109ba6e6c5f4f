"""Hosts: *where* an isolation domain runs. A registry of its own, apart from the backends.

A backend says what realises a domain (an OS process, a container); a host kind says where:

  local   this machine (the default; deployments 1 and 2)
  netns   an *emulated host* on this machine: a network namespace msdbench creates, joined to this
          machine by its own veth link (addresses from a private range the config chooses),
          optionally rate-shaped with tbf (see msdbench/hosts/netns.py)
  ssh     a real remote host, ``ssh://user@host[:port]``; msdbench must be installed there in the
          same version (checked at bring-up; see msdbench/hosts/ssh.py)
  board   a MicroPython board (real or emulated): the device backend's groups run there
          (msdbench/hosts/board.py)
  vm      a QEMU guest msdbench builds and boots, itself on a host (`on:` local or a netns host;
          see msdbench/vm/host.py): deployments 3 and 4

backend x host kind is a matrix, not a list of special cases: the process backend asks the host
for the command line that runs a Python module there (`command`) and for the address its domains
bind and advertise (`address`); it knows nothing else about the host.

The manifest carries the hosts a cell uses, by name, and each domain names its host::

    hosts:
      local: {kind: local}
      edge1: {kind: netns, rate: 100mbit}          # the config's entry, copied by planning
    domains:
      - {name: client, services: [client], host: edge1, cpus: [0]}

At bring-up `HostSet` brings every named host up (the other hosts first, then `local`, whose
address is the one the others reach it at), writes each resolved address into
``manifest.hosts[name]["address"]``, and takes them all down again at teardown (after every domain
has stopped; also after a failure, Ctrl-C and SIGTERM). `facts()` is what a cell's metadata
records per host: kind, address, kernel, CPU model, link shaping. Two hosts that both hang off
this machine (the server side's guest and the client's guest or namespace: `server_host` on
deployments 3-5) reach each other through it: `HostSet` opens the forwarding between their
interfaces here (msdbench/hosts/forward.py) once both are up, and closes it first at teardown.

A host kind is one subclass of `Host` registered in `KINDS` (a `vm` kind is just one more)::

    class Host:
        kind: str                       # its name in config (`hosts.<name>.kind`)
        FIELDS: dict[str, str]          # its config keys besides `kind`, and what each means
        def check_spec(self)            # raise HostError naming `hosts.<name>.<field>`
        def up(self)                    # exist and be reachable; set self.address; raise
                                        #   HostUnavailable when it cannot be reached (the cell is
                                        #   then recorded as skipped, with the reason)
        def down(self)                  # undo up(); idempotent; never raises
        def command(self, args) -> list # argv that runs `python <args>` on the host
        def facts(self) -> dict         # kernel, cpu_model, python, msdbench version, link ...
        def local_device(self)          # the interface of this machine it is reached through
                                        #   (a guest's bridge, a namespace's veth), or None
        def cpu_s(self)                 # CPU seconds this machine spent running the host (a
                                        #   guest's QEMU), or None: its domains' own count

Everything a host kind creates is named ``msdb-<owner>...`` (`owner_tag()`: the harness's pid and
start time), so that `msdbench clean` can tell a dead run's leftovers from a live run's.
"""

from __future__ import annotations

import re
import socket

from msdbench.lifetime import owner_tag

HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")


class HostError(ValueError):
    """A host entry that cannot work; the message names the host and the field."""


class HostUnavailable(RuntimeError):
    """A host that cannot be reached (or brought up) here and now: its cells are skipped."""


class Host:
    kind = "abstract"
    FIELDS: dict[str, str] = {}

    def __init__(self, name: str, spec: dict):
        self.name = name
        self.spec = dict(spec)
        self.address: str | None = self.spec.get("address")
        self.owner = owner_tag()

    def field(self, key: str) -> str:
        return f"hosts.{self.name}.{key}"

    def where(self) -> str:
        """How messages name this host."""
        return f"host {self.name!r} ({self.kind})"

    def check_spec(self) -> None:
        pass

    def up(self) -> None:
        pass

    def down(self) -> None:
        pass

    def command(self, args: list[str]) -> list[str]:
        raise NotImplementedError

    def facts(self) -> dict:
        return {"kind": self.kind, "address": self.address}

    def local_device(self) -> str | None:
        return None

    def cpu_s(self) -> float | None:
        return None


def _kinds() -> dict[str, type[Host]]:
    from msdbench.hosts.board import BoardHost
    from msdbench.hosts.local import LocalHost
    from msdbench.hosts.netns import NetnsHost
    from msdbench.hosts.ssh import SshHost
    from msdbench.vm.host import VmHost

    return {k.kind: k for k in (LocalHost, NetnsHost, SshHost, BoardHost, VmHost)}


KINDS: dict[str, type[Host]] = {}


def kinds() -> dict[str, type[Host]]:
    if not KINDS:
        KINDS.update(_kinds())
    return KINDS


def host_entry(spec):
    """A host's config entry as written: YAML 1.1 (pyyaml, so Snakemake's config too) reads the
    key `on` (a VM's host) as the boolean true, and JSON then spells it "true"; take it back."""
    if not isinstance(spec, dict):
        return spec
    return {("on" if k is True or k == "true" else k): v for k, v in spec.items()}


def make_host(name: str, spec: dict | None) -> Host:
    """A host object from its config entry; HostError (naming host and field) if it is wrong."""
    if not HOST_NAME.match(str(name)):
        raise HostError(f"hosts.{name}: a host name is 1-16 of a-z, 0-9 and '-', starting with a letter")
    spec = host_entry(spec)
    if not isinstance(spec, dict):
        raise HostError(f"hosts.{name}: expected a mapping with at least `kind`")
    kind = spec.get("kind", "local")
    known = kinds()
    if kind not in known:
        raise HostError(f"hosts.{name}.kind: {kind!r} is not one of {', '.join(map(repr, known))}")
    cls = known[kind]
    unknown = set(spec) - set(cls.FIELDS) - {"kind"}
    if unknown:
        raise HostError(f"hosts.{name}: unknown key(s) {sorted(unknown)} for kind {kind!r}; "
                        f"allowed: {sorted(cls.FIELDS)}")
    host = cls(name, spec)
    host.check_spec()
    return host


def check_hosts(hosts: dict) -> None:
    """Check every entry of a config's `hosts:` section (without bringing anything up)."""
    for name, spec in (hosts or {}).items():
        make_host(name, spec)


def source_address(toward: str) -> str:
    """The address of this machine that packets to `toward` leave from (routing decides; no packet
    is sent): what a host on the other end of the link reaches this machine at."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((toward, 9))
        except OSError as e:
            raise HostUnavailable(f"host 'local': no route from this machine to {toward}: {e}") \
                from None
        return s.getsockname()[0]


class HostSet:
    """The hosts a manifest names, brought up together and always taken down together."""

    def __init__(self, manifest):
        self.manifest = manifest
        used = {d.host for d in manifest.domains}
        specs = dict(manifest.hosts or {})
        for name in used:
            specs.setdefault(name, {"kind": "local"} if name == "local" else None)
        self.hosts = {name: make_host(name, specs[name]) for name in sorted(used)}
        self._up: list[Host] = []
        self.forwarding: dict[tuple[str, str], "Forwarding"] = {}  # open now
        self.joined: dict[tuple[str, str], dict] = {}  # what was opened (facts outlive teardown)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def up(self) -> "HostSet":
        others = [h for h in self.hosts.values() if h.kind != "local"]
        try:
            for h in others + [h for h in self.hosts.values() if h.kind == "local"]:
                self._up.append(h)
                if h.kind == "local" and not h.address:
                    # Reachable from the other hosts: the address facing the first of them.
                    h.address = source_address(others[0].address) if others else "127.0.0.1"
                h.up()
                self.manifest.hosts[h.name] = dict(h.spec, kind=h.kind, address=h.address)
            self._join()
        except BaseException:
            self.down()
            raise
        return self

    def _join(self) -> None:
        """Every two hosts hanging off this machine reach each other through it."""
        from msdbench.hosts.forward import ForwardError, Forwarding

        devices = {n: h.local_device() for n, h in self.hosts.items() if h.kind != "local"}
        names = sorted(n for n, d in devices.items() if d)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                fwd = self.forwarding[(a, b)] = Forwarding(devices[a], devices[b])
                try:
                    fwd.open(self.hosts[a].owner)
                except ForwardError as e:
                    raise HostUnavailable(f"hosts {a!r} and {b!r}: {e}") from None
                self.joined[(a, b)] = fwd.facts()
                for one, other in ((a, b), (b, a)):  # a VM's watchdog cuts both (msdbench/vm/host.py)
                    if hasattr(self.hosts[one], "peers"):
                        self.hosts[one].peers.append(self.hosts[other].address)

    def down(self) -> None:
        while self.forwarding:
            self.forwarding.popitem()[1].close()
        while self._up:
            self._up.pop().down()

    def facts(self) -> dict:
        out = {name: h.facts() for name, h in self.hosts.items()}
        for (a, b), fwd in self.joined.items():
            out[a].setdefault("forwarding", []).append(fwd | {"peer": b})
            out[b].setdefault("forwarding", []).append(fwd | {"peer": a})
        return out
