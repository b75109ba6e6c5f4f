"""Processes the harness starts must not outlive it, even when it dies by SIGKILL; and what it
leaves (containers, work directories) names its owner, so the next run can tell a dead run's
leftovers from a live run's."""

from __future__ import annotations

import ctypes
import os
import signal
import socket

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Call in the child (e.g. as preexec_fn, or right after fork): when `parent` ends, the kernel
    sends this process SIGKILL. The check after prctl closes the race with a parent that ended
    before the request took effect."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(3)


def exit_status(rc: int | None) -> str | None:
    """How a child ended, from its return code (negative: the signal that ended it)."""
    if rc is None:
        return None
    return f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"


def end_group(proc, grace_s: float = 3.0) -> None:
    """End a child started with start_new_session=True and everything it started: SIGTERM to its
    process group (SIGCONT too, so a stopped one sees it), SIGKILL after `grace_s`; then reap."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
    try:
        proc.wait(timeout=grace_s)
    except Exception:  # subprocess.TimeoutExpired
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def owner_tag(pid: int | None = None) -> str:
    """``msdb-<pid>-<start time>``: names what this harness creates outside itself (namespaces,
    links, remote processes), so that `msdbench clean` can tell whether its owner still lives."""
    import psutil

    p = psutil.Process(pid)
    return f"msdb-{p.pid}-{int(p.create_time())}"


def owner_alive(tag: str) -> bool:
    """Whether the process that `owner_tag` named is still running on this machine."""
    import psutil

    try:
        _, pid, started = tag.split("-")[:3]
        return int(psutil.Process(int(pid)).create_time()) == int(started)
    except (ValueError, psutil.Error):
        return False


def owner_label() -> str:
    """`host:pid:start time`: the owner tag with the machine's name, for what outlives this
    machine's view (docker objects on a remote engine) or this run (work directories)."""
    _, pid, started = owner_tag().split("-")
    return f"{socket.gethostname()}:{pid}:{started}"


def owner_label_alive(label: str | None) -> bool | None:
    """True/False when the label's owner ran on this machine (it lives / is gone); None when we
    cannot tell (another machine, or no label)."""
    try:
        host, pid, started = (label or "").rsplit(":", 2)
        int(pid), int(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return owner_alive(f"msdb-{pid}-{started}")
