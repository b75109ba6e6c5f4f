"""One booted guest: QEMU with direct kernel boot, its console, its link, its agent.

`Guest.boot()` makes the link (msdbench.vm.net), starts QEMU pinned to the VM's CPUs (taskset: the
vCPU thread and QEMU's own threads), and waits until the guest's agent answers on the link or the
boot deadline passes: then the cell fails with the console's last lines. The serial console goes
to a file in the cell's work directory. `Guest.shutdown()` always leaves nothing: QEMU ended, tap
and bridge deleted, state directory removed. The disks are opened read-only (no per-boot overlay to
remove); what the guest writes lives in its tmpfs and ends with it.

A booted guest serves one cell (see README, "Deployments 3 and 4": what a cell's bring-up costs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from msdbench.backends.base import BackendError
from msdbench.lifetime import die_with_parent, exit_status
from msdbench.vm import net
from msdbench.vm.agent import PORT as AGENT_PORT
from msdbench.vm.image import GUEST_INIT
from msdbench.vm.relay import agent_request

QEMU = "qemu-system-x86_64"
ACCELS = ("kvm", "tcg")
ACCEL_LABELS = {"kvm": "KVM", "tcg": "TCG, emulated"}
MEMORY_MB = 512
BOOT_TIMEOUT_S = {"kvm": 60.0, "tcg": 180.0}


class GuestError(BackendError):
    """The guest did not boot, died, or its agent refused; the message names the VM."""


def qemu_command(image: dict, accel: str, link: net.Link, console: Path, name: str,
                 extra_append: str = "") -> list[str]:
    cpu = "host" if accel == "kvm" else "max"  # TCG's max: every x86 feature numpy's wheels may use
    gw = link.host_address
    append = (f"console=ttyS0 root=/dev/vda ro init={GUEST_INIT} panic=-1 quiet net.ifnames=0 "
              f"msdbench.ip={link.guest_address} msdbench.gw={gw} {extra_append}").strip()
    return [
        QEMU, "-name", name, "-machine", "pc", "-accel", accel, "-cpu", cpu, "-smp", "1",
        "-m", str(MEMORY_MB), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{console}", "-monitor", "none",
        "-kernel", image["kernel"], "-initrd", image["initrd"], "-append", append,
        "-drive", f"file={image['rootfs']},format=raw,if=virtio,readonly=on",
        "-drive", f"file={image['project_disk']},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=n0,ifname={link.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={_mac(link.id)}",
    ]


def _mac(vm_id: str) -> str:
    h = vm_id.ljust(6, "0")[:6]
    return "52:54:00:" + ":".join(h[i:i + 2] for i in (0, 2, 4))


class Guest:
    def __init__(self, name: str, image: dict, accel: str, workdir: Path, cpus: list[int] | None = None,
                 netns: str | None = None, via: str | None = None, boot_timeout_s: float | None = None,
                 extra_append: str = ""):
        if accel not in ACCELS:
            raise ValueError(f"accel: {accel!r} is not one of {ACCELS}")
        self.name, self.image, self.accel, self.cpus = name, image, accel, cpus
        self.netns, self.via, self.extra_append = netns, via, extra_append
        self.id = uuid.uuid4().hex[:6]
        self.workdir = Path(workdir)
        self.console = self.workdir / f"vm-{name}-console.log"
        self.boot_timeout_s = boot_timeout_s or BOOT_TIMEOUT_S[accel]
        self.proc: subprocess.Popen | None = None
        self.link: net.Link | None = None
        self.state: net.StateDir | None = None
        self.boot_s: float | None = None
        self.hello: dict = {}

    @property
    def label(self) -> str:
        return f"VM {self.name!r} ({ACCEL_LABELS[self.accel]}, msdv{self.id})"

    # -- up ----------------------------------------------------------------------------------
    def boot(self) -> "Guest":
        started = time.monotonic()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.link, self.state = net.create_link(self.id, self.netns, self.via)
            cmd = qemu_command(self.image, self.accel, self.link, self.console, f"msdbench-{self.id}",
                               self.extra_append)
            if self.cpus:
                cmd = ["taskset", "-c", ",".join(map(str, self.cpus))] + cmd
            if self.netns:
                cmd = ["ip", "netns", "exec", self.netns] + cmd
            self.console.write_bytes(b"")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.workdir / f"vm-{self.name}-qemu.log", "wb"),
                # QEMU never outlives the harness, even a SIGKILLed one.
                preexec_fn=lambda parent=os.getpid(): die_with_parent(parent), start_new_session=True)
            self.state.write(qemu_pid=self.proc.pid, name=self.name)
            self._wait_for_agent(started + self.boot_timeout_s)
            self.boot_s = round(time.monotonic() - started, 3)
        except BaseException:
            self.shutdown()
            raise
        return self

    def _wait_for_agent(self, deadline: float) -> None:
        while True:
            status = self.exit_status()
            if status:
                raise GuestError(f"{self.label} ended while booting ({status})\n{self.tails()}")
            try:
                self.hello = agent_request(self.link.guest_ip, {"op": "hello"}, timeout=2.0)
                return
            except (OSError, RuntimeError, ValueError):
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.label} did not boot within {self.boot_timeout_s:.0f} s "
                                     f"(its agent never answered at {self.link.guest_ip}:{AGENT_PORT})"
                                     f"\n{self.tails()}") from None
                time.sleep(0.25)

    def why(self, exc: BaseException | None) -> str:
        status = self.exit_status()
        return f"the VM ended ({status})" if status else f"{type(exc).__name__}: {exc}"

    # -- state -------------------------------------------------------------------------------
    def exit_status(self) -> str | None:
        return exit_status(self.proc.poll()) if self.proc else "never started"

    def console_tail(self, lines: int = 25) -> str:
        """The console's last lines; up to a kernel panic's first line (its trace says nothing
        about why init ended: the lines before it do)."""
        try:
            text = self.console.read_text(errors="replace").splitlines()
        except OSError:
            return "(no console output)"
        panic = next((i for i, ln in enumerate(text) if "Kernel panic" in ln), None)
        if panic is not None:
            text = text[:panic + 1]
        return "\n".join(text[-lines:]) or "(no console output)"

    def tails(self) -> str:
        out = f"--- last lines of the console of {self.label} ---\n{self.console_tail()}"
        try:
            qemu = (self.workdir / f"vm-{self.name}-qemu.log").read_text(errors="replace").strip()
        except OSError:
            qemu = ""
        return out + (f"\n--- qemu ---\n{qemu[-1500:]}" if qemu else "")

    def describe(self) -> dict:
        return {"name": self.name, "kind": "vm", "accel": self.accel, "accel_label": ACCEL_LABELS[self.accel],
                "id": f"msdv{self.id}", "boot_s": self.boot_s, "memory_mb": MEMORY_MB, "vcpus": 1,
                "qemu_affinity": self.cpus, "netns": self.netns,
                "host_address": self.link.host_address if self.link else None,
                "guest_address": self.link.guest_address if self.link else None,
                "guest": self.hello, "image_hash": self.image.get("hash"),
                "base_hash": self.image.get("base_hash"), "kernel": self.image.get("kernel_version")}

    # -- down --------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """QEMU ended, link deleted, state removed; never raises, safe to call twice."""
        if self.proc is not None:
            stop_qemu(self.proc.pid, self.proc)
        if self.state is not None:
            net.destroy_link(self.state.read().get("link") or {})
            self.state.remove()
            self.state = None


def stop_qemu(pid: int, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM (QEMU exits at once: its disks are read-only), then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        if proc is not None:
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if not _alive(pid):
                break


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
