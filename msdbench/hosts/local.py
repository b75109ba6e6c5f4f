"""The `local` host kind: this machine, where the harness runs."""

from __future__ import annotations

import sys

from msdbench.hosts import Host


class LocalHost(Host):
    kind = "local"
    FIELDS = {"address": "the address other hosts reach this machine's domains at (default: "
                         "127.0.0.1 alone; else the address facing the first other host)"}

    def command(self, args: list[str]) -> list[str]:
        return [sys.executable, *args]

    def facts(self) -> dict:
        from msdbench.hosts.facts import facts

        f = facts()
        return {"kind": self.kind, "address": self.address, "kernel": f["kernel"],
                "cpu_model": f["cpu_model"], "hostname": f["hostname"]}
