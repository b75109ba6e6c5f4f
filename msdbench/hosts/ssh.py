"""The `ssh` host kind: a real remote host, ``ssh://user@host[:port]``.

Domains are started there with the system's `ssh` client (so ~/.ssh/config, keys and the agent
apply; `options` adds arguments, e.g. ``[-i, /path/key]``), as
``<python> -m msdbench.domain --manifest - ... --owner <host>:<pid>:<start>``: the manifest
travels on stdin, and stdin stays open as the domain's lifeline. When the harness ends in any way
(even SIGKILL: the ssh client dies with it), the connection closes, the remote stdin reaches EOF
and the domain stops; `--owner` (the harness's owner label: this machine's name, its pid and start
time) labels the remote process in `ps`, and `msdbench clean` kills a domain there whose owner is
gone but which did not stop (`clean`, through ``python -m msdbench.hosts.owned``).

Bring-up checks, before anything starts, that the host answers and that msdbench there is the
same version as here (the version and a hash of the measured code, `python -m
msdbench.hosts.facts`): an unreachable host is *unavailable* (its cells are skipped with the
reason); a missing or different msdbench is an error that says so.

The docker backend starts the client's container on the host's engine (`docker_host`, default
the url itself: the SDK's ssh:// transport, with ~/.ssh/config and the agent; `options` are for
the ssh command only); see msdbench/backends/docker_hosts.py.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import urllib.parse

from msdbench.hosts import Host, HostError, HostUnavailable

PROBE_TIMEOUT_S = 30.0
SSH_OPTIONS = ["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
               "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3"]


class SshHost(Host):
    kind = "ssh"
    FIELDS = {"url": "ssh://user@host[:port]",
              "python": "the interpreter command there (default python3), e.g. "
                        "'/opt/venv/bin/python' or 'env PYTHONPATH=/src python3'",
              "options": "extra ssh arguments, a list (e.g. [-i, ~/.ssh/bench_key])",
              "address": "where this machine reaches domains on the host (default: the url's host)",
              "docker_host": "the host's Docker Engine, for the docker backend (default: the url; "
                             "ssh://user@host[:port] or tcp://host:port)"}

    def check_spec(self) -> None:
        url = self.spec.get("url")
        if not isinstance(url, str):
            raise HostError(f"{self.field('url')}: required, ssh://user@host[:port]")
        u = urllib.parse.urlparse(url)
        try:
            port = u.port
        except ValueError:
            port = -1
        if u.scheme != "ssh" or not u.hostname or port == -1 or u.path not in ("", "/"):
            raise HostError(f"{self.field('url')}: {url!r} is not ssh://user@host[:port]")
        opts = self.spec.get("options", [])
        if not isinstance(opts, list) or not all(isinstance(o, str) for o in opts):
            raise HostError(f"{self.field('options')}: a list of strings (ssh arguments)")
        self.url = u
        dh = self.spec.get("docker_host")
        if dh is not None and not (isinstance(dh, str) and dh.startswith(("ssh://", "tcp://"))):
            raise HostError(f"{self.field('docker_host')}: {dh!r} is not ssh://user@host[:port] "
                            "or tcp://host:port")
        self.python = shlex.split(self.spec.get("python") or "python3")

    def ssh(self, remote: list[str]) -> list[str]:
        u = self.url
        target = f"{u.username}@{u.hostname}" if u.username else u.hostname
        port = ["-p", str(u.port)] if u.port else []
        return ["ssh", *SSH_OPTIONS, *port, *self.spec.get("options", []), target, "--",
                shlex.join(remote)]

    def where(self) -> str:
        return f"host {self.name!r} ({self.spec['url']})"

    @property
    def docker_url(self) -> str:
        """The host's Docker Engine as the docker backend reaches it: `docker_host`, else the url."""
        return self.spec.get("docker_host") or self.spec["url"]

    def probe(self) -> dict:
        """The host's facts, run there; HostUnavailable / HostError say what is wrong."""
        try:
            r = subprocess.run(self.ssh([*self.python, "-m", "msdbench.hosts.facts"]),
                               capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HostUnavailable(f"{self.where()}: unreachable: no answer within "
                                  f"{PROBE_TIMEOUT_S:.0f} s") from None
        err = (r.stderr.strip().splitlines() or [""])[-1]
        if r.returncode == 255:
            raise HostUnavailable(f"{self.where()}: unreachable ({self.field('url')}): {err}")
        if r.returncode != 0:
            missing = "No module named" in r.stderr or "not found" in r.stderr
            raise HostError(f"{self.where()}: {self.field('python')}: "
                            + ("msdbench is not installed for "
                               f"{shlex.join(self.python)!r} there" if missing else "failed")
                            + f": {err}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def up(self) -> None:
        from msdbench.hosts.facts import facts

        self.remote = self.probe()
        here = facts()
        for key in ("msdbench", "code_sha256"):
            if self.remote.get(key) != here[key]:
                raise HostError(
                    f"{self.where()}: {self.field('python')}: msdbench there is "
                    f"{self.remote.get('msdbench')} (code {str(self.remote.get('code_sha256'))[:12]}), "
                    f"here {here['msdbench']} (code {here['code_sha256'][:12]}): install the same "
                    "version there")
        if not self.address:
            try:
                self.address = socket.gethostbyname(self.url.hostname)
            except OSError as e:
                raise HostUnavailable(f"{self.where()}: {self.field('url')}: {e}") from None

    def command(self, args: list[str]) -> list[str]:
        return self.ssh([*self.python, *args])

    def facts(self) -> dict:
        r = getattr(self, "remote", {})
        return {"kind": self.kind, "address": self.address, "url": self.spec["url"],
                "kernel": r.get("kernel"), "cpu_model": r.get("cpu_model"),
                "hostname": r.get("hostname"), "python": r.get("python"),
                "msdbench": r.get("msdbench"), "link": None}

    # -- leftovers -----------------------------------------------------------------------------
    def clean(self, everything: bool = False, dry_run: bool = False, say=print) -> list[dict]:
        """`msdbench clean` on this host: kill the msdbench domains there whose owner (a harness
        on this machine) is gone; `everything`: every msdbench domain there. Returns them."""
        from msdbench.lifetime import owner_label_alive

        def run(args: list[str]) -> list[dict]:
            r = subprocess.run(self.ssh([*self.python, "-m", "msdbench.hosts.owned", *args]),
                               capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                err = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
                raise HostUnavailable(f"{self.where()}: {err}")
            return json.loads(r.stdout.strip().splitlines()[-1])

        try:
            found = run([])
        except (HostUnavailable, subprocess.TimeoutExpired, ValueError) as e:
            say(f"{self.where()}: not checked ({e})")
            return []
        dead = [d for d in found if everything or owner_label_alive(d["owner"]) is False]
        for d in found:
            if d not in dead:
                say(f"kept    process {d['pid']} on {self.where()} (owner {d['owner']}: "
                    + ("still running" if owner_label_alive(d["owner"]) else
                       "not on this machine; --all removes it") + ")")
        if dead and not dry_run:
            killed = {d["pid"] for d in run(["--kill", *sorted({d["owner"] for d in dead})])}
            dead = [d for d in dead if d["pid"] in killed]
        for d in dead:
            say(f"{'would remove' if dry_run else 'removed'} process {d['pid']} on "
                f"{self.where()} (owner {d['owner']}, gone)")
        return dead
