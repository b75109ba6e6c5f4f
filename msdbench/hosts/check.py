"""`msdbench hosts check`: for each configured host, whether it can be used, and what it is.

Brings each host up and down exactly as a cell would (a netns host creates and removes its
namespace and link; an ssh host runs the version probe there; a vm host builds its image if
needed, probes which accelerator works, restores its guest and takes it down), and prints one
line per host (and a line more about what a host kind brings: an ssh host's Docker Engine, a vm
host's guest, a netns host's link).
"""

from __future__ import annotations

import time

from msdbench.hosts import HostError, HostUnavailable, make_host


def check_one(name: str, spec: dict, engine_here: str | None = None) -> dict:
    """One host's row; engine_here: this machine's Docker Engine ID (None: none answers), which
    an ssh host's engine is compared with."""
    row = {"host": name, "kind": (spec or {}).get("kind", "local"), "ok": False}
    try:
        host = make_host(name, spec)
    except HostError as e:
        return row | {"error": str(e)}
    if host.kind == "local" and not host.address:
        host.address = "127.0.0.1"
    t0 = time.monotonic()
    try:
        host.up()
        row["up_ms"] = round((time.monotonic() - t0) * 1000, 1)
        row |= {k: v for k, v in host.facts().items() if k not in ("timings",)}
        if host.kind not in ("ssh", "vm"):  # this machine's interpreter and msdbench run there
            from msdbench.hosts.facts import facts

            f = facts()
            row |= {"python": f["python"], "msdbench": f["msdbench"]}
        if host.kind == "ssh":
            row["docker"] = ssh_docker(host, engine_here)
        row["ok"] = True
    except (HostError, HostUnavailable) as e:
        row["error"] = str(e)
    finally:
        t1 = time.monotonic()
        host.down()
        row["down_ms"] = round((time.monotonic() - t1) * 1000, 1)
    return row


def ssh_docker(host, engine_here: str | None) -> dict:
    """The ssh host's Docker Engine as the docker backend would reach it, or why it cannot be.
    Informational: only the docker backend needs it (a client's container on deployment 5)."""
    from msdbench.backends import docker_image

    out = {"url": host.docker_url}
    try:
        out |= docker_image.engine_facts(host.docker_url)
    except docker_image.DockerUnavailable as e:
        return out | {"error": str(e)}
    # None: no engine here to compare with
    out["same_engine_as_here"] = engine_here == out["id"] if engine_here else None
    return out


def line(r: dict) -> str:
    head = f"{r['host']:<12} {r['kind']:<6}"
    if not r["ok"]:
        return f"{head} NOT USABLE: {r['error']}"
    text = (f"{head} ok  address {r.get('address')}  kernel {r.get('kernel')}  "
            f"cpu {r.get('cpu_model')}  python {r.get('python')}  msdbench {r.get('msdbench')}")
    if r["kind"] == "vm":
        vm, kvm = r.get("vm") or {}, r.get("kvm") or {}
        how = "restored from its snapshot" if vm.get("restored_from") else "booted"
        text += (f"\n{'':<19} guest {vm.get('id')} on {r.get('on')} {how} in {vm.get('boot_s')} s "
                 f"(up {r['up_ms']} ms, down {r['down_ms']} ms); accelerator {r.get('accel_label')}; "
                 f"KVM here: {'works' if kvm.get('works') else 'no: ' + str(kvm.get('reason'))}; "
                 f"image {vm.get('base_hash')}/{vm.get('image_hash')} (kernel {vm.get('kernel')})")
    if r["kind"] == "ssh":
        d = r.get("docker") or {}
        if d.get("error"):
            text += (f"\n{'':<19} docker: not usable ({d['error']}): the docker backend cannot "
                     "put a client there (the process backend can)")
        else:
            text += f"\n{'':<19} docker engine {d.get('version')} at {d.get('url')}"
            if d.get("same_engine_as_here"):
                text += (" (this machine's own engine: a client container there runs in this "
                         "machine's network stack, and its packets do not cross the host's link)")
    if r["kind"] == "netns":
        link = r.get("link") or {}
        shaping = link.get("qdisc") and f"{link['qdisc']} rate {link.get('rate')} delay {link.get('delay')}"
        text += (f"\n{'':<19} namespace {r.get('netns')} created and removed "
                 f"(up {r['up_ms']} ms, down {r['down_ms']} ms); link {link.get('device')} "
                 f"{link.get('local_address')} <-> {r.get('address')}; shaping: {shaping or 'none'}")
    return text


def main(config: dict, say=print) -> int:
    from msdbench.hosts import host_entry

    hosts = {name: host_entry(spec) for name, spec in (config.get("hosts") or {}).items()}
    hosts.setdefault("local", {"kind": "local"})
    for spec in hosts.values():  # a VM on another host brings that host up itself
        if isinstance(spec, dict) and spec.get("kind") == "vm" and spec.get("on", "local") in hosts \
                and spec.get("on", "local") != "local":
            spec["on_host"] = hosts[spec["on"]]
    engine_here = None
    if any(isinstance(s, dict) and s.get("kind") == "ssh" for s in hosts.values()):
        from msdbench.backends import docker_image

        engine_here = docker_image.engine_id()  # once, for every ssh host's comparison
    rows = [check_one(name, spec, engine_here) for name, spec in hosts.items()]
    for r in rows:
        say(line(r))
    return 0 if all(r["ok"] for r in rows) else 1
