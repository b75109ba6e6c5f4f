"""The throughput study (paper section 4.3, fig 11; suite `throughput`): requests per second
against concurrent clients, up to the saturation point; and, open loop, latency against
offered load.

One sweep = one manifest (isolation x platform x backend, the client in its own domain:
deployment 2) brought up once, then a series of points run on it one after the other:

  closed loop: a point per client count N, from a list or `auto` (start at 1 and add clients
               until the last `patience` points each failed to beat the best so far by
               `min_gain`, e.g. two steps without a 3% gain; or until `max_clients`);
  open loop:   a point per offered rate, with a fixed number of clients.

Each point (point.py) runs the throughput driver (msdbench/drivers/throughput.py) inside the
client's domain, and around it:
  * CPU time (user + system) and RSS of every domain from its control service's `stats()`, before
    and after: where the capacity goes. The window is the whole point (worker start-up and the
    short warm-up included; the timed phase is most of it), so utilisation is CPU seconds over
    the window's wall time (1.0 = one CPU busy the whole time);
  * the nothing-lost check: the user DB (census() through the entry service) must hold exactly
    the users the clients' acknowledged calls say it should: census before + creates acked -
    deletes acked (zero after complete pairs), and no messages or feed entries appear;
  * failure capture: when a client reports a transport failure, or the driver or a domain's
    control service does not answer, every domain is probed (its exit status, then a control
    call with a short timeout); the point records which domain (and its services) died or
    stopped answering, the exit code or signal, the tail of its log, and the last good N.
    The sweep then stops; the deployment is always torn down.

Throughput of a point: all completed (acknowledged) timed calls / wall time of the timed phase
(from the common start to the last completion of any client). The paper's clients each printed
their own rate; the sum of per-client rates (each over its own first send .. last completion) is
kept beside it as `rps_sum_clients`.

Results: one sweep writes its raw samples (a row per call, every point, warm-up rows marked) as
Parquet and its metadata (every point's numbers, the knee, the failure) as JSON, both atomically
and only once the sweep has ended (an interrupted sweep leaves nothing Snakemake takes as done).
A failed point or one that lost data is recorded as such, never as a good result.

Modules: sweep.py (settings, the auto rule, the loop, run_sweep), point.py (one point),
table.py (the table's rows, the printed summary); msdbench/hostload.py (the host's CPU).
"""

from msdbench.suites.throughput import COLUMNS as TABLE_ORDER
from msdbench.suites.throughput import MODES
from msdbench.throughput.point import (STATUS_DISTURBED, STATUS_FAILED, STATUS_LOST, STATUS_OK,
                                       one_point_line, run_point)
from msdbench.throughput.sweep import (DEFAULT_AUTO, SweepSettings, gains, knee, next_clients,
                                       run_sweep, stalled, summarize_sweep)
from msdbench.throughput.table import summary_lines, table_rows

# (The loop itself is msdbench.throughput.sweep.sweep: not re-exported, the module has its name.)


def table(meta_paths):
    """The throughput table of these sweeps (msdbench.aggregate.table for suite throughput)."""
    from msdbench.aggregate import table

    return table("throughput", meta_paths)


__all__ = ["DEFAULT_AUTO", "MODES", "STATUS_DISTURBED", "STATUS_FAILED", "STATUS_LOST",
           "STATUS_OK", "SweepSettings", "TABLE_ORDER", "gains", "knee", "next_clients",
           "one_point_line", "run_point", "run_sweep", "stalled", "summarize_sweep",
           "summary_lines", "table", "table_rows"]
