"""The microbenchmark's poll service: take the payload, return the server's monotonic clock."""

import threading
import time

FAULTS = ("hang",)


class PollHandler:
    def __init__(self):
        self.calls = 0
        self._hang = 0
        self._never = threading.Event()

    def poll(self, payload):
        self.calls += 1
        if self._hang:
            self._hang -= 1
            self._never.wait()  # test-only: a stuck service, for the cell deadline to end
        return time.monotonic_ns()

    # The list mode carries the same meaning; only the wire encoding differs.
    poll_list = poll

    def set_fault(self, fault: str, count: int) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault {fault!r} unknown; allowed: {', '.join(FAULTS)}")
        self._hang = count

    def counters(self):
        return {"calls": self.calls}
