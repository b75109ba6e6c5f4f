"""Errors every layer may raise, kept at the bottom so that raising one imports nothing above it
(a VM guest, a host kind, a backend all report a failed domain the same way)."""


class BackendError(RuntimeError):
    """A domain failed to start, died, or misbehaved; the message says which and why."""
