"""The `netns` host kind: an *emulated host* on this machine (numbers from it are labelled so).

Bring-up (root, or CAP_NET_ADMIN + CAP_SYS_ADMIN, is needed; without it the host is unavailable
and its cells are skipped with the reason):

  * a network namespace ``msdb-<pid>-<start>-<host>`` (the owner tag, see `lifetime.owner_tag`),
    with its own loopback;
  * a veth pair created with one end already inside it (one step: nothing half-made to leak):
    ``msdb-<hash>`` on this machine, ``eth0`` in the namespace; the link's alias carries the
    namespace's name;
  * a /30 from the configured private `range` (default 10.213.0.0/16) that no interface of this
    machine uses yet, chosen under a lock so concurrent runs never collide: this machine's end gets
    .1, the namespace's .2, and the namespace routes everything through the link. Domains on the
    host bind the namespace's address; the server side binds this machine's end, so every call
    between the two crosses the veth;
  * optional shaping on both ends (each direction): `rate` with tbf. A `delay` needs the kernel's
    netem qdisc; it is used when the kernel has it and refused with a clear error when not (no
    user-space imitation: a sleep here costs ~176 us for 100 us asked).

The docker backend's client container brings its own namespace (`join`, set before up(): a
holder container's, see msdbench/backends/docker_hosts.py): the host then names that one
(``ip netns attach``) and plumbs it the same way.

Teardown deletes the namespace, which deletes the veth pair and its qdiscs with it (a container's
namespace lives on until the container is removed: the link is deleted explicitly too). A harness
killed by SIGKILL leaves the namespace: `msdbench clean` removes every ``msdb-*`` namespace (and
any stray ``msdb-*`` link) whose owner process is gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import re
import subprocess
import sys
import time

from msdbench.hosts import Host, HostError, HostUnavailable
from msdbench.lifetime import owner_alive

DEFAULT_RANGE = "10.213.0.0/16"
LOCK = "/run/lock/msdbench-netns.lock"
RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
DELAY = re.compile(r"^\d+(?:\.\d+)?(us|ms|s)$")
UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
PREFIX = "msdb-"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or f'exit code {r.returncode}'}")
    return r


def rate_bits(rate: str) -> float:
    m = RATE.match(rate)
    return float(m.group(1)) * UNITS[m.group(2)]


class NetnsHost(Host):
    kind = "netns"
    FIELDS = {"range": f"private IPv4 range the link's /30 is taken from (default {DEFAULT_RANGE})",
              "rate": "link rate each way, tc syntax: e.g. 100mbit, 1gbit (null: unshaped)",
              "delay": "one-way delay each way, e.g. 100us (needs the kernel's netem qdisc)"}

    def __init__(self, name, spec):
        super().__init__(name, spec)
        self.netns = f"{self.owner}-{name}"
        self.link = PREFIX + hashlib.sha1(self.netns.encode()).hexdigest()[:10]
        self.local_address: str | None = None
        self.timings: dict = {}
        # Set before up() by a backend whose domain brings its own network namespace (the docker
        # backend: a container's): (pid of a process in it, what it is). The host then *is* that
        # namespace, named and plumbed as above, instead of a fresh one.
        self.join: tuple[int, str] | None = None

    def check_spec(self) -> None:
        try:
            net = ipaddress.ip_network(self.spec.get("range", DEFAULT_RANGE))
        except ValueError as e:
            raise HostError(f"{self.field('range')}: {e}") from None
        if not net.is_private or net.version != 4 or net.prefixlen > 30:
            raise HostError(f"{self.field('range')}: {net} must be a private IPv4 range of at "
                            "least 4 addresses (e.g. 10.213.0.0/16)")
        rate = self.spec.get("rate")
        if rate is not None and not RATE.match(str(rate)):
            raise HostError(f"{self.field('rate')}: {rate!r} is not a rate: a number and one of "
                            f"{', '.join(UNITS)} (e.g. 100mbit, 1gbit), or null")
        delay = self.spec.get("delay")
        if delay is not None and not DELAY.match(str(delay)):
            raise HostError(f"{self.field('delay')}: {delay!r} is not a delay: a number and "
                            "one of us, ms, s (e.g. 100us), or null")
        if "address" in self.spec:
            raise HostError(f"{self.field('address')}: a netns host's address is chosen from "
                            "its `range` at bring-up")

    # -- bring-up ----------------------------------------------------------------------------
    def up(self) -> None:
        t0 = time.monotonic()
        if os.geteuid() != 0:
            raise HostUnavailable(f"{self.where()}: creating a network namespace needs root "
                                  "(CAP_NET_ADMIN); run as root or leave deployment 5 out")
        try:
            if self.join:
                _ip("netns", "attach", self.netns, str(self.join[0]))
            else:
                _ip("netns", "add", self.netns)
        except (OSError, RuntimeError) as e:
            raise HostUnavailable(f"{self.where()}: cannot create a network namespace: {e}") from None
        try:
            with open(LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                net = self._free_subnet()
                a1, a2 = list(net.hosts())[:2]
                _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0",
                    "netns", self.netns)
                _ip("link", "set", "dev", self.link, "alias", self.netns)
                _ip("addr", "add", f"{a1}/{net.prefixlen}", "dev", self.link)
            _ip("link", "set", "dev", self.link, "up")
            ns = ("-n", self.netns)
            _ip(*ns, "addr", "add", f"{a2}/{net.prefixlen}", "dev", "eth0")
            _ip(*ns, "link", "set", "dev", "eth0", "up")
            _ip(*ns, "link", "set", "dev", "lo", "up")
            _ip(*ns, "route", "add", "default", "via", str(a1))
            self._shape()
        except RuntimeError as e:
            self.down()
            raise HostError(f"{self.where()}: bring-up failed: {e}") from None
        self.local_address, self.address, self.subnet = str(a1), str(a2), str(net)
        self.timings["up_s"] = round(time.monotonic() - t0, 4)

    def _free_subnet(self) -> ipaddress.IPv4Network:
        import psutil

        net = ipaddress.ip_network(self.spec.get("range", DEFAULT_RANGE))
        used = [ipaddress.ip_interface(f"{a.address}/{a.netmask}").network
                for addrs in psutil.net_if_addrs().values() for a in addrs
                if a.family.name == "AF_INET" and a.netmask]
        for sub in net.subnets(new_prefix=30):
            if not any(sub.overlaps(u) for u in used):
                return sub
        raise RuntimeError(f"{self.field('range')}: no free /30 left in {net}")

    def _shape(self) -> None:
        rate, delay = self.spec.get("rate"), self.spec.get("delay")
        if not rate and not delay:
            return
        for prefix in ((), ("ip", "netns", "exec", self.netns)):
            dev = self.link if not prefix else "eth0"
            if delay:
                qdisc = ["netem", "delay", str(delay)] + (["rate", str(rate)] if rate else [])
            else:
                # burst: at least 10 ms at the rate, and never below one GSO super-packet
                burst = max(int(rate_bits(rate) / 8 / 100), 64 * 1024)
                qdisc = ["tbf", "rate", str(rate), "burst", str(burst), "latency", "100ms"]
            r = _run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", *qdisc], check=False)
            if r.returncode != 0:
                what = "delay" if delay else "rate"
                hint = (" (the kernel has no netem qdisc, so a delay cannot be emulated here; "
                        "msdbench does not fake one: remove `delay`)" if delay else "")
                raise HostError(f"{self.field(what)}: tc refused {' '.join(qdisc)}: "
                                f"{r.stderr.strip()}{hint}")

    def down(self) -> None:
        t0 = time.monotonic()
        _ip("netns", "del", self.netns, check=False)
        if os.path.exists(f"/sys/class/net/{self.link}"):
            _ip("link", "del", self.link, check=False)
        self.timings["down_s"] = round(time.monotonic() - t0, 4)

    # -- use ---------------------------------------------------------------------------------
    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, sys.executable, *args]

    def local_device(self) -> str:
        return self.link  # this machine's end of the veth

    def facts(self) -> dict:
        from msdbench.hosts.facts import facts

        f = facts()  # the same kernel and CPU as this machine: it is an emulated host
        return {"kind": self.kind, "emulated": True, "address": self.address,
                "kernel": f["kernel"], "cpu_model": f["cpu_model"], "netns": self.netns,
                "namespace_of": self.join[1] if self.join else None,
                "link": {"device": self.link, "subnet": getattr(self, "subnet", None),
                         "local_address": self.local_address, "rate": self.spec.get("rate"),
                         "delay": self.spec.get("delay"),
                         "qdisc": "netem" if self.spec.get("delay") else
                         "tbf" if self.spec.get("rate") else None},
                "timings": self.timings}


# -- leftovers -----------------------------------------------------------------------------------

def can_manage() -> bool:
    import shutil

    return os.geteuid() == 0 and shutil.which("ip") is not None


def leftovers(everything: bool = False, prefix: str = PREFIX) -> dict[str, list[str]]:
    """The namespaces and links named msdb-* whose owner is dead (all of them with `everything`);
    `prefix` narrows it to one owner's (an owner tag)."""
    r = _ip("netns", "list", check=False)
    namespaces = [line.split()[0] for line in r.stdout.splitlines()
                  if line.startswith(PREFIX)]
    links = []
    for dev in os.listdir("/sys/class/net"):
        if dev.startswith(PREFIX):
            try:
                alias = open(f"/sys/class/net/{dev}/ifalias").read().strip()
            except OSError:
                alias = ""
            links.append((dev, alias))
    return {"namespaces": [n for n in namespaces if n.startswith(prefix)
                           and (everything or not owner_alive(n))],
            # a link without its alias yet is being made by a live run: never taken for dead
            "links": [d for d, alias in links if alias.startswith(prefix)
                      and (everything or not owner_alive(alias))]}


def clean(everything: bool = False, dry_run: bool = False, say=print,
          prefix: str = PREFIX) -> dict[str, list[str]]:
    found = leftovers(everything, prefix)
    for n in found["namespaces"]:
        say(f"{'would remove' if dry_run else 'removing'} network namespace {n}")
        if not dry_run:
            _ip("netns", "del", n, check=False)
    for d in found["links"]:
        if os.path.exists(f"/sys/class/net/{d}"):
            say(f"{'would remove' if dry_run else 'removing'} link {d}")
            if not dry_run:
                _ip("link", "del", d, check=False)
    return found
