"""The `vm` host kind: a QEMU guest that msdbench builds and boots, itself placed on a host.

    hosts:
      vm1: {kind: vm, on: local}        # deployment 3: the client's VM on the server's host
      vm2: {kind: vm, on: edge1}        # deployment 4: the VM on another (netns) host

`up()` restores a guest from a snapshot of the cached image booted once (msdbench.vm.snapshot,
msdbench.vm.image; made by the build_image rule, or here if missing; `boot: cold` boots instead),
with the accelerator `accel` resolves to (msdbench.vm.accel: KVM only where a guest really boots
under it), QEMU pinned to `cpus`, virtio-net on a tap on a bridge of the VM's host
(msdbench.vm.net), and waits for the guest's agent. The host's address is the
guest's; the process backend starts domains in it through `command()` (msdbench.vm.relay), the
same `python -m msdbench.domain` as everywhere. `down()` ends QEMU and removes tap, bridge and
the state directory; on a VM host `on` a netns host, that host is brought up first and taken
down last (by this host: it is the VM's, not the cell's).

If QEMU ends while the cell runs (killed, crashed), a watchdog cuts this process's connections
into the guest (and into the cell's other host behind this machine, `peers`: the client's guest
that waits on a dead server guest) at once, so the waiting call fails now, naming the VM, instead
of after TCP's retransmission timeout.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from pathlib import Path

import psutil

from msdbench.hosts import Host, HostError, HostUnavailable, make_host
from msdbench.vm.guest import BOOT_TIMEOUT_S, Guest

PARENT_KINDS = ("local", "netns")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # into the cell's log


class VmHost(Host):
    kind = "vm"
    FIELDS = {
        "on": "the host the VM runs on: local (deployment 3) or a netns host (deployment 4)",
        "on_host": "that host's own entry (planning copies it from `hosts:`)",
        "accel": "auto (KVM if a guest really boots under it, else TCG), kvm or tcg",
        "cpus": "host CPUs QEMU (vCPU and its own threads) is pinned to; planning sets the "
                "client domain's",
        "boot_timeout_s": f"seconds the guest may take to answer (default {BOOT_TIMEOUT_S['tcg']:.0f} "
                          f"under TCG, {BOOT_TIMEOUT_S['kvm']:.0f} under KVM)",
        "boot": "restore (default: from a snapshot of a booted guest, seconds) or cold (a full "
                "boot per cell, a minute under TCG)",
    }

    def __init__(self, name: str, spec: dict):
        super().__init__(name, spec)
        self.guest: Guest | None = None
        self.parent: Host | None = None
        self.died: str | None = None
        self._stopping = threading.Event()
        self._work: Path | None = None
        self.accel_verdict: dict = {}
        self.peers: list[str] = []  # addresses of the cell's other hosts behind this machine
        self.parent_facts: dict = {}

    def check_spec(self) -> None:
        on = self.spec.get("on", "local")
        if not isinstance(on, str):
            raise HostError(f"{self.field('on')}: {on!r} must be a host name")
        accel = self.spec.get("accel", "auto")
        if accel not in ("auto", "kvm", "tcg"):
            raise HostError(f"{self.field('accel')}: {accel!r} is not one of 'auto', 'kvm', 'tcg'")
        if on != "local" and "on_host" in self.spec:  # planning copies it (and checks `on` exists)
            parent = make_host(on, self.spec["on_host"])
            if parent.kind not in PARENT_KINDS:
                raise HostError(f"{self.field('on')}: {on!r} is kind {parent.kind!r}; a VM runs on "
                                f"one of {PARENT_KINDS} (QEMU on an ssh host is not built)")
        cpus = self.spec.get("cpus")
        if cpus is not None and not (isinstance(cpus, list) and all(isinstance(c, int) for c in cpus)):
            raise HostError(f"{self.field('cpus')}: {cpus!r} must be a list of CPU numbers or null")
        boot = self.spec.get("boot", "restore")
        if boot not in ("restore", "cold"):
            raise HostError(f"{self.field('boot')}: {boot!r} is not one of 'restore', 'cold'")
        timeout = self.spec.get("boot_timeout_s")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise HostError(f"{self.field('boot_timeout_s')}: {timeout!r} must be a number > 0")

    def where(self) -> str:
        if self.guest is None:
            return f"host {self.name!r} (vm)"
        ended = f"; QEMU ended: {self.died}" if self.died else ""
        return f"host {self.name!r} ({self.guest.label}{ended})"

    # -- up and down -------------------------------------------------------------------------
    def up(self) -> None:
        import tempfile

        from msdbench.vm import accel as accel_mod
        from msdbench.vm.image import ImageBuildError, ensure_image, project_root

        if os.geteuid() != 0:
            raise HostUnavailable(f"{self.where()}: booting a VM needs root (tap devices, bridges)")
        try:
            image = ensure_image(project_root(), log=_say)
            accel, self.accel_verdict = accel_mod.resolve(self.spec.get("accel", "auto"), image, log=_say)
        except (ImageBuildError, FileNotFoundError) as e:
            raise HostUnavailable(f"{self.where()}: no guest image: {e}") from None
        on = self.spec.get("on", "local")
        netns = via = None
        if on != "local":
            if not isinstance(self.spec.get("on_host"), dict):
                raise HostError(f"{self.field('on')}: {on!r} is not a host of `hosts:`")
            self.parent = make_host(on, self.spec["on_host"])
            self.parent.up()
            netns, via = self.parent.netns, self.parent.address
        self._work = Path(tempfile.mkdtemp(prefix=f"msdbench-vm-{self.name}-"))
        self.guest = Guest(self.name, image, accel, self._work, self.spec.get("cpus"), netns, via,
                           self.spec.get("boot_timeout_s"))
        try:
            snapshot = None
            if self.spec.get("boot", "restore") == "restore":
                from msdbench.vm.snapshot import ensure_snapshot

                snapshot, _ = ensure_snapshot(image, accel, log=_say)
            self.guest.boot(restore=snapshot)
        except BaseException:
            self.down()
            raise
        self.address = self.guest.link.guest_ip
        threading.Thread(target=self._watch, daemon=True, name=f"vm-{self.name}-watchdog").start()

    def _watch(self) -> None:
        proc = self.guest.proc
        rc = proc.wait()
        if self._stopping.is_set():
            return
        from msdbench.lifetime import exit_status

        self.died = exit_status(rc)
        _say(f"msdbench: {self.where()}: QEMU ended while the cell ran")
        # Also the connections to the cell's other guest (the server's guest died: the client's
        # guest waits on it, and the harness on the client): the waiting call ends now.
        for ip in (self.guest.link.guest_ip, *self.peers):
            cut_connections(ip)

    def down(self) -> None:
        self._stopping.set()
        if self.guest is not None:
            self.guest.shutdown()
            console = self.guest.console_tail(10_000)
            if self.died or os.environ.get("MSDBENCH_VM_CONSOLE"):
                _say(f"--- console of {self.guest.label} ---\n{console}")
        if self.parent is not None:
            self.parent.down()
            self.parent_facts = self.parent.facts()  # the cell records them after teardown
            self.parent = None
        if self._work is not None:
            import shutil

            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    # -- running things there ----------------------------------------------------------------
    def command(self, args: list[str]) -> list[str]:
        return [sys.executable, "-m", "msdbench.vm.relay", self.address, uuid.uuid4().hex[:12],
                "--", "python", *args]

    def local_device(self) -> str | None:
        """The guest's bridge here; on a netns host, that host's veth (the namespace routes)."""
        if self.parent is not None:
            return self.parent.local_device()
        return self.guest.link.bridge if self.guest is not None and self.guest.link else None

    def cpu_s(self) -> float | None:
        """QEMU's CPU time here (vCPU and its own threads). Not the guest's own count: a guest
        clock charges a descheduled vCPU's gap to whatever ran in it, so other work on this
        machine would look like the guest's (and a disturbed repetition like a quiet one)."""
        proc = self.guest.proc if self.guest is not None else None
        if proc is None or proc.poll() is not None:
            return None
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def facts(self) -> dict:
        out = {"kind": self.kind, "address": self.address, "on": self.spec.get("on", "local")}
        if self.guest is not None:
            d = self.guest.describe()
            out.update(accel=d["accel"], accel_label=d["accel_label"], vm=d,
                       kernel=(d["guest"] or {}).get("kernel"), python=(d["guest"] or {}).get("python"),
                       cpu_model=(d["guest"] or {}).get("cpu_model"),
                       msdbench=(d["guest"] or {}).get("msdbench"))
        if self.accel_verdict.get("kvm"):
            out["kvm"] = self.accel_verdict["kvm"]  # why KVM was (not) used
        if self.parent is not None or self.parent_facts:
            out["on_host"] = self.parent.facts() if self.parent is not None else self.parent_facts
        if self.died:
            out["died"] = self.died
        return out


def cut_connections(peer_ip: str) -> int:
    """Shut down every TCP connection of this process to peer_ip (a guest that is gone): the
    threads blocked on them see the connection end now. Returns how many were cut."""
    cut = 0
    for c in psutil.Process().net_connections(kind="tcp"):
        if c.raddr and c.raddr.ip == peer_ip and c.fd >= 0:
            try:
                s = socket.socket(fileno=os.dup(c.fd))
                s.shutdown(socket.SHUT_RDWR)
                s.close()
                cut += 1
            except OSError:
                pass
    return cut
