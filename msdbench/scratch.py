"""The harness's scratch space in the temp directory, and the sweep that removes what a killed
harness left there.

Two kinds of things land in the temp directory:
* work directories (a cell's manifest and domain logs, a sweep's), made by `work_dir`:
  ``msdbench-<kind>-<pid>-<random>`` holding an ``owner`` file (`lifetime.owner_label`: host, pid and
  start time of the process that made it). `work_dir` removes its directory when the block ends.
* the Unix sockets of shared-memory channels, ``msdbench-...-<pid>-<hex>.sock``, named after the
  process that listens on them (msdbench/transports/shm.py); `close()` removes them.

A harness killed with SIGKILL removes neither (its domains die with it: `lifetime.die_with_parent`).
`sweep()` finds them: a directory whose owner process is gone, a socket whose listening process is
gone and that nobody accepts on. Anything else (a live run's, another user's, a directory without
an owner file such as `msdbench run`'s output directory) is left alone. Every `msdbench` command
that runs services sweeps (`sweep_leftovers`) once its input is checked; `msdbench clean` too.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import psutil

from msdbench.lifetime import owner_label, owner_label_alive

PREFIX = "msdbench-"
OWNER_FILE = "owner"
_SOCKET_PID = re.compile(r"-(\d+)-[0-9a-f]+\.sock$")


def make_dir(kind: str, parent: str | Path | None = None) -> Path:
    """A fresh work directory, marked with its owner (this process)."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{os.getpid()}-", dir=parent))
    (path / OWNER_FILE).write_text(owner_label() + "\n")
    return path


@contextmanager
def work_dir(kind: str):
    """A work directory for the block, removed when it ends (however it ends)."""
    path = make_dir(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _dead_dir(path: Path) -> bool:
    try:
        return owner_label_alive((path / OWNER_FILE).read_text().strip()) is False
    except OSError:
        return False  # no owner file: not ours to judge


def _dead_socket(path: Path) -> bool:
    m = _SOCKET_PID.search(path.name)
    if not m or not stat.S_ISSOCK(path.lstat().st_mode) or psutil.pid_exists(int(m.group(1))):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as e:
        return e.errno == errno.ECONNREFUSED   # nobody listens
    finally:
        probe.close()
    return False


def leftovers(tmp: str | Path | None = None) -> list[Path]:
    """The work directories and sockets in the temp dir whose owner process is dead."""
    found = []
    uid = os.getuid()
    for entry in Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            st = entry.lstat()
            if st.st_uid != uid:
                continue
            if ((stat.S_ISDIR(st.st_mode) and _dead_dir(entry))
                    or (entry.suffix == ".sock" and _dead_socket(entry))):
                found.append(entry)
        except OSError:
            continue  # vanished meanwhile, or not ours to read
    return sorted(found)


def sweep(tmp: str | Path | None = None, dry_run: bool = False) -> list[Path]:
    """Remove (or, dry_run, only list) what `leftovers` finds; returns it."""
    found = leftovers(tmp)
    if not dry_run:
        for path in found:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
    return found


def sweep_leftovers() -> None:
    """What killed runs left goes before anything new starts (said on stderr)."""
    found = sweep()
    if found:
        print(f"msdbench: removed {len(found)} leftover(s) of killed runs: "
              + ", ".join(p.name for p in found), file=sys.stderr)
