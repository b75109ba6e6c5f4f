"""Where a Docker Engine is, and how the harness reaches a container's control port on it.

Shared by the docker backend (msdbench/backends/docker.py) and the client's container on another
host (docker_hosts.py): `control_access` "ip" reaches the container at its IP on the cell network
(an engine on this machine), "published" at the engine host's published port (an engine elsewhere);
"auto" decides by where the engine is.
"""

from __future__ import annotations

import os
import socket
import urllib.parse

import psutil

CONTROL_PORT = 7000                      # inside each container (own network namespace: no clash)
CONTROL_ACCESS = ("auto", "ip", "published")


def engine_host(docker_host: str | None) -> str | None:
    """The engine's host name for tcp:// and ssh:// URLs; None for a local socket."""
    url = docker_host or os.environ.get("DOCKER_HOST") or ""
    if not url or url.startswith(("unix://", "npipe://", "fd://")):
        return None
    return urllib.parse.urlparse(url).hostname


def is_this_machine(host: str | None) -> bool:
    """Whether an engine host name (None: a local socket) is this machine, by name or address."""
    if host is None:
        return True
    if host in ("localhost", "::1") or host.startswith("127."):
        return True
    names = {socket.gethostname(), socket.getfqdn()}
    if host in names:
        return True
    try:
        mine = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
        return bool({ai[4][0] for ai in socket.getaddrinfo(host, None)} & mine)
    except OSError:
        return False


def control_access(asked: str, docker_host: str | None) -> str:
    """"ip" or "published" for an engine (see the module doc); "auto" decides by where it is."""
    if asked != "auto":
        return asked
    return "ip" if is_this_machine(engine_host(docker_host)) else "published"


def display_host(docker_host: str | None) -> str:
    """The engine as messages and metadata name it."""
    return docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (default)"
