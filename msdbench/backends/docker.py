"""The docker backend: each isolation domain is a container, driven through the Docker Engine API.

One cell, one bring-up:

* **Image**: `docker_image.ensure_image` (registry-free; reused by content hash, ~0.3 s when present).
  Its id goes into the cell's metadata (`describe()`).
* **Network**: a user-defined bridge network per bring-up, ``msdbench-<run id>``. Services find each
  other by container name through the engine's DNS (each domain advertises its container name),
  never by a fixed address.
* **Containers**: one per domain, ``msdbench-<run id>-<domain>``, running
  ``python -m msdbench.domain --manifest /tmp/manifest.json --domain D --bind NAME --advertise NAME``:
  every service (and the control service) listens on the container's address on the cell network
  only (NAME resolves to it inside the container), not on every interface.
  The manifest travels in an environment variable and is written to the container's own tmpfs before
  the runtime starts, so nothing of the host's filesystem is mounted (which also works for a remote
  engine). Unprivileged: image user 10001, ``cap_drop=ALL``, ``no-new-privileges``, read-only root with
  tmpfs at /tmp and /home/msd, ``init=True`` (a stop is immediate), a pids limit, a memory limit
  (swap included; the cell's ``settings.docker.memory``, config key ``docker.memory``, default
  ``config.DOCKER_MEMORY``: a domain that exceeds it is OOM-killed and its cell names it). Pinned with
  ``cpuset_cpus`` = the domain's cpus (the runtime's sched_setaffinity inside agrees with it).
* **shm edges** (platform `specialized` between domains): the Unix sockets that set the channels up
  live in a tmpfs volume shared by the cell's containers (``$TMPDIR``); the memory itself travels as
  memfd descriptors, which cross container boundaries.
* **Control**: the domain prints ``MSDBENCH-CONTROL name:port``; the harness reads it from the
  container log and connects to the port at the container's IP on the cell network (the host reaches
  bridge IPs on Linux): `control_access="ip"`. For an engine on another host the harness cannot reach
  those IPs, so the control port is published on the engine host instead and reached at
  ``<engine host>:<published port>``: `control_access="published"` (unauthenticated Thrift: use a
  trusted network). "auto" (the default, or $MSDBENCH_DOCKER_CONTROL) picks "ip" for a local socket and
  for ssh:// or tcp:// to this machine, "published" otherwise. The measured calls never leave the engine
  host: the client runs in a container too (deployment 1 inside the entry service's container,
  deployment 2 in its own, on the same network). Deployment 5 puts the client's container on another
  host and publishes the entry service to it: msdbench/backends/docker_hosts.py.

Everything created carries the labels ``msdbench=1``, ``msdbench.run=<run id>`` and
``msdbench.owner=<hostname>:<pid>:<process start time>``. Teardown (after every cell, after a failure, on
Ctrl-C/SIGTERM: `Deployment.down` -> `stop_domain` per domain, then `teardown`) removes the run's
containers, network and volume by that run label, so even a container created but not yet handed to the
deployment goes. A harness killed with SIGKILL cannot clean up: the next bring-up on that engine warns
about what it finds (never deleting another run's objects by itself), and ``msdbench clean`` removes the
leftovers of runs whose owner process is dead (``--all``: every run's, live or not; images only with
``--images``: the stale ones, see docker_image.prune_images).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from msdbench.backends import docker_engine, docker_hosts, docker_image
from msdbench.backends.base import Backend, BackendError, DomainHandle
from msdbench.backends.docker_engine import CONTROL_ACCESS, CONTROL_PORT, display_host, engine_host
from msdbench.config import DOCKER_MEMORY
from msdbench.idl import CONTROL_LINE
from msdbench.lifetime import owner_label, owner_label_alive
from msdbench.manifest import Manifest

log = logging.getLogger("msdbench.backends.docker")

LABEL = "msdbench"
RUN_LABEL = "msdbench.run"
OWNER_LABEL = "msdbench.owner"
START_TIMEOUT_S = 60.0
LAUNCH_THREADS = 4
STOP_GRACE_S = 3.0
IPC_DIR = "/run/msdbench-ipc"           # the shared tmpfs volume for shm set-up sockets
MANIFEST_IN_CONTAINER = "/tmp/manifest.json"
ENV_MANIFEST = "MSDBENCH_MANIFEST"
# Writes the manifest from the environment into the container's tmpfs, then runs the domain runtime
# (python -c: sys.argv[1:] are the runtime's own arguments).
BOOT = ("import os, sys; "
        f"open({MANIFEST_IN_CONTAINER!r}, 'w').write(os.environ.pop({ENV_MANIFEST!r})); "
        "from msdbench.domain import main; sys.exit(main(sys.argv[1:]))")


def _say(msg: str) -> None:
    print(f"msdbench docker: {msg}", file=sys.stderr, flush=True)


# --- the backend ----------------------------------------------------------------------------


def memory_limit(manifest: Manifest) -> str:
    """Each container's memory limit (docker units), from the cell's settings."""
    return (manifest.settings.get("docker") or {}).get("memory") or DOCKER_MEMORY



class DockerBackend(Backend):
    name = "docker"

    def __init__(self, workdir: str | Path | None = None, docker_host: str | None = None,
                 image: str | None = None, control_access: str | None = None,
                 project_root: str | Path | None = None):
        """docker_host: None = $DOCKER_HOST or the local socket; "tcp://...", "ssh://user@host[:port]".
        image: a tag or id to run instead of building/reusing the project's image (ensure_image).
        control_access: "auto" | "ip" | "published" (see the module doc); default $MSDBENCH_DOCKER_CONTROL
        or "auto"."""
        self.workdir = Path(workdir) if workdir is not None else None
        self.docker_host = docker_host or None
        self._image_ref = image or os.environ.get("MSDBENCH_DOCKER_IMAGE") or None
        self.project_root = Path(project_root) if project_root else docker_image._default_project_root()
        access = control_access or os.environ.get("MSDBENCH_DOCKER_CONTROL") or "auto"
        if access not in CONTROL_ACCESS:
            raise ValueError(f"control_access: {access!r} is not one of {CONTROL_ACCESS}")
        self._access_asked = access
        self.control_access = docker_engine.control_access(access, self.docker_host)
        self._client = None
        self._unavailable: str | None = None
        self.image: dict | None = None
        self.memory: str | None = None
        self.engine: dict = {}
        self.run_id: str | None = None
        self.network: str | None = None
        self.volume: str | None = None
        self.containers: dict[str, dict] = {}
        self._pending: dict[str, tuple] = {}
        self.leftovers: dict = {}
        self.timings: dict = {}
        self.away: docker_hosts.Away | None = None   # the client's domain on another host

    # -- the engine ------------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            try:
                self._client = docker_image.connect(self.docker_host)
            except docker_image.DockerUnavailable as e:
                raise BackendError(str(e)) from None
        return self._client

    def unavailable_reason(self) -> str | None:
        """Why no docker cell can run here (the engine named), or None when the engine answers."""
        if self._client is not None:
            return None
        try:
            self._client = docker_image.connect(self.docker_host)
        except docker_image.DockerUnavailable as e:
            self._unavailable = str(e)
            if "paramiko" in self._unavailable:
                self._unavailable += " (ssh:// needs paramiko: pip install 'msdbench[docker-ssh]')"
            return self._unavailable
        return None

    def _labels(self, **extra) -> dict:
        return {LABEL: "1", RUN_LABEL: self.run_id, OWNER_LABEL: self.owner, **extra}

    def image_on(self, client, docker_host: str | None) -> dict:
        """The service image on one engine: the given one (looked up) or the project's (built there
        when missing)."""
        if self._image_ref:
            import docker

            try:
                img = client.images.get(self._image_ref)
            except docker.errors.ImageNotFound:
                raise BackendError(f"image {self._image_ref!r} is not on the engine at "
                                   f"{display_host(docker_host)}") from None
            return {"tag": (img.tags or [self._image_ref])[0], "id": img.id, "given": True}
        try:
            return docker_image.ensure_image(self.project_root, docker_host, log=_say)
        except docker_image.DockerUnavailable as e:
            raise BackendError(str(e)) from None
        except docker_image.ImageBuildError as e:
            raise BackendError(f"the container image could not be built: {e}") from None

    # -- Backend ----------------------------------------------------------------------------------
    def before_hosts(self, manifest: Manifest, hosts) -> None:
        """The run's id and image; for a client on a netns host, the container whose network
        namespace that host becomes (docker_hosts.Away)."""
        self.away = None
        client = self.client()
        self.run_id = uuid.uuid4().hex[:12]
        self.owner = owner_label()
        self.containers = {}
        self.memory = memory_limit(manifest)
        self.leftovers = check_leftovers(client, exclude_run=self.run_id)
        t0 = time.monotonic()
        if self.image is None or self._image_ref:
            self.image = self.image_on(client, self.docker_host)
        self.timings["image_s"] = round(time.monotonic() - t0, 3)
        self.away = docker_hosts.Away.of(self, manifest, hosts)
        if self.away:
            self.away.before_hosts()

    def prepare(self, manifest: Manifest) -> None:
        client = self.client()
        if not self.engine:
            v = client.version()
            info = client.info()
            self.engine = {"host": display_host(self.docker_host), "version": v.get("Version"),
                           "api_version": v.get("ApiVersion"), "os": info.get("OperatingSystem"),
                           "kernel": info.get("KernelVersion"), "cgroup": info.get("CgroupVersion"),
                           "storage_driver": info.get("Driver"), "ncpu": info.get("NCPU")}
        self.network = f"msdbench-{self.run_id}"
        client.networks.create(self.network, driver="bridge", check_duplicate=True,
                               labels=self._labels(**{"msdbench.role": "network"}))
        self.volume = None
        if any(e.transport == "shm" for e in manifest.edges):
            self.volume = f"msdbench-{self.run_id}-ipc"
            client.volumes.create(self.volume, driver="local", labels=self._labels(**{"msdbench.role": "ipc"}),
                                  driver_opts={"type": "tmpfs", "device": "tmpfs",
                                               "o": "uid=10001,gid=10001,mode=0700"})
        if self.away:  # its engine, network, image (an ssh host); hosts are up now
            self.away.prepare()
        self._manifest_json = json.dumps(manifest.to_dict())
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            manifest.save(self.workdir / "manifest.yaml")
        # Every domain's container starts now, a few at a time (the engine and the Python start-ups
        # overlap: ~40% less bring-up than one after another); start_domain waits for each.
        t0 = time.monotonic()
        self._pending = {}
        # Over ssh:// one at a time: each request in flight is an SSH channel, and sshd allows 10 per
        # connection (MaxSessions) by default.
        threads = 1 if display_host(self.docker_host).startswith("ssh://") or (
            self.away and self.away.host.kind == "ssh") else LAUNCH_THREADS
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="msdbench-launch")
        try:
            futures = {d.name: pool.submit(self._launch, manifest, d.name) for d in manifest.domains}
            wait(futures.values())
        finally:  # also on Ctrl-C: no launch may still run when teardown lists the run's containers
            pool.shutdown(wait=True, cancel_futures=True)
        errors = []
        for domain, f in futures.items():
            if f.cancelled():
                errors.append(f"{domain}: not launched")
            elif f.exception() is None:
                self._pending[domain] = f.result()
            else:
                errors.append(f"{domain}: {type(f.exception()).__name__}: {f.exception()}")
        if errors:  # Deployment.up takes everything down (teardown by run label)
            raise BackendError("could not start the domains' containers: " + "; ".join(errors))
        self.timings["launch_s"] = round(time.monotonic() - t0, 3)

    def _launch(self, manifest: Manifest, domain: str):
        """Create and start the container of one domain; (container, timings). Does not wait for it."""
        from docker.types import Mount

        client = self.client()
        d = manifest.domain(domain)
        name = f"{self.network}-{domain}"
        env = {ENV_MANIFEST: self._manifest_json, "PYTHONUNBUFFERED": "1"}
        mounts = []
        if self.volume:
            env["TMPDIR"] = IPC_DIR
            mounts.append(Mount(IPC_DIR, self.volume, type="volume"))
        cpuset = ",".join(str(c) for c in d.cpus) if d.cpus else None
        memory = memory_limit(manifest)
        ports = None
        if self.control_access == "published":
            bind = "127.0.0.1" if engine_host(self.docker_host) is None else "0.0.0.0"
            ports = {f"{CONTROL_PORT}/tcp": (bind, None)}
        # Where it runs: this engine's cell network, by name (the default)...
        image, bind, extra = self.image["id"], name, []
        where = {"hostname": name, "network": self.network, "ports": ports}
        if self.away and d.host == self.away.host.name:  # ...or the client's other host
            client, image, bind, where = self.away.placement(name)
            mounts = []  # its one edge is thrift-tcp to the entry service: no shm set-up
            env.pop("TMPDIR", None)
        elif self.away and self.away.entry_domain == domain:  # the client's callee: published
            extra, published = self.away.entry_ports()
            where["ports"] = (ports or {}) | published
        t0 = time.monotonic()
        container = client.containers.create(
            image,
            ["python", "-c", BOOT, "--manifest", MANIFEST_IN_CONTAINER, "--domain", domain,
             "--bind", bind, "--advertise", bind, "--control-port", str(CONTROL_PORT), *extra],
            name=name, environment=env, **where,
            labels=self._labels(**{"msdbench.role": "domain", "msdbench.domain": domain,
                                   "msdbench.cell": f"{manifest.suite}/{manifest.platform}/"
                                                    f"{manifest.isolation}/d{manifest.deployment}"}),
            init=True, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            tmpfs={"/tmp": "rw,nosuid,nodev,size=64m,mode=1777",
                   "/home/msd": "rw,nosuid,nodev,size=16m,mode=1777"},
            mounts=mounts, cpuset_cpus=cpuset, pids_limit=4096, mem_limit=memory,
            memswap_limit=memory, detach=True)
        t1 = time.monotonic()
        container.start()
        t2 = time.monotonic()
        return container, {"name": name, "id": container.id, "cpuset": cpuset, "t0": t0,
                           "create_s": round(t1 - t0, 3), "start_s": round(t2 - t1, 3), "t_started": t2}

    def start_domain(self, manifest: Manifest, domain: str) -> DomainHandle:
        """Wait until the domain's container (launched by `prepare`, or now) prints its control line."""
        if domain in self._pending:
            container, info = self._pending.pop(domain)
        else:
            container, info = self._launch(manifest, domain)
        handle = DomainHandle(domain, "", container)
        try:
            port = self._read_control_port(handle)
            t_ready = time.monotonic()
            container.reload()
            net = container.attrs["NetworkSettings"]
            if self.away and manifest.domain(domain).host == self.away.host.name:
                ip, handle.control_address = self.away.control(container, port)
            else:
                ip = net["Networks"][self.network]["IPAddress"]
                if self.control_access == "ip":
                    handle.control_address = f"{ip}:{port}"
                else:
                    published = net["Ports"][f"{CONTROL_PORT}/tcp"][0]
                    host = engine_host(self.docker_host) or "127.0.0.1"
                    handle.control_address = f"{host}:{published['HostPort']}"
                if self.away and self.away.entry_domain == domain:
                    self.away.published(name=container.name, ports=net["Ports"])
        except BaseException:
            self._remove(container)
            raise
        t0, t_started = info.pop("t0"), info.pop("t_started")
        self.containers[domain] = {**info, "ip": ip, "control": handle.control_address,
                                   "memory_bytes": container.attrs["HostConfig"].get("Memory"),
                                   "ready_s": round(t_ready - t_started, 3),
                                   "start_to_ready_s": round(t_ready - t0, 3)}
        return handle

    def _read_control_port(self, h: DomainHandle) -> int:
        container = h.native
        deadline = time.monotonic() + START_TIMEOUT_S
        polls = 0
        while time.monotonic() < deadline:
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            for line in out.splitlines():
                if line.startswith(CONTROL_LINE):
                    return int(line.split()[1].rsplit(":", 1)[1])
            polls += 1
            if polls % 10 == 0 and self.exit_status(h):
                break
            time.sleep(0.01)
        status = self.exit_status(h) or f"no control line within {START_TIMEOUT_S:.0f} s"
        raise BackendError(f"domain {h.name!r} (container {container.name}) did not start: {status}\n"
                           f"--- last lines of its log ---\n{self.log_tail(h)}")

    def exit_status(self, h: DomainHandle) -> str | None:
        import docker

        try:
            h.native.reload()
        except docker.errors.NotFound:
            return f"container {h.native.name} was removed"
        except Exception as e:
            return f"unknown: the engine did not answer ({type(e).__name__}: {e})"
        state = h.native.attrs["State"]
        if state.get("Running") and not state.get("Paused"):
            return None
        if state.get("Paused"):
            return "paused"
        code = state.get("ExitCode")
        why = f"exit code {code}"
        if state.get("OOMKilled"):
            why += " (OOM-killed)"
        elif isinstance(code, int) and code > 128:
            try:
                import signal
                why += f" ({signal.Signals(code - 128).name})"
            except ValueError:
                pass
        if state.get("Error"):
            why += f": {state['Error']}"
        return why

    def seen_from(self, domain: str, advertised: str) -> str:
        """For the client's domain on another host: the entry service's ports as published."""
        return self.away.seen_from(domain, advertised) if self.away else advertised

    def reachable(self, h: DomainHandle, advertised: str) -> str:
        """NAME:port (the engine's DNS, inside the cell network) -> IP:port from this host."""
        if self.control_access != "ip":
            raise BackendError("the services of a cell on a remote engine are reachable only inside "
                               f"its network on {display_host(self.docker_host)}")
        return f"{self.containers[h.name]['ip']}:{advertised.rpartition(':')[2]}"

    def where(self, h: DomainHandle) -> str:
        if self.away and h.name == self.away.domain:
            return f"container {h.native.name} on {self.away.where()}"
        return f"container {h.native.name} on {display_host(self.docker_host)}"

    def log_tail(self, h: DomainHandle, lines: int = 20) -> str:
        try:
            return h.native.logs(stdout=True, stderr=True, tail=lines).decode(errors="replace").rstrip()
        except Exception as e:
            return f"(no log: {type(e).__name__}: {e})"

    def stop_domain(self, h: DomainHandle) -> None:
        """After the control service's shutdown the domain exits by itself; give it a moment, then
        remove the container (forced: a stuck domain is killed)."""
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            status = self.exit_status(h)
            if status is not None:
                break
            time.sleep(0.02)
        self._remove(h.native)

    def _remove(self, container) -> None:
        import docker

        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                raise

    def teardown(self, manifest: Manifest | None = None) -> None:
        """Remove everything of this bring-up by its run label: containers (also one created but not
        yet handed to the deployment), then the network and the shm volume. Never raises: what cannot
        be removed is named, with the command that removes it later."""
        if self.run_id is None or self._client is None:
            return
        left = []
        for client in [self._client] + ([self.away.client] if self.away and self.away.client
                                        and self.away.client is not self._client else []):
            try:
                left += remove_run(client, self.run_id)
            except Exception as e:  # the engine went away
                left += [f"everything ({type(e).__name__}: {e})"]
        if self.away:
            self.away.close()
        if left:
            log.warning("msdbench docker: could not remove %s of run %s; `msdbench clean` removes them",
                        ", ".join(left), self.run_id)
        self.network = self.volume = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> dict:
        out = {"backend": self.name, "engine": self.engine, "run_id": self.run_id,
               "network": self.network, "control_access": self.control_access,
               "containers": self.containers,
               "security": {"user": docker_image.IMAGE_USER, "cap_drop": ["ALL"], "read_only_root": True,
                            "no_new_privileges": True, "init": True},
               "memory_limit": self.memory, "listen": "the container's address on the cell network",
               "timings": self.timings}
        if self.away:
            out["client_host"] = self.away.describe()
        if self.image:
            out["image"] = {k: self.image.get(k) for k in ("tag", "id", "base_tag", "hash", "cached",
                                                           "build_seconds") if k in self.image}
        if self.leftovers.get("running") or self.leftovers.get("orphaned"):
            out["other_runs_on_engine"] = self.leftovers
        return out


# --- leftovers -------------------------------------------------------------------------------


def _objects(client, run: str | None = None) -> dict[str, list]:
    """The containers, networks and volumes of every run (or of one run), by kind."""
    flt = {"label": [f"{RUN_LABEL}={run}" if run else RUN_LABEL]}
    # sparse: the list call only (no inspect per container, which races with another run's teardown)
    return {"containers": client.containers.list(all=True, filters=flt, sparse=True),
            "networks": client.networks.list(filters=flt),
            "volumes": client.volumes.list(filters=flt)}


def _name_of(obj) -> str:
    attrs = obj.attrs
    return (attrs.get("Name") or (attrs.get("Names") or [obj.id[:12]])[0]).lstrip("/")


def _labels_of(obj) -> dict:
    attrs = obj.attrs
    return (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}


def runs_on_engine(client) -> dict[str, dict]:
    """{run id: {"owner", "alive" (True/False/None), "containers": [names], "networks", "volumes"}}."""
    runs: dict[str, dict] = {}
    for kind, objs in _objects(client).items():
        for obj in objs:
            labels = _labels_of(obj)
            run = labels.get(RUN_LABEL)
            if not run:
                continue
            r = runs.setdefault(run, {"owner": labels.get(OWNER_LABEL), "containers": [], "networks": [],
                                      "volumes": []})
            r[kind].append(_name_of(obj))
    for r in runs.values():
        r["alive"] = owner_label_alive(r["owner"])
    return runs


def check_leftovers(client, exclude_run: str | None = None) -> dict:
    """Warn about other runs' objects on the engine; delete nothing. Another live run shares the CPUs
    with this measurement; a dead run's objects are leftovers of a crash (`msdbench clean`)."""
    try:
        runs = runs_on_engine(client)
    except Exception as e:  # a check, not a reason to fail the cell
        log.warning("msdbench docker: could not list other runs' objects: %s", e)
        return {}
    runs.pop(exclude_run, None)
    running = sorted(r for r, v in runs.items() if v["alive"] is not False and v["containers"])
    orphaned = sorted(r for r, v in runs.items() if v["alive"] is False)
    if running:
        log.warning("msdbench docker: %d other msdbench run(s) have containers on this engine (%s); they "
                    "share its CPUs with this measurement", len(running), ", ".join(running))
    if orphaned:
        log.warning("msdbench docker: leftovers of %d crashed run(s) on this engine (%s); "
                    "`msdbench clean` removes them", len(orphaned), ", ".join(orphaned))
    return {"running": running, "orphaned": orphaned}


def remove_run(client, run: str) -> list[str]:
    """Remove one run's containers, then its networks and volumes; what could not be removed."""
    import docker

    left = []
    objs = _objects(client, run)
    for kind in ("containers", "networks", "volumes"):
        for obj in objs[kind]:
            try:
                if kind == "containers":
                    obj.remove(force=True, v=True)
                else:
                    obj.remove()
            except docker.errors.NotFound:
                pass
            except Exception as e:
                if kind == "containers" and "already in progress" in str(e):
                    continue
                left.append(f"{kind[:-1]} {_name_of(obj)} ({type(e).__name__}: {e})")
    return left


def clean(docker_host: str | None = None, everything: bool = False, dry_run: bool = False,
          out=print) -> int:
    """`msdbench clean`: remove the containers, networks and volumes of runs whose owner process is dead
    (on this machine); with `everything`, of every run (live ones and other machines' too). Images are
    kept. Returns the number of runs removed."""
    client = docker_image.connect(docker_host)
    try:
        runs = runs_on_engine(client)
        if not runs:
            out(f"no msdbench containers, networks or volumes on {display_host(docker_host)}")
            return 0
        removed = 0
        for run, r in sorted(runs.items()):
            what = (f"run {run} (owner {r['owner']}, "
                    + {True: "alive", False: "dead", None: "unknown"}[r["alive"]] + "): "
                    + ", ".join(f"{len(r[k])} {k}" for k in ("containers", "networks", "volumes") if r[k]))
            if r["alive"] is not False and not everything:
                out(f"kept    {what}: {'still running' if r['alive'] else 'owner not on this machine'}; "
                    "--all removes it")
                continue
            if dry_run:
                out(f"would remove {what}")
                continue
            left = remove_run(client, run)
            out(f"removed {what}" + (f"; could not remove: {'; '.join(left)}" if left else ""))
            removed += 1
        return removed
    finally:
        client.close()
