"""One booted guest: QEMU with direct kernel boot, its console, its link, its agent.

`Guest.boot()` makes the link (msdbench.vm.net), starts QEMU pinned to the VM's CPUs (taskset: the
vCPU thread and QEMU's own threads), and waits until the guest's agent answers on the link or the
boot deadline passes: then the cell fails with the console's last lines. The serial console goes
to a file in the cell's work directory. `Guest.shutdown()` always leaves nothing: QEMU ended, tap
and bridge deleted, state directory removed. The disks are opened read-only (no per-boot overlay to
remove); what the guest writes lives in its tmpfs and ends with it.

Or `Guest.boot(restore=SNAPSHOT)`: QEMU starts from a saved state (msdbench.vm.snapshot: a guest
booted once, its agent up with everything imported), and the agent moves to the new link's
address over the second serial port. A guest serves one cell; restoring it costs a few seconds
where a boot costs a minute under TCG (README, "Deployments 3 and 4").

Every guest has the same devices in the same order (QEMU restores a state only into the machine
it was saved from): ttyS0 the console (a file), ttyS1 the control line (a Unix socket), a QMP
socket, the root and project disks read-only, one virtio-net NIC with a fixed MAC (each guest has a
bridge of its own, so the MACs never meet).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from msdbench.errors import BackendError
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


MAC = "52:54:00:6d:73:64"


def qemu_command(image: dict, accel: str, link: net.Link, workdir: Path, name: str,
                 extra_append: str = "", restore: Path | None = None) -> list[str]:
    cpu = "host" if accel == "kvm" else "max"  # TCG's max: every x86 feature numpy's wheels may use
    gw = link.host_address
    append = (f"console=ttyS0 root=/dev/vda ro init={GUEST_INIT} panic=-1 quiet net.ifnames=0 "
              f"msdbench.ip={link.guest_address} msdbench.gw={gw} {extra_append}").strip()
    return [
        QEMU, "-name", name, "-machine", "pc", "-accel", accel, "-cpu", cpu, "-smp", "1",
        "-m", str(MEMORY_MB), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", f"file:{workdir / (name + '-console.log')}",
        "-serial", f"unix:{workdir / (name + '-ctl.sock')},server=on,wait=off",
        "-qmp", f"unix:{workdir / (name + '-qmp.sock')},server=on,wait=off", "-monitor", "none",
        "-kernel", image["kernel"], "-initrd", image["initrd"], "-append", append,
        "-drive", f"file={image['rootfs']},format=raw,if=virtio,readonly=on",
        "-drive", f"file={image['project_disk']},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=n0,ifname={link.tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
    ] + (["-incoming", f"exec:cat {restore}"] if restore else [])


def _unix_request(path: Path, request: dict, deadline: float, what: str) -> dict:
    """One JSON line to a Unix socket QEMU serves, the first JSON answer back."""
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {path.name} never appeared")
        time.sleep(0.05)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError(f"{what}: the connection closed without an answer")
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                try:
                    return json.loads(line)
                except ValueError:
                    continue  # noise on a serial line


class Qmp:
    """QEMU's machine protocol on a Unix socket: just enough to save a running guest's state."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def execute(self, command: str, **arguments) -> dict:
        self.file.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"QMP {command}: {answer['error'].get('desc')}")
        return answer.get("return", {})

    def close(self) -> None:
        self.file.close()
        self.sock.close()


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
        self.qemu_name = f"msdbench-{self.id}"
        self.console = self.workdir / f"{self.qemu_name}-console.log"
        self.boot_timeout_s = boot_timeout_s or BOOT_TIMEOUT_S[accel]
        self.proc: subprocess.Popen | None = None
        self.link: net.Link | None = None
        self.state: net.StateDir | None = None
        self.boot_s: float | None = None
        self.hello: dict = {}
        self.restored_from: str | None = None

    @property
    def label(self) -> str:
        return f"VM {self.name!r} ({ACCEL_LABELS[self.accel]}, msdv{self.id})"

    # -- up ----------------------------------------------------------------------------------
    def boot(self, restore: Path | None = None) -> "Guest":
        """Boot (or, given a snapshot, restore) and wait for the agent; on any failure nothing
        is left and the error carries the console's tail."""
        started = time.monotonic()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.link, self.state = net.create_link(self.id, self.netns, self.via)
            cmd = qemu_command(self.image, self.accel, self.link, self.workdir, self.qemu_name,
                               self.extra_append, restore)
            if self.cpus:
                cmd = ["taskset", "-c", ",".join(map(str, self.cpus))] + cmd
            if self.netns:
                cmd = ["ip", "netns", "exec", self.netns] + cmd
            self.console.write_bytes(b"")
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(self.workdir / f"{self.qemu_name}-qemu.log", "wb"),
                # QEMU never outlives the harness, even a SIGKILLed one.
                preexec_fn=lambda parent=os.getpid(): die_with_parent(parent), start_new_session=True)
            self.state.write(qemu_pid=self.proc.pid, name=self.name, workdir=str(self.workdir))
            deadline = started + self.boot_timeout_s
            if restore:
                self._readdress(deadline)
                self.restored_from = str(restore)
            self._wait_for_agent(deadline)
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

    def _readdress(self, deadline: float) -> None:
        """A restored guest still has its snapshot's address: move it to this link's."""
        request = {"op": "readdress", "address": self.link.guest_address, "gw": self.link.host_address}
        while True:
            status = self.exit_status()
            if status:
                raise GuestError(f"{self.label} ended while being restored ({status})\n{self.tails()}")
            try:
                answer = _unix_request(self.workdir / f"{self.qemu_name}-ctl.sock", request,
                                       min(deadline, time.monotonic() + 5.0), "the control line")
                break
            except (OSError, TimeoutError, ConnectionError):
                if time.monotonic() > deadline:
                    raise GuestError(f"{self.label}: restored, but its agent never answered on the "
                                     f"control line within {self.boot_timeout_s:.0f} s\n{self.tails()}"
                                     ) from None
        if not answer.get("ok"):
            raise GuestError(f"{self.label}: moving the restored guest to {self.link.guest_address} "
                             f"failed: {answer.get('error')}")

    def save(self, path: Path, timeout_s: float = 300.0) -> None:
        """Save the running guest's whole state to `path` (QMP migrate to a file)."""
        tmp = path.with_name(path.name + ".part")
        qmp = Qmp(self.workdir / f"{self.qemu_name}-qmp.sock")
        try:
            qmp.execute("migrate", uri=f"exec:cat > {tmp}")
            deadline = time.monotonic() + timeout_s
            while True:
                status = qmp.execute("query-migrate").get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or time.monotonic() > deadline:
                    raise GuestError(f"{self.label}: saving its state to {path} ended {status}")
                time.sleep(0.1)
        finally:
            qmp.close()
        os.replace(tmp, path)

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
            qemu = (self.workdir / f"{self.qemu_name}-qemu.log").read_text(errors="replace").strip()
        except OSError:
            qemu = ""
        return out + (f"\n--- qemu ---\n{qemu[-1500:]}" if qemu else "")

    def describe(self) -> dict:
        return {"name": self.name, "kind": "vm", "accel": self.accel, "accel_label": ACCEL_LABELS[self.accel],
                "id": f"msdv{self.id}", "boot_s": self.boot_s, "restored_from": self.restored_from, "memory_mb": MEMORY_MB, "vcpus": 1,
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
