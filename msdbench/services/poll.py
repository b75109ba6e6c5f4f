"""The microbenchmark's poll service: take the payload, return the server's monotonic clock."""

import time


class PollHandler:
    def __init__(self):
        self.calls = 0

    def poll(self, payload):
        self.calls += 1
        return time.monotonic_ns()

    # The list mode carries the same meaning; only the wire encoding differs.
    poll_list = poll

    def counters(self):
        return {"calls": self.calls}
