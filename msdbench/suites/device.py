"""The microcontroller tier (paper figs 7 and 10): cells of the micro and BEPS suites run on a
board (backend `device`, platform `specialized`), at the paper's device sizes (config section
`device`). Its cells are micro and BEPS cells (their paths, their planning, their driver); what
is its own is the matrix, the settings, the table (results/tables/device.csv) and the figures."""

from __future__ import annotations

from msdbench.axes import Cell
from msdbench.suites import micro
from msdbench.suites.base import Job, Suite

BOARD_KEYS = ("board", "port", "label", "source", "icount", "icount_align", "link_rate_bps",
              "call_deadline_s", "retry_s")


def settings(config: dict, suite: str = "micro") -> dict:
    """The settings of a board cell of `suite` (micro or beps)."""
    d = config["device"]
    board = {k: d[k] for k in BOARD_KEYS if k in d}
    s = d[suite]
    common = {"deadline_s": config["deadline_s"], "device": board}
    if suite == "micro":
        return common | {"payload_mode": s.get("payload_mode", "binary"),
                         "requests": s["requests"], "warmup": s["warmup"]}
    return common | {"workers": s.get("workers", 5), "workload": s["workload"]}


def jobs(config: dict) -> list[Job]:
    """Every board cell the `device` section asks for (none without one). The micro suite pairs
    co-located with deployment 1 and isolated with 2 and 4, as on the host."""
    d = config.get("device")
    if not d:
        return []
    out = []
    for suite in ("micro", "beps"):
        s = d[suite]
        cell_settings = settings(config, suite)
        for iso in s["isolations"]:
            for dep in s["deployments"]:
                if suite == "micro" and micro.contradiction(iso, dep):
                    continue
                for payload in (s["payloads"] if suite == "micro" else [None]):
                    cell = Cell(suite, "specialized", "device", iso, dep, payload)
                    out.append(Job.of(cell, cell_settings, suite="device"))
    return out


SUITE = Suite(
    name="device", title="poll and BEPS on a microcontroller board (paper figs 7 and 10)",
    isolations=("co-located", "tiered", "isolated"), services=None, path="",
    jobs=jobs, settings=settings,
    figures={"fig7-device-micro": "msdbench.figures.device:plot_micro",
             "fig10-device-beps": "msdbench.figures.device:plot_beps"})
