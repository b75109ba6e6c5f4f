"""`msdbench clean`: remove what crashed or killed runs left behind.

Runs whose owner process is gone lose, in this order: the forwarding rules naming their links, their
guests, their network namespaces, their work directories and sockets in the temp directory, their
containers, networks and volumes on the Docker Engine, and, on each ssh host of the config, their
domains and that host's engine's objects. `everything` takes live runs' too; `images` prunes
msdbench's images other than this checkout's. An engine named with docker_host is the one thing
cleaned.
"""

from __future__ import annotations

import sys

from msdbench.backends import docker_image
from msdbench.backends.docker import clean as clean_engine
from msdbench.config import ConfigError, default_config_path, load
from msdbench.hosts import forward, make_host, netns
from msdbench.scratch import sweep
from msdbench.vm.clean import clean as clean_vms


def clean(docker_host: str | None, everything: bool = False, dry_run: bool = False,
          images: bool = False, config: str | None = None) -> int:
    """What `msdbench clean` removes, in that order; 0, or 2 when an engine asked for by name
    (docker_host, or images) cannot be reached."""
    # An engine named with --docker-host is the one thing cleaned: `--all` there must not reach
    # this machine's live namespaces, guests and rules (another run's, or a benchmark's).
    if not docker_host:
        if netns.can_manage():  # guests' links first (a VM on an emulated host has them in its netns)
            forward.clean(everything=everything, dry_run=dry_run)  # rules naming the links below
            clean_vms(everything=everything, dry_run=dry_run)
            netns.clean(everything=everything, dry_run=dry_run)
        found = sweep(dry_run=dry_run)
        for path in found:
            print(f"{'would remove' if dry_run else 'removed'} {path} (its owner process is gone)")
        if not found:
            print("no work directories or sockets of dead msdbench runs in the temp directory")
    try:
        clean_engine(docker_host, everything=everything, dry_run=dry_run)
        if images:  # every code change builds a new ~250 MB image; nothing else prunes them
            tags = docker_image.image_tags(docker_image._default_project_root())
            docker_image.prune_images(docker_host, {tags["tag"], tags["base_tag"]}, dry_run=dry_run)
    except docker_image.DockerUnavailable as e:
        if docker_host or images:  # asked for by name: an error
            print(f"msdbench: error: {e}", file=sys.stderr)
            return 2
        print(f"docker: not checked ({e})")
    if not docker_host:
        _ssh_hosts(everything, dry_run, config)
    return 0


def _ssh_hosts(everything: bool, dry_run: bool, config: str | None) -> None:
    """The config's ssh hosts: domains whose harness is gone, and their engines' leftovers."""
    try:
        path = config or default_config_path()
    except ConfigError:  # no config here: no ssh hosts to reach
        return
    try:
        hosts = {n: make_host(n, s) for n, s in (load(path).get("hosts") or {}).items()}
    except Exception as e:  # a config that does not load: say so, clean the rest anyway
        print(f"ssh hosts: not checked ({path}: {str(e).splitlines()[0]})")
        return

    ssh_hosts = [h for h in hosts.values() if h.kind == "ssh"]
    # engines cleaned already: this machine's own (above), then each host's
    seen = {docker_image.engine_id()} if ssh_hosts else set()
    for h in ssh_hosts:
        h.clean(everything=everything, dry_run=dry_run)
        url = h.docker_url
        try:
            ident = docker_image.engine_facts(url)["id"]
        except docker_image.DockerUnavailable as e:
            print(f"{h.where()}: docker: not checked ({e})")
            continue
        if ident not in seen:
            seen.add(ident)
            clean_engine(url, everything=everything, dry_run=dry_run)
