"""The guest's network path: a tap device on a bridge of the host the VM is placed on.

Each booted guest gets its own bridge ``msdv<id>b`` holding a /30 from 10.214.0.0/16: the bridge
has the first address (the host side, where the server side listens for the guest), the guest the
second (from the kernel command line), and the tap ``msdv<id>t`` that QEMU's virtio-net uses is the
bridge's port. A real network path (virtio-net, tap, bridge, the host's IP stack); no user-mode
networking. When the VM's host is a network namespace (deployment 4), bridge and tap are made in
that namespace, the namespace forwards, and this machine routes the /30 through it, so the guest
reaches the server side over the namespace's own link.

Everything is named ``msdv<id>*`` and recorded in a state directory ``/run/msdbench/vm/<id>/``
(owner pid and start time, links, route, QEMU's pid), so ``msdbench clean`` can remove what a
SIGKILLed harness left.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

PREFIX = "msdv"
SUBNET = ipaddress.ip_network("10.214.0.0/16")  # apart from the netns hosts' 10.213.0.0/16
STATE_ROOT = Path(os.environ.get("MSDBENCH_VM_STATE", "/run/msdbench/vm"))


class NetError(RuntimeError):
    pass


def _ip(args: list[str], netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip"] + (["-n", netns] if netns else []) + args
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


@contextlib.contextmanager
def _alloc_lock():
    import fcntl

    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / "alloc.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _owner() -> dict:
    me = psutil.Process()
    return {"pid": me.pid, "create_time": me.create_time()}


def owner_alive(owner: dict) -> bool:
    try:
        return psutil.Process(owner["pid"]).create_time() == owner["create_time"]
    except (psutil.Error, KeyError):
        return False


@dataclass
class Link:
    """One guest's link: names, addresses, where it lives."""
    id: str
    bridge: str
    tap: str
    host_address: str     # the bridge's address: where the guest reaches its host
    guest_address: str    # with prefix length, as the guest configures it
    netns: str | None = None
    via: str | None = None  # deployment 4: this machine routes the /30 via the namespace's address

    @property
    def network(self) -> str:
        return str(ipaddress.ip_interface(self.guest_address).network)

    @property
    def guest_ip(self) -> str:
        return self.guest_address.split("/")[0]


def _used_networks() -> set[ipaddress.IPv4Network]:
    used = set()
    for state in STATE_ROOT.glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            used.add(ipaddress.ip_network(json.loads(state.read_text())["link"]["network"]))
    for line in _ip(["-4", "route", "show", "table", "all"], check=False).stdout.splitlines():
        with contextlib.suppress(ValueError):
            used.add(ipaddress.ip_network(line.split()[0], strict=False))
    return used


class StateDir:
    """/run/msdbench/vm/<id>/: what `msdbench clean` needs to undo one guest."""

    def __init__(self, vm_id: str):
        self.path = STATE_ROOT / vm_id

    def write(self, **fields) -> None:
        state = self.read()
        state.update(fields)
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path / "state.json")

    def read(self) -> dict:
        try:
            return json.loads((self.path / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def create_link(vm_id: str, netns: str | None = None, via: str | None = None) -> tuple[Link, StateDir]:
    """Allocate a /30, make bridge + tap (in `netns` if given) and record them; undone by destroy_link."""
    with _alloc_lock():
        used = _used_networks()
        for net in SUBNET.subnets(new_prefix=30):
            if not any(net.overlaps(u) for u in used):
                break
        else:
            raise NetError(f"no free /30 left in {SUBNET} for a guest link")
        hosts = list(net.hosts())
        link = Link(vm_id, f"{PREFIX}{vm_id}b", f"{PREFIX}{vm_id}t", str(hosts[0]),
                    f"{hosts[1]}/{net.prefixlen}", netns, via)
        state = StateDir(vm_id)
        state.path.mkdir(parents=True, exist_ok=True)
        state.write(owner=_owner(), link=asdict(link) | {"network": str(net)}, created=time.time())
    try:
        _ip(["link", "add", link.bridge, "type", "bridge"], netns)
        _ip(["addr", "add", f"{link.host_address}/{net.prefixlen}", "dev", link.bridge], netns)
        _ip(["link", "set", link.bridge, "up"], netns)
        _ip(["tuntap", "add", "dev", link.tap, "mode", "tap"], netns)
        _ip(["link", "set", link.tap, "master", link.bridge], netns)
        _ip(["link", "set", link.tap, "up"], netns)
        if netns:
            subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
                           check=True, capture_output=True)
            _ip(["route", "add", str(net), "via", via])
    except BaseException:
        destroy_link(asdict(link) | {"network": str(net)})
        state.remove()
        raise
    return link, state


def destroy_link(link: dict) -> list[str]:
    """Remove a link's tap, bridge and route (whatever of them exists); what was removed."""
    removed = []
    netns = link.get("netns")
    if netns and link.get("via"):
        if _ip(["route", "del", link["network"], "via", link["via"]], check=False).returncode == 0:
            removed.append(f"route {link['network']}")
    for name in (link["tap"], link["bridge"]):
        if _ip(["link", "del", name], netns, check=False).returncode == 0:
            removed.append(f"link {name}" + (f" (netns {netns})" if netns else ""))
    return removed


def link_exists(name: str, netns: str | None = None) -> bool:
    return _ip(["link", "show", name], netns, check=False).returncode == 0
