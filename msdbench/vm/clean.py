"""`msdbench clean` for VMs: what a SIGKILLed harness left (QEMU is gone with it, by
PR_SET_PDEATHSIG; its tap, bridge, route and state directory are not)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psutil

from msdbench.vm import net
from msdbench.vm.guest import stop_qemu


def _is_our_qemu(pid: int, vm_id: str) -> bool:
    try:
        return f"msdbench-{vm_id}" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def clean(everything: bool = False, dry_run: bool = False, say=print) -> list[str]:
    """Remove the leftovers of guests whose owner process is gone (everything: of every guest).
    Returns what was (or, dry_run, would be) removed."""
    done = []
    known = set()
    for state_file in sorted(net.STATE_ROOT.glob("*/state.json")):
        vm_id = state_file.parent.name
        state = net.StateDir(vm_id).read()
        link = state.get("link") or {}
        known.update(n for n in (link.get("tap"), link.get("bridge")) if n)
        if not everything and net.owner_alive(state.get("owner") or {}):
            say(f"msdv{vm_id}: its run (pid {state['owner']['pid']}) is alive; kept (--all removes it)")
            continue
        what = [f"msdv{vm_id}"]
        pid = state.get("qemu_pid")
        if dry_run:
            done += [f"would remove {w}" for w in what]
            continue
        if pid and _is_our_qemu(pid, vm_id):
            stop_qemu(pid)
            what.append(f"qemu pid {pid}")
        what += net.destroy_link(link) if link else []
        work = Path(state.get("workdir") or "")
        if work.name.startswith("msdbench-vm-") and work.is_dir():  # console, sockets
            shutil.rmtree(work, ignore_errors=True)
            what.append(str(work))
        net.StateDir(vm_id).remove()
        done.append(", ".join(what))
    # Links with our prefix that no state directory names (a crash between creating and recording).
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(net.PREFIX) and name not in known:
            if dry_run:
                done.append(f"would remove link {name}")
            elif subprocess.run(["ip", "link", "del", name], capture_output=True).returncode == 0:
                done.append(f"link {name}")
    for item in done:
        say(f"removed {item}" if not item.startswith("would") else item)
    return done
