"""The docker backend with the client's domain on another host (deployment 5).

The server side runs as in deployment 2: a container per domain on this machine's engine, on the
cell network. The client's container runs elsewhere:

* on a **netns host** (an emulated host): the host *is* a container's network namespace. Before
  the hosts come up, a holder container (``sleep``, ``network_mode: none``: a loopback only) is
  started; the netns host names its namespace (``ip netns attach``) and plumbs its veth link into
  it exactly as into a fresh one (the /30, the route, tbf on both ends); the client's container
  then joins it (``network_mode: container:<holder>``) and binds the host's address. (Kubernetes'
  "pause" container holds a pod's namespace the same way.) The holder is labelled with the run,
  the namespace named with the owner tag, so teardown and `msdbench clean` find both.
* on an **ssh host** (a real remote host): the client's container runs on that host's engine
  (``hosts.NAME.docker_host``, default the host's own ``url``, ``ssh://user@host[:port]``), on a
  bridge network of its own there, from the same image (built there when missing). Its control
  port is reached as for any engine (`control_access`: published on that host, or its IP).

The client reaches the server side only at this machine's address facing its host (the local end
of the link): the entry service's container listens on fixed ports inside (`ENTRY_PORT` for the
entry service, the next one for the TCP echo reference) and publishes them on that address alone.
Docker forwards to a container from another interface only through a published port (DNAT; its
FORWARD policy drops plain forwarding), so the client's socket peer is that address, and every
call crosses the link.
"""

from __future__ import annotations

from msdbench.backends.docker_engine import (CONTROL_PORT, control_access, engine_host,
                                             is_this_machine)
from msdbench.errors import BackendError
from msdbench.hosts import HostUnavailable

ENTRY_PORT = 7001   # inside the entry service's container (its own network namespace: no clash)
KINDS = ("netns", "ssh")


class Away:
    """The client's domain on a host other than the server side's, for one bring-up."""

    def __init__(self, backend, manifest, host):
        self.backend, self.manifest, self.host = backend, manifest, host
        self.domain = manifest.client_domain().name
        entry = manifest.edges_from(manifest.client)[0].callee
        self.entry_domain = manifest.service(entry).domain
        self.client = None      # the engine of the client's container
        self.docker_host: str | None = None
        self.holder = None      # netns: the container whose namespace the host is
        self.network: str | None = None
        self.image: dict | None = None
        self.access: str | None = None
        self.same_engine: bool | None = None  # ssh: that host's engine is the server side's own
        self.outside: dict[str, str] = {}  # "container:port" on the cell network -> published

    @classmethod
    def of(cls, backend, manifest, hosts) -> "Away | None":
        d = manifest.client_domain()
        if d.host == "local":
            return None
        host = hosts[d.host]
        if host.kind not in KINDS:
            raise BackendError(f"hosts.{host.name}.kind: {host.kind!r}; the docker backend puts "
                               f"the client on a host of kind {' or '.join(KINDS)}")
        if not is_this_machine(engine_host(backend.docker_host)):
            raise BackendError(f"docker_host: {backend.docker_host!r}; with the client on another "
                               "host the server side's engine must be this machine's (its ports "
                               "are published on this machine's address facing that host)")
        return cls(backend, manifest, host)

    # -- bring-up ------------------------------------------------------------------------------
    def before_hosts(self) -> None:
        from msdbench.hosts import netns

        if self.host.kind != "netns" or not netns.can_manage():
            return  # without root the netns host's up() says why (its cells are skipped)
        b = self.backend
        self.client, self.docker_host = b.client(), b.docker_host
        name = f"msdbench-{b.run_id}-host-{self.host.name}"
        self.holder = self.client.containers.run(
            b.image["id"], ["sleep", "infinity"], name=name, network_mode="none",
            labels=b._labels(**{"msdbench.role": "netns", "msdbench.host": self.host.name}),
            init=True, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            mem_limit="32m", pids_limit=16, detach=True)
        self.holder.reload()
        pid = self.holder.attrs["State"]["Pid"]
        if not pid:
            raise BackendError(f"container {name} (the network namespace of "
                               f"{self.host.where()}) did not start: {self.holder.status}")
        self.host.join = (pid, f"container {name}")

    def prepare(self) -> None:
        from msdbench.backends import docker_image

        if self.host.kind != "ssh":
            return
        b = self.backend
        self.docker_host = self.host.docker_url
        try:
            self.client = docker_image.connect(self.docker_host)
        except docker_image.DockerUnavailable as e:
            raise HostUnavailable(f"{self.host.where()}: {self.host.field('docker_host')}: {e}") \
                from None
        # A "remote" engine that is this machine's own (e.g. an sshd in a namespace of this machine,
        # as in CI): its containers live in this machine's network stack, so the client's packets
        # do not cross that host's link. Recorded, so no number passes for a cross-host one.
        self.same_engine = self.client.info().get("ID") == b.client().info().get("ID")
        self.image = b.image_on(self.client, self.docker_host)
        self.network = f"msdbench-{b.run_id}-{self.host.name}"
        self.client.networks.create(self.network, driver="bridge", check_duplicate=True,
                                    labels=b._labels(**{"msdbench.role": "network"}))
        self.access = control_access(b._access_asked, self.docker_host)

    def placement(self, name: str) -> tuple:
        """(engine, image id, bind address, create() keywords) of the client's container."""
        if self.host.kind == "netns":
            return (self.client, self.backend.image["id"], self.host.address,
                    {"network_mode": f"container:{self.holder.id}"})
        ports = ({f"{CONTROL_PORT}/tcp": ("0.0.0.0", None)} if self.access == "published"
                 else None)
        return (self.client, self.image["id"], name,
                {"hostname": name, "network": self.network, "ports": ports})

    def control(self, container, port: int) -> tuple[str, str]:
        """(its address, where the harness reaches its control port)."""
        if self.host.kind == "netns":
            return self.host.address, f"{self.host.address}:{port}"
        net = container.attrs["NetworkSettings"]
        ip = net["Networks"][self.network]["IPAddress"]
        if self.access == "ip":
            return ip, f"{ip}:{port}"
        return ip, f"{self.host.address}:{net['Ports'][f'{CONTROL_PORT}/tcp'][0]['HostPort']}"

    def _facing(self) -> str:
        return self.backend.hosts["local"].address  # this machine's end of the link

    def entry_ports(self) -> tuple[list[str], dict]:
        """The entry domain's extra arguments and the ports it publishes (to the link's end)."""
        at = self._facing()
        return (["--entry-port", str(ENTRY_PORT)],
                {f"{p}/tcp": (at, None) for p in (ENTRY_PORT, ENTRY_PORT + 1)})

    def published(self, name: str, ports: dict) -> None:
        for p in (ENTRY_PORT, ENTRY_PORT + 1):
            self.outside[f"{name}:{p}"] = f"{self._facing()}:{ports[f'{p}/tcp'][0]['HostPort']}"

    # -- use -------------------------------------------------------------------------------------
    def seen_from(self, domain: str, advertised: str) -> str:
        return self.outside.get(advertised, advertised) if domain == self.domain else advertised

    def where(self) -> str:
        return self.host.where() + (f", engine {self.docker_host}" if self.host.kind == "ssh" else "")

    def describe(self) -> dict:
        return {"host": self.host.name, "kind": self.host.kind,
                "engine": self.docker_host if self.host.kind == "ssh" else "this machine's",
                "network": (f"the host's namespace (held by {self.holder.name})" if self.holder
                            else self.network),
                "control_access": self.access or "ip",
                "same_engine_as_server": self.same_engine if self.host.kind == "ssh" else True,
                "entry_published": dict(self.outside)}

    def close(self) -> None:
        if self.client is not None and self.client is not self.backend._client:
            self.client.close()
        self.client = None
