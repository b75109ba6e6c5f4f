"""This machine forwarding between two hosts it carries: the path from the client's host to the
server side's guest (deployments 3-5 with `server_host`, the paper's layout).

A guest, a netns host and a guest on a netns host each reach this machine through one interface
of it (`Host.local_device()`: the guest's bridge, the namespace's veth). When the server side
runs in a guest, the client's host reaches it *through* this machine: packets come in on the
client's interface, are routed, and leave on the server guest's bridge (and back). Each host's
subnet is directly connected here (or routed via its namespace), so the routes exist; what may
stop the packets is this machine's firewall. Where Docker runs, the FORWARD policy is DROP, and
with br_netfilter (`net.bridge.bridge-nf-call-iptables = 1`) even a bridge's own traffic passes
FORWARD. So for one cell, two ACCEPT rules (one per direction, `-i A -o B` and `-i B -o A`) go at
the head of Docker's DOCKER-USER chain (evaluated first; Docker leaves it to the user) or of
FORWARD where there is no Docker, each labelled with the harness's owner tag
(`--comment "msdb-<pid>-<start> forward"`). They are removed at the cell's teardown (success,
failure, Ctrl-C, SIGTERM) and, after a SIGKILL, by `msdbench clean` (owner gone). Only the
`iptables` on PATH is touched (the one Docker uses: nf_tables here; the legacy tables accept all).

IPv4 forwarding must be on (Docker turns it on); where it is off the host is unavailable (its
cells are skipped with the reason): msdbench does not flip a machine-wide switch for a cell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from msdbench.lifetime import owner_alive, owner_tag

LABEL = "forward"  # the comment: "<owner tag> forward"
CHAINS = ("DOCKER-USER", "FORWARD")
COMMENT = re.compile(r'--comment "?(msdb-\d+-\d+) ' + LABEL + r'"?')


class ForwardError(RuntimeError):
    pass


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["iptables", "-w", "10", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise ForwardError(f"iptables {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def available() -> bool:
    return shutil.which("iptables") is not None


def chain() -> str:
    """DOCKER-USER where Docker made it (Docker's own rules come after it), else FORWARD."""
    return next(c for c in CHAINS if _iptables("-S", c, check=False).returncode == 0)


def ip_forward() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


@dataclass
class Forwarding:
    """Forwarding between two interfaces of this machine, for one cell."""
    a: str
    b: str
    chain: str | None = None
    rules: list[list[str]] | None = None
    up_s: float | None = None
    count: int = 0

    def open(self, owner: str | None = None) -> "Forwarding":
        if not ip_forward():
            raise ForwardError("this machine does not forward IPv4 (net.ipv4.ip_forward = 0), and "
                               f"the hosts behind {self.a} and {self.b} reach each other only "
                               "through it; turn it on (sysctl -w net.ipv4.ip_forward=1) to run "
                               "the server side in a VM with a client on another host")
        t0 = time.monotonic()
        self.rules = []
        if available():
            self.chain = chain()
            comment = f"{owner or owner_tag()} {LABEL}"
            try:
                for i, o in ((self.a, self.b), (self.b, self.a)):
                    rule = ["-i", i, "-o", o, "-m", "comment", "--comment", comment, "-j", "ACCEPT"]
                    self.rules.append(rule)  # first: an interrupted insert is still deleted
                    _iptables("-I", self.chain, "1", *rule)
            except BaseException:
                self.close()
                raise
        self.up_s = round(time.monotonic() - t0, 4)
        self.count = len(self.rules)
        return self

    def close(self) -> None:
        """Never raises; safe twice."""
        while self.rules:
            _iptables("-D", self.chain, *self.rules.pop(), check=False)

    def facts(self) -> dict:
        return {"between": [self.a, self.b], "iptables_chain": self.chain,
                "accept_rules": self.count, "up_s": self.up_s}


# -- leftovers -----------------------------------------------------------------------------------

def leftovers(everything: bool = False) -> list[tuple[str, str]]:
    """(chain, rule) of every msdbench forwarding rule whose owner is gone (every one: everything)."""
    if not available():
        return []
    found = []
    for c in CHAINS:
        for line in _iptables("-S", c, check=False).stdout.splitlines():
            m = COMMENT.search(line)
            if line.startswith(f"-A {c} ") and m and (everything or not owner_alive(m.group(1))):
                found.append((c, line[len(f"-A {c} "):]))
    return found


def clean(everything: bool = False, dry_run: bool = False, say=print) -> list[str]:
    import shlex

    done = []
    for c, rule in leftovers(everything):
        say(f"{'would remove' if dry_run else 'removing'} iptables rule in {c}: {rule}")
        if not dry_run:
            _iptables("-D", c, *shlex.split(rule), check=False)
        done.append(f"{c}: {rule}")
    return done
