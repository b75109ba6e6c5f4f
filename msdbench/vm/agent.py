"""The guest agent: what PID 1 runs inside an msdbench VM (standard library only).

The guest's init (msdbench/vm/guest-init) mounts the pseudo file systems, configures eth0 from the
kernel command line and execs this program. It listens on the guest's address; each connection
sends one JSON line:

  {"op": "hello"}                        -> one JSON line back: kernel, python, msdbench version ...
  {"op": "exec", "id": ID, "argv": [..]} -> the connection *becomes* the stdin and stdout of a new
                                            process (its stderr goes to /tmp/msdbench/ID.log): the
                                            host's relay (msdbench.vm.relay) joins them to a local
                                            process's stdin and stdout, like `ssh host cmd` would
  {"op": "log", "id": ID, "lines": N}    -> {"exit": null | "exit code 1" | ..., "tail": "..."}

On its second serial port (/dev/ttyS1; the host's end is a Unix socket) it takes one request,
{"op": "readdress", "address": "A.B.C.D/N", "gw": "A.B.C.D"}: a guest restored from a snapshot
(msdbench/vm/snapshot.py) still has the address it was saved with and moves to its new link's.

Answers carry "ok"; a failed request answers {"ok": false, "error": "..."}. The host starts
`python -m msdbench.domain ...` this way, the same program every backend runs. The agent imports
the domain runtime, its drivers and the IDL before it answers its first hello, and starts such a
command by forking itself (its child then runs `msdbench.domain.main`, as `python -m` would): an
emulated guest spends ~10 s importing numpy and thriftpy2 and parsing the IDL, once per boot
instead of once per domain. As PID 1 the agent
waits for what it started (domains start no processes of
their own, so no orphans to reap); if it dies, the kernel panics and QEMU (-no-reboot) exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

PORT = 7100
WORK = Path("/tmp/msdbench")
ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
DOMAIN_MODULE = "msdbench.domain"
PRELOAD = ("msdbench.domain", "msdbench.drivers.micro", "msdbench.drivers.beps",
           "msdbench.drivers.beps_workload", "msdbench.services.poll", "msdbench.services.beps",
           "msdbench.transports.bindings", "numpy")


def preload() -> None:
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    from msdbench import idl

    for name in ("control", "poll", "beps"):
        idl.load(name)


class Forked:
    """A forked child, with the part of Popen's interface the agent uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _fork_domain(args: list[str], conn: socket.socket, log_path: Path) -> Forked:
    """`python -m msdbench.domain ARGS` without a new interpreter: a child of this (preloaded)
    process with the connection as stdin and stdout and the log as stderr."""
    pid = os.fork()
    if pid:
        return Forked(pid)
    code = 1
    try:
        os.setsid()
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(conn.fileno(), 0)
        os.dup2(conn.fileno(), 1)
        os.dup2(log, 2)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from msdbench.domain import main

        sys.argv = [DOMAIN_MODULE, *args]
        code = main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the agent
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


def _status(rc: int | None) -> str | None:
    if rc is None:
        return None
    return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"


def _read_line(conn: socket.socket) -> bytes:
    """The request line, byte by byte: what follows it is the child's stdin and must stay unread."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            break
        line += byte
    return bytes(line)


class Agent:
    def __init__(self, address: str):
        self.address = address
        self.children: dict[str, subprocess.Popen | Forked] = {}
        self.lock = threading.Lock()

    def hello(self, req: dict, conn: socket.socket) -> dict:
        try:
            from importlib.metadata import version

            msdbench_version = version("msdbench")
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            msdbench_version = f"unknown ({e})"
        u = os.uname()
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "unknown")
        try:
            from msdbench.transports.codec import _load_compiled

            codec = "compiled" if _load_compiled() else "pure Python"
        except ImportError:
            codec = "unknown"
        return {"kernel": f"{u.sysname} {u.release}", "machine": u.machine, "cpu_model": cpu,
                "codec": codec,
                "python": sys.version.split()[0], "msdbench": msdbench_version,
                "cpus": os.cpu_count(), "address": self.address,
                "uptime_s": float(Path("/proc/uptime").read_text().split()[0])}

    def exec(self, req: dict, conn: socket.socket) -> None:
        ident = str(req["id"])
        if not ident or not set(ident) <= ID_CHARS:
            raise ValueError(f"id: {ident!r} must be made of a-z, 0-9, '-' and '_'")
        WORK.mkdir(parents=True, exist_ok=True)
        argv = [str(a) for a in req["argv"]]
        if argv[1:3] == ["-m", DOMAIN_MODULE]:
            proc = _fork_domain(argv[3:], conn, WORK / f"{ident}.log")
        else:
            with open(WORK / f"{ident}.log", "wb") as log:
                proc = subprocess.Popen(argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=log,
                                        cwd="/tmp", env=dict(os.environ, PYTHONUNBUFFERED="1"))
        with self.lock:
            self.children[ident] = proc

    def log(self, req: dict, conn: socket.socket) -> dict:
        ident = str(req["id"])
        with self.lock:
            proc = self.children.get(ident)
        try:
            text = (WORK / f"{ident}.log").read_text(errors="replace")
        except OSError:
            text = "(no log)"
        return {"exit": _status(proc.poll()) if proc else "never started",
                "tail": "\n".join(text.splitlines()[-int(req.get("lines", 20)):])}

    def serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                req = json.loads(_read_line(conn))
                op = req.get("op")
                if op not in ("hello", "exec", "log"):
                    raise ValueError(f"op: {op!r} is not one of hello, exec, log")
                answer = getattr(self, op)(req, conn)
                if answer is None:   # exec: the connection is the child's now
                    return
                answer = {"ok": True, **answer}
            except Exception as e:  # noqa: BLE001 - every failure is an answer, never a dead agent
                answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            conn.sendall(json.dumps(answer).encode() + b"\n")

    def readdress(self, req: dict) -> dict:
        address, gw = str(req["address"]), str(req["gw"])
        for cmd in (["ip", "addr", "flush", "dev", "eth0"], ["ip", "addr", "add", address, "dev", "eth0"],
                    ["ip", "route", "replace", "default", "via", gw], ["ip", "neigh", "flush", "all"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        self.address = address.split("/")[0]
        return {"address": self.address}

    def serial_control(self, path: str = "/dev/ttyS1") -> None:
        import tty

        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)  # no echo, no line discipline: bytes in, bytes out
        buf = b""
        while True:
            buf += os.read(fd, 512)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if b"{" not in line:
                    continue  # line noise: a serial line is not a socket
                try:
                    req, _ = json.JSONDecoder().raw_decode(line[line.index(b"{"):].decode(errors="replace"))
                    if req.get("op") != "readdress":
                        raise ValueError(f"op: {req.get('op')!r} is not 'readdress'")
                    answer = {"ok": True, **self.readdress(req)}
                except Exception as e:  # noqa: BLE001 - answered, never fatal
                    answer = {"ok": False, "error": f"{type(e).__name__}: {e} in {line[:200]!r}"}
                os.write(fd, json.dumps(answer).encode() + b"\n")

    def serve(self) -> None:
        srv = socket.create_server(("0.0.0.0", PORT))
        print(f"msdbench-agent: listening on {self.address}:{PORT}", file=sys.stderr, flush=True)
        threading.Thread(target=self.serial_control, daemon=True, name="serial-control").start()
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=self.serve_one, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    preload()
    Agent(sys.argv[1]).serve()
