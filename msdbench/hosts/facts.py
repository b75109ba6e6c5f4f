"""What a host is: `python -m msdbench.hosts.facts` prints it as JSON (run over SSH on a remote
host; in process for this machine). The code hash decides "the same msdbench version"."""

from __future__ import annotations

import json
import os
import platform
import sys


def facts() -> dict:
    import msdbench
    from msdbench.metadata import cpu_model
    from msdbench.stamp import code_sha256

    u = os.uname()
    return {"hostname": u.nodename, "kernel": f"{u.sysname} {u.release}", "machine": u.machine,
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "python_executable": sys.executable,
            "msdbench": msdbench.__version__, "code_sha256": code_sha256()}


if __name__ == "__main__":
    print(json.dumps(facts()))
