"""The board's program as one script: board/*.py concatenated with the spec generated from the
IDL (idlgen). `mpremote run` sends it to a board; the unix port runs it as a file; the host execs
the same source to share the link's framing and the Thrift codec (one implementation).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from msdbench.device.idlgen import device_spec_source

BOARD_DIR = Path(__file__).resolve().parent / "board"
ORDER = ("tbin.py", None, "link.py", "services.py", "groups.py", "client.py", "main.py")


@cache
def source() -> str:
    parts = []
    for name in ORDER:
        if name is None:
            parts.append(device_spec_source())
        else:
            parts.append(f"# ---- {name}\n" + (BOARD_DIR / name).read_text())
    return "\n".join(parts)


def digest() -> str:
    return hashlib.sha256(source().encode()).hexdigest()[:16]


def write(directory: str | Path) -> Path:
    path = Path(directory) / f"msdbench_board_{digest()}.py"
    if not path.exists():
        path.write_text(source())
    return path


@cache
def namespace() -> dict:
    """The board's code loaded on the host (CPython): its framing, codec, services, groups."""
    ns = {"__name__": "msdbench_board"}
    exec(compile(source(), "<msdbench board bundle>", "exec"), ns)
    return ns
