"""The suite registry: `SUITES` by name, `get(name)`. Each suite is one module here declaring a
`SUITE` (see `base.Suite` for what it holds). To add a suite: write its module, list it below,
give it a section in msdbench/schemas/config.schema.yaml and a caption per figure in
workflow/report/."""

from __future__ import annotations

from msdbench.axes import PlanError
from msdbench.suites import beps, device, micro, throughput
from msdbench.suites.base import Job, Suite, resolve

SUITES: dict[str, Suite] = {s.name: s for s in (micro.SUITE, beps.SUITE, throughput.SUITE,
                                                  device.SUITE)}


def get(name: str) -> Suite:
    if name not in SUITES:
        raise PlanError(f"suite: {name!r} is not one of {', '.join(map(repr, SUITES))}")
    return SUITES[name]


def figures() -> dict[str, Suite]:
    """Every figure of every suite -> the suite whose table it is drawn from."""
    return {fig: s for s in SUITES.values() for fig in s.figures}


def of_stem(stem: str):
    """A cell path (e.g. "micro/linux/process/isolated/d2/p0") -> (its suite, the cell, the
    suite's other axes)."""
    suite = get(stem.split("/", 1)[0])
    cell, axes = suite.parse(stem)
    return suite, cell, axes


__all__ = ["SUITES", "Job", "Suite", "figures", "get", "of_stem", "resolve"]
