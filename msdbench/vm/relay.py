"""Run a command in a guest as if it ran here: `python -m msdbench.vm.relay ADDRESS ID -- ARGV...`.

What `ssh host cmd` is to the ssh host kind, this is to the vm kind (a guest has no sshd, and an
emulated one would spend seconds on every handshake): it asks the guest's agent (msdbench.vm.agent)
at ADDRESS to start ARGV with the connection as its stdin and stdout, then joins this process's
stdin and stdout to that connection. So the process backend drives a domain in a guest exactly as
one on this machine: the manifest goes in on stdin, the control line comes out on stdout, and
closing stdin (or this process ending) stops the domain. When the guest's process ends, its
stderr's last lines and exit status come out on this process's stderr (the domain's log).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

from msdbench.vm.agent import PORT

CONNECT_TIMEOUT_S = 10.0


def agent_request(address: str, request: dict, timeout: float = 30.0) -> dict:
    """One JSON request to the agent at `address`, one JSON answer (raises OSError, RuntimeError)."""
    with socket.create_connection((address, PORT), timeout=timeout) as s:
        s.sendall(json.dumps(request).encode() + b"\n")
        line = s.makefile("rb").readline()
    if not line:
        raise RuntimeError(f"the agent at {address}:{PORT} closed the connection")
    answer = json.loads(line)
    if not answer.pop("ok", False):
        raise RuntimeError(f"the agent at {address}:{PORT}: {answer.get('error')}")
    return answer


def _pump_stdin(sock: socket.socket) -> None:
    try:
        while chunk := os.read(0, 65536):
            sock.sendall(chunk)
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)  # the guest process sees its stdin close: the lifeline
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    address, ident, command = argv[0], argv[1], argv[3:]
    try:
        sock = socket.create_connection((address, PORT), timeout=CONNECT_TIMEOUT_S)
    except OSError as e:
        print(f"msdbench.vm.relay: cannot reach the guest's agent at {address}:{PORT}: {e}",
              file=sys.stderr)
        return 255
    sock.settimeout(None)
    sock.sendall(json.dumps({"op": "exec", "id": ident, "argv": command}).encode() + b"\n")
    threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    try:
        while chunk := sock.recv(65536):
            os.write(1, chunk)
    except OSError as e:
        print(f"msdbench.vm.relay: the connection to the guest broke: {e}", file=sys.stderr)
    try:
        info = agent_request(address, {"op": "log", "id": ident, "lines": 40}, timeout=10)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"msdbench.vm.relay: no word from the guest's agent after the process ended: {e}",
              file=sys.stderr)
        return 255
    print(f"--- in the guest ({info['exit'] or 'still running'}): last lines of its stderr ---\n"
          f"{info['tail']}", file=sys.stderr)
    status = info["exit"] or ""
    return int(status.split()[-1]) if status.startswith("exit code") else 1


if __name__ == "__main__":
    sys.exit(main())
