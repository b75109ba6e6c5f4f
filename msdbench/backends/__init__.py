"""Backends realise isolation domains: `process` (an OS process, the default), `docker`, and
`device` (groups of services on a MicroPython board, msdbench/device/)."""

from __future__ import annotations


def make_backend(name: str, workdir=None, **options):
    if name == "process":
        from msdbench.backends.process import ProcessBackend

        return ProcessBackend(workdir)
    if name == "docker":
        from msdbench.backends.docker import DockerBackend

        return DockerBackend(workdir, **options)
    if name == "device":
        from msdbench.device.backend import DeviceBackend

        return DeviceBackend(workdir, **options)
    raise ValueError(f"backend: {name!r} is not one of 'process', 'docker', 'device'")
