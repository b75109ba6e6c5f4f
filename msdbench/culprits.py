"""How a failed domain is told to a person: one line, a report with its log, a table cell.

A culprit is what `Deployment.culprits()` finds: {"domain", "services", "host", "where",
"status", "log_tail"}. Latency cells and throughput points record and show it the same way.
"""

from __future__ import annotations

LOG_TAIL_LINES = 25


def culprit_line(c: dict) -> str:
    """One line naming a failed domain: its services, where it ran, how it ended."""
    return (f"domain {c['domain']} (services {', '.join(c['services'])}; host {c.get('host', '?')}, "
            f"{c.get('where', '?')}): {c['status']}")


def culprits_summary(culprits: list[dict]) -> str:
    """Every culprit's line, for one line of a summary."""
    return "; ".join(culprit_line(c) for c in culprits)


def culprits_report(culprits: list[dict], tail_lines: int = LOG_TAIL_LINES) -> str:
    """The summary line, then the last lines of each culprit's log: what a person reads first."""
    out = [culprits_summary(culprits)]
    for c in culprits:
        out.append(f"--- last lines of {c['domain']}'s log ---")
        out += c["log_tail"].splitlines()[-tail_lines:] or ["(empty)"]
    return "\n".join(out)


def log_tails(culprits: list[dict], lines: int = 5) -> str | None:
    """The culprits' last log lines, one table cell: `[domain] line | line ...` per culprit."""
    tails = [f"[{c['domain']}] " + " | ".join(c["log_tail"].splitlines()[-lines:]) for c in culprits]
    return "\n".join(tails) or None
