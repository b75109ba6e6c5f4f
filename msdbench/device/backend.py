"""The device backend: a manifest's domains as groups of services on one MicroPython board.

Bring-up: bring the board host up (msdbench/hosts/board.py: the board started with the board
program running, boards.py), put the link relay in
front of it where the client sits across a link (deployment 4: paced at the radio's rate), open
the link (hostlink.py), wait for the board's hello, and send the plan: which service is in which
group. The client runs on the board (deployments 1, 2: timed with the board's `ticks_us`) or on
the host across the link (deployment 4: the host's drivers, timed with `perf_counter_ns`).
Teardown always runs: the board program is told to quit, the relay and qemu are ended.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from msdbench.backends.base import BackendError
from msdbench.culprits import LOG_TAIL_LINES
from msdbench.device import boards, hostlink
from msdbench.device.relay import READY_LINE
from msdbench.hosts import make_host
from msdbench.manifest import Manifest

HELLO_TIMEOUT_S = 30.0
LINK_DEFAULTS = {"link_rate_bps": 250000, "call_deadline_s": 10.0, "retry_s": 1.0}


class DeviceBackend:
    name = "device"

    def __init__(self, workdir=None, link: dict | None = None, faults: dict | None = None, **_):
        self.settings = LINK_DEFAULTS | (link or {})
        self.link_faults = faults or {}   # test-only: relay fault injection (relay.py)
        self._given = workdir
        self._tmp = None
        self.workdir: Path | None = None   # made at bring-up (a skipped cell makes nothing)
        self.info: dict = {}

    def unavailable_reason(self) -> str | None:
        """None: the board host says at bring-up whether it can be reached (HostUnavailable)."""
        return None

    def describe(self) -> dict:
        return {"backend": "device", **self.info}

    def up(self, manifest: Manifest) -> "DeviceDeployment":
        if self._given is None:
            self._tmp = tempfile.mkdtemp(prefix="msdbench-device-")
        self.workdir = Path(self._given or self._tmp)
        self.workdir.mkdir(parents=True, exist_ok=True)
        dep = DeviceDeployment(self, manifest)
        try:
            dep.start()
        except BaseException:
            dep.down()
            raise
        return dep

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def board_plan(m: Manifest) -> dict:
    """What the board builds: every server-side service in its group, and the client's group
    when the client is on the board."""
    client = m.client_domain()
    return {"suite": m.suite,
            "services": [{"name": s.name, "kind": s.kind, "group": s.domain}
                         for s in m.services if s.kind != "client"],
            "client_group": client.name if client.host == "board" else ""}


class DeviceDeployment:
    def __init__(self, backend: DeviceBackend, manifest: Manifest):
        self.backend = backend
        self.manifest = manifest
        if "board" not in (manifest.hosts or {}):
            raise BackendError("the device backend needs a `board` host in the manifest (planning "
                               "puts one there for every device cell)")
        self.host = make_host("board", manifest.hosts["board"])
        self.board = None
        self.relay: subprocess.Popen | None = None
        self.link: hostlink.SerialLink | None = None
        self.control = None
        self.hello: dict = {}
        self.client_on_board = manifest.client_domain().host == "board"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()

    def start(self) -> None:
        s = self.backend.settings
        self.host.up()   # HostUnavailable (no port, no emulator): the cell is skipped, saying why
        self.board, port = self.host.board, self.host.address
        self.manifest.hosts["board"] = dict(self.host.spec, address=port)
        rate = 0 if self.client_on_board else s["link_rate_bps"]
        if rate or self.backend.link_faults:
            port = self._start_relay(port, rate)
        self.link = hostlink.SerialLink(port, s["call_deadline_s"], s["retry_s"])
        self.control = hostlink.client(self.link, "board", "Board", "board")
        self.hello = json.loads(self._call("hello", deadline_s=HELLO_TIMEOUT_S))
        self._call("setup", json.dumps(board_plan(self.manifest)))
        self.backend.info = {**self.board.describe(), "hello": self.hello, "link": {
            "host_port": port, "rate_bps": rate or None,
            "relay": self.relay is not None, "framing": "magic|seq|kind|len|crc32, crc32",
            "faults_injected": self.backend.link_faults or None}}
        self.manifest.settings["device_resolved"] = self.backend.info

    def _start_relay(self, board_port: str, rate: float) -> str:
        cmd = [sys.executable, "-m", "msdbench.device.relay", "--board", board_port,
               "--rate-bps", str(rate)]
        for fault, every in self.backend.link_faults.items():
            cmd += [f"--{fault}", str(every)]
        self.relay_stats = self.backend.workdir / "relay-stats.json"
        cmd += ["--stats", str(self.relay_stats)]
        log = self.backend.workdir / "relay.log"
        self.relay = boards._spawn(cmd, log, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return boards._read_line(self.relay, self.relay.stdout, re.compile(READY_LINE + r" (\S+)"),
                                 "the link relay", log)

    def _call(self, method: str, *args, deadline_s: float | None = None):
        """A Board call; a dead board or a silent link becomes a BackendError naming the port."""
        try:
            if deadline_s:
                c = hostlink.client(self.link, "board", "Board", "board", deadline_s=deadline_s)
                return getattr(c, method)(*args)
            return getattr(self.control, method)(*args)
        except hostlink.LinkTimeout as e:
            status = self.board.alive()
            raise BackendError(f"board on {self.board.port}: {method}: {e}"
                               + (f" (the board ended: {status})" if status else "")
                               + f"\n--- board log ---\n{self.board.log_tail()}") from None
        except Exception as e:
            why = getattr(e, "why", None) or getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            raise BackendError(f"board on {self.board.port}: {method} failed: {why}") from None

    # -- what cell.record and run_cell use --------------------------------------------------------
    def placement(self) -> dict:
        m = self.manifest
        return {d.name: {"host": d.host, "services": d.services} for d in m.domains}

    def run_driver(self, spec: dict) -> dict:
        (edge,) = self.manifest.edges_from(self.manifest.client)  # the entry service
        spec = dict(spec, entry=edge.callee)
        deadline = spec.get("deadline_s") or 600
        if self.client_on_board:
            result = self._board_driver(spec, deadline)
            result["timing"] = "board ticks_us (1 us resolution)"
        else:
            result = self._host_driver(spec)
            result["timing"] = "host perf_counter_ns across the link"
        result["link"] = self.link_stats()
        return result

    def _board_driver(self, spec: dict, deadline: float) -> dict:
        if spec["driver"] == "beps":
            from dataclasses import asdict

            from msdbench.drivers.beps_workload import BepsWorkload, make_plan
            plan = make_plan(BepsWorkload(**spec.pop("workload", {})))
            spec.update({k: v for k, v in asdict(plan).items() if k != "active"})
        raw = self._call_long("run_driver", json.dumps(spec), deadline)
        result = json.loads(raw)
        samples = {}
        for op, cols in result.pop("samples").items():
            out = {"warmup": [bool(w) for w in cols["warmup"]],
                   "e2e_ns": [us * 1000 for us in cols["e2e_us"]]}
            if "server_ns" in cols:
                out["server_ns"] = cols["server_ns"]
            samples[op] = out
        result["samples"] = samples
        return result

    def _call_long(self, method, arg, deadline):
        # The run takes a while: resend only rarely, and wait up to the cell's deadline.
        c = hostlink.client(self.link, "board", "Board", "board", deadline_s=deadline,
                            retry_s=max(5.0, self.backend.settings["retry_s"]))
        try:
            return getattr(c, method)(arg)
        except hostlink.LinkTimeout as e:
            raise BackendError(f"board on {self.board.port}: {method}: {e}") from None
        except Exception as e:
            why = getattr(e, "why", None) or getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            raise BackendError(f"board on {self.board.port}: {method} failed: {why}") from None

    def _host_driver(self, spec: dict) -> dict:
        from msdbench.drivers import run_driver

        if spec["driver"] == "micro":
            def connect():
                return hostlink.client(self.link, "poll", "Poll", "poll")
        else:
            def connect():
                return hostlink.client(self.link, "beps", "Frontend", "lb")
        try:
            return run_driver(spec, connect)
        except hostlink.LinkTimeout as e:
            raise BackendError(f"board on {self.board.port}: {e}") from None

    def link_stats(self) -> dict:
        """Both ends' link counters, and what the relay injected. The relay's count is read
        first: the ends' counts then include at least every fault it reports (the last exchange,
        this very call, may be damaged too, and only the ends would know)."""
        out = {}
        if self.relay is not None and self.relay_stats.exists():
            out["relay_injected"] = json.loads(self.relay_stats.read_text())
        try:
            out["board"] = json.loads(self._call("link_stats"))
        except BackendError as e:
            out["board"] = str(e)
        out["host"] = self.link.stats() if self.link else None
        return out

    def set_fault(self, service: str, fault: str, count: int = 1) -> None:
        """A service's fault switch on the board; or, test-only, ("board", "stop"): the board's
        process is stopped (SIGSTOP), a board that no longer answers."""
        if service == "board":
            if fault != "stop" or self.board.proc is None:
                raise BackendError(f"board fault {fault!r}: only 'stop', and only on a board "
                                   "this harness started (emulated, unix)")
            os.kill(self.board.proc.pid, signal.SIGSTOP)
            return
        self._call("set_fault", service, fault, count)

    def counters(self, service: str) -> dict:
        return json.loads(self._call("counters", service))

    def culprits(self) -> list[dict]:
        """The board, if it ended (msdbench/culprits.py): it serves every service of the cell."""
        status = self.board.alive()
        if not status:
            return []
        return [{"domain": "board", "services": [s.name for s in self.manifest.services
                                                 if s.name != self.manifest.client],
                 "host": "board", "where": f"{self.board.kind} board on {self.board.port}",
                 "status": status, "log_tail": self.board.log_tail(LOG_TAIL_LINES)}]

    def down(self) -> None:
        try:
            if self.link is not None:
                if self.board.kind == "serial":   # give a real board its REPL back
                    try:
                        hostlink.client(self.link, "board", "Board", "board", deadline_s=2).quit()
                    except Exception:
                        pass
                self.link.close()
                self.link = None
        finally:
            boards._end(self.relay)
            if self.relay is not None and self.relay.stdout:
                self.relay.stdout.close()
            self.relay = None
            self.host.down()
            self.backend.close()
