"""A bound on a whole run that no socket timeout gives: after `seconds`, shut down every socket the
run registered, so a call blocked on a peer that is alive but stuck (SIGSTOP, an endless handler)
fails at once. Any stub that keeps its socket as `.sock` can be watched: a TCP stub, or a
shared-memory stub's setup socket (shutting it down ends the channel)."""

from __future__ import annotations

import socket
import threading


class Deadline:
    """Ends a stuck run: after `seconds`, shut down every registered socket (the blocked recv
    then fails at once) and remember that it fired, so the caller reports a timeout."""

    def __init__(self, seconds: float | None, stub=None):
        """`stub`: watch its socket (`.sock`) if it has one (a direct stub has none)."""
        self.seconds = seconds
        self.fired = False
        self._socks: list[socket.socket] = [stub.sock] if hasattr(stub, "sock") else []
        self._timer = threading.Timer(seconds, self._fire) if seconds else None
        if self._timer:
            self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        self._socks.append(sock)

    def _fire(self) -> None:
        self.fired = True
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Deadline":
        if self._timer:
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer:
            self._timer.cancel()
