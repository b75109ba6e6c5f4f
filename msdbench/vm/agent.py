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

Answers carry "ok"; a failed request answers {"ok": false, "error": "..."}. The host starts
`python -m msdbench.domain ...` this way, the same program every backend runs. As PID 1 the agent
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
        self.children: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()

    def hello(self, req: dict, conn: socket.socket) -> dict:
        try:
            from importlib.metadata import version

            msdbench_version = version("msdbench")
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            msdbench_version = f"unknown ({e})"
        u = os.uname()
        return {"kernel": f"{u.sysname} {u.release}", "machine": u.machine,
                "python": sys.version.split()[0], "msdbench": msdbench_version,
                "cpus": os.cpu_count(), "address": self.address,
                "uptime_s": float(Path("/proc/uptime").read_text().split()[0])}

    def exec(self, req: dict, conn: socket.socket) -> None:
        ident = str(req["id"])
        if not ident or not set(ident) <= ID_CHARS:
            raise ValueError(f"id: {ident!r} must be made of a-z, 0-9, '-' and '_'")
        WORK.mkdir(parents=True, exist_ok=True)
        with open(WORK / f"{ident}.log", "wb") as log:
            proc = subprocess.Popen([str(a) for a in req["argv"]], stdin=conn.fileno(),
                                    stdout=conn.fileno(), stderr=log, cwd="/tmp",
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
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

    def serve(self) -> None:
        srv = socket.create_server((self.address, PORT))
        print(f"msdbench-agent: listening on {self.address}:{PORT}", file=sys.stderr, flush=True)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=self.serve_one, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    Agent(sys.argv[1]).serve()
