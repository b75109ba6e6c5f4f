"""Backends realise isolation domains: `process` (an OS process, the default) and `docker`."""

from __future__ import annotations


def make_backend(name: str, workdir=None, **options):
    if name == "process":
        from msdbench.backends.process import ProcessBackend

        return ProcessBackend(workdir)
    if name == "docker":
        from msdbench.backends.docker import DockerBackend

        return DockerBackend(workdir, **options)
    raise ValueError(f"backend: {name!r} is not one of 'process', 'docker'")
