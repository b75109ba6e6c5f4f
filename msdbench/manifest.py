"""The manifest: one value that says what runs where and how each call travels.

Planning writes it (pure, from a cell of the matrix), backends bring it up and down, drivers read
where their client sits. Addresses are left empty by planning and filled in at bring-up, when
each service has bound its port: the resolved manifest is what a cell's metadata records.

`hosts` names the hosts the domains run on (each domain's `host` is a key of it; see
msdbench/hosts/__init__.py): planning copies the config's entry, bring-up adds its `address`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml


@dataclass
class Domain:
    name: str
    services: list[str]
    host: str = "local"
    cpus: list[int] | None = None  # None: not pinned


@dataclass
class Service:
    name: str      # instance name, e.g. "worker3"
    kind: str      # a key of msdbench.services.KINDS, or "client"
    domain: str


@dataclass
class Edge:
    caller: str    # service instance names
    callee: str
    transport: str  # thrift-tcp | direct | shm
    address: str | None = None  # filled at bring-up


@dataclass
class Manifest:
    suite: str
    platform: str
    isolation: str
    deployment: int
    backend: str
    domains: list[Domain]
    services: list[Service]
    edges: list[Edge]
    client: str = "client"         # the client's service name
    settings: dict = field(default_factory=dict)  # what the driver needs: payload, requests, ...
    hosts: dict = field(default_factory=lambda: {"local": {"kind": "local"}})  # name -> entry

    def domain(self, name: str) -> Domain:
        for d in self.domains:
            if d.name == name:
                return d
        raise KeyError(f"no domain named {name!r} in the manifest")

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"no service named {name!r} in the manifest")

    def client_domain(self) -> Domain:
        return self.domain(self.service(self.client).domain)

    def edges_from(self, caller: str) -> list[Edge]:
        return [e for e in self.edges if e.caller == caller]

    def server_domains(self) -> list[Domain]:
        """Domains that serve something (every domain except a client-only one)."""
        return [d for d in self.domains if d.services != [self.client]]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        d = dict(d)
        d["domains"] = [Domain(**x) for x in d["domains"]]
        d["services"] = [Service(**x) for x in d["services"]]
        d["edges"] = [Edge(**x) for x in d["edges"]]
        return cls(**d)

    def dumps(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from msdbench.results import atomic_write_text

        atomic_write_text(path, self.dumps())

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))  # YAML, or JSON (a subset)
