"""CPU placement: on these machines it decides latency (17 us a loopback round trip on one vCPU,
about 60 us across two), so every domain pins itself and reports what it got."""

from __future__ import annotations

import os


class PinningError(RuntimeError):
    pass


def pin_self(cpus: list[int] | None) -> set[int]:
    """Pin the calling process (and the threads it starts later) to `cpus`; return the affinity in
    effect. `None` leaves the scheduler free."""
    if cpus:
        available = os.sched_getaffinity(0)
        missing = set(cpus) - available
        if missing:
            raise PinningError(
                f"cpus {sorted(missing)} are not available here (this process may use "
                f"{sorted(available)}); choose pinning 'same-core' or 'none' on this machine")
        os.sched_setaffinity(0, set(cpus))
    return os.sched_getaffinity(0)
