"""The msdbench domain processes on this host and the harness that owns each (`--owner
<host>:<pid>:<start>`, the owner label). `msdbench clean` runs it over ssh on an ssh host:

    python -m msdbench.hosts.owned                  # JSON: [{"pid", "owner", "cmdline"}, ...]
    python -m msdbench.hosts.owned --kill LABEL...  # SIGKILL the domains of those owners

A remote domain normally stops when its lifeline (stdin, the ssh connection) closes; this is for
one that did not (a stuck process, a session that never closed)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def domains() -> list[dict]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["pid"] == os.getpid() or "msdbench.domain" not in cmd or "--owner" not in cmd:
            continue
        i = cmd.index("--owner")
        if i + 1 < len(cmd):
            out.append({"pid": p.info["pid"], "owner": cmd[i + 1], "cmdline": " ".join(cmd)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msdbench.hosts.owned", description=__doc__)
    ap.add_argument("--kill", nargs="*", default=None, metavar="LABEL")
    a = ap.parse_args(argv)
    found = domains()
    if a.kill is not None:
        found = [d for d in found if d["owner"] in set(a.kill)]
        for d in found:
            try:
                os.kill(d["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
