"""The matrix's coordinates: a `Cell` (one point of platform x suite x backend x isolation x
deployment [x payload]) and the error every layer raises for a value that is not allowed.

At the bottom of the package so that the suite registry, planning and the configuration can all
name a cell without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


OTHER_HOST_DEPLOYMENTS = (3, 4, 5)  # the client's domain on the host named by settings["client_host"]


class PlanError(ValueError):
    """A cell that cannot be planned; the message names the field and what is allowed."""


def choose(field: str, value, allowed) -> None:
    """Raise PlanError naming `field` and the allowed values unless `value` is one of them."""
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise PlanError(f"{field}: {value!r} is not one of {shown}")


@dataclass(frozen=True)
class Cell:
    suite: str
    platform: str
    backend: str
    isolation: str
    deployment: int
    payload: int | None = None  # micro only: request payload (bytes, or i64 elements in list mode)
