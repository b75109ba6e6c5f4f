"""The embedded default: each isolation domain is an OS process, on the host its manifest names.

The host (msdbench/hosts) gives the command line (this machine; `ip netns exec` into an emulated
host; `ssh` to a remote one) and the address the domain binds and advertises. The manifest goes to
the domain on its stdin, which then stays open as its lifeline: closing it stops the domain, and it
closes by itself when the harness dies (with the ssh connection, on a remote host)."""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import time
import weakref
from pathlib import Path

from msdbench import scratch
from msdbench.backends.base import Backend, BackendError, DomainHandle
from msdbench.idl import CONTROL_LINE
from msdbench.lifetime import die_with_parent, exit_status, owner_label
from msdbench.manifest import Manifest

START_TIMEOUT_S = 30.0


class ProcessBackend(Backend):
    name = "process"

    def __init__(self, workdir: str | Path | None = None):
        self._cleanup = None
        if workdir is None:  # a scratch dir of our own, removed with this backend
            workdir = scratch.make_dir("domains")
            self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, True)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def prepare(self, manifest: Manifest) -> None:
        manifest.save(self.workdir / "manifest.yaml")

    def start_domain(self, manifest: Manifest, domain: str) -> DomainHandle:
        host = self.hosts[manifest.domain(domain).host]
        log_path = self.workdir / f"domain-{domain}.log"
        log = open(log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = ["-m", "msdbench.domain", "--manifest", "-", "--domain", domain,
                "--bind", host.address, "--owner", owner_label()]
        proc = subprocess.Popen(
            host.command(args), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE, env=env,
            # No service outlives the cell that started it, even if the harness is SIGKILLed.
            preexec_fn=functools.partial(die_with_parent, os.getpid()), start_new_session=True)
        log.close()
        handle = DomainHandle(domain, "", proc)
        handle.log_path = log_path
        try:
            try:
                proc.stdin.write(json.dumps(manifest.to_dict()).encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                pass  # it died already: _read_control_line says how
            handle.control_address = self._read_control_line(handle)
        except BaseException:  # also Ctrl-C/SIGTERM here: the caller never gets the handle
            self.stop_domain(handle)
            raise
        return handle

    def _read_control_line(self, h: DomainHandle) -> str:
        proc: subprocess.Popen = h.native
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line.startswith(CONTROL_LINE):
                    return line.split()[1]
                if not line and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
        status = self.exit_status(h) or f"no control line within {START_TIMEOUT_S:.0f} s"
        self.stop_domain(h)
        raise BackendError(f"domain {h.name!r} did not start: {status}\n"
                           f"--- last lines of its log ---\n{self.log_tail(h)}")

    def exit_status(self, h: DomainHandle) -> str | None:
        return exit_status(h.native.poll())

    def where(self, h: DomainHandle) -> str:
        return f"process {h.hello.get('pid', h.native.pid)}"  # its pid on its host

    def log_tail(self, h: DomainHandle, lines: int = 20) -> str:
        try:
            return "\n".join(Path(h.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop_domain(self, h: DomainHandle) -> None:
        proc: subprocess.Popen = h.native
        # After the control service's shutdown (oneway): its own orderly stop first; then the
        # lifeline (stdin); then signals to its process group.
        for stop in (None, self._close_stdin, lambda p: os.killpg(p.pid, signal.SIGTERM),
                     lambda p: os.killpg(p.pid, signal.SIGKILL)):
            if proc.poll() is not None:
                break
            if stop is not None:
                try:
                    stop(proc)
                except OSError:
                    pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._close_stdin(proc)
        if proc.stdout:
            proc.stdout.close()

    @staticmethod
    def _close_stdin(proc: subprocess.Popen) -> None:
        if proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()
