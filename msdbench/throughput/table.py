"""The throughput study's table: a row per point of every sweep (the rule aggregate, through the
suite registry), and the lines `msdbench measure` prints for a sweep."""

from __future__ import annotations

import json
from pathlib import Path

from msdbench import records
from msdbench.culprits import log_tails
from msdbench.summary import client_host
from msdbench.throughput.point import STATUS_FAILED, STATUS_LOST, STATUS_OK, one_point_line


def table_rows(meta_path: str | Path) -> list[dict]:
    """A row per point of one sweep (a skipped sweep: one row saying why)."""
    meta = records.load(meta_path).dump()
    base = dict(meta["cell"])
    base.update(pinning=meta["settings"].get("pinning"), config_hash=meta.get("config_hash"),
                git_revision=meta.get("environment", {}).get("git_revision"))
    base.update(client_host(records.load(meta_path)))
    placement = meta.get("placement") or {}
    base["client_cpus"] = json.dumps(placement.get("client_workers"))
    base["server_cpus"] = json.dumps(sorted({c for n, d in placement.items()
                                             if isinstance(d, dict) and n != "client"
                                             for c in d.get("affinity") or []}))
    if meta["status"] != STATUS_OK:
        return [base | {"status": meta["status"], "failure": meta.get("reason", "")}]
    sw = meta.get("sweep", {})
    m = meta.get("manifest") or {}
    client_domain = next((x["domain"] for x in m.get("services", [])
                          if x["name"] == m.get("client")), "client")
    rows = []
    for p in meta.get("points", []):  # a skipped sweep has none
        row = base | {k: p.get(k) for k in ("index", "clients", "offered_rps", "status", "rps",
                                            "rps_sum_clients", "completed", "call_errors",
                                            "wall_s")}
        row["point"] = row.pop("index")
        row["attempt"] = p.get("attempt", 0)
        row["other_load_before"] = p.get("other_load_before")
        lat = p.get("latency", {})
        row.update({k: lat.get(k) for k in ("n", "mean_us", "sd_us", "p50_us", "p90_us",
                                             "p99_us", "p99.9_us", "max_us")})
        if "service_latency" in p:
            row["service_p50_us"] = p["service_latency"].get("p50_us")
            row["service_p99_us"] = p["service_latency"].get("p99_us")
        pc = [c for c in p.get("per_client", []) if "p99_us" in c]
        if pc:
            row.update(client_p99_min_us=min(c["p99_us"] for c in pc),
                       client_p99_max_us=max(c["p99_us"] for c in pc),
                       client_rps_min=min(c["rps"] for c in pc),
                       client_rps_max=max(c["rps"] for c in pc))
        doms = {n: d for n, d in p["domains"].items() if "error" not in d}
        server = {n: d for n, d in doms.items() if n != client_domain}
        row["server_cpu_util"] = round(sum(d["util"] or 0 for d in server.values()), 3)
        row["server_cpu_us_per_call"] = round(sum(d.get("cpu_us_per_call") or 0
                                                  for d in server.values()), 1)
        # the client processes' own CPU (warm-up included), per call, at the timed phase's rate
        calls = p.get("calls_with_warmup") or 0
        row["client_cpu_util"] = (round(p.get("client_cpu_s", 0.0) / calls * (p["rps"] or 0), 3)
                                  if calls else None)
        if server:
            b = max(server, key=lambda n: server[n]["util"] or 0)
            row.update(busiest_domain=b, busiest_domain_util=server[b]["util"])
        row["domain_cpu_s"] = json.dumps({n: d["cpu_s"] for n, d in doms.items()})
        row["domain_util"] = json.dumps({n: d["util"] for n, d in doms.items()})
        row["domain_rss_mb"] = json.dumps({n: d["rss_mb"] for n, d in doms.items()})
        host = p.get("host") or {}
        row["host_busy"] = json.dumps(host.get("busy"))
        row["unaccounted_cpu_util"] = host.get("unaccounted_util")
        row["lost_users"] = p["census"].get("lost_users")
        row["census_checked"] = p["census"].get("checked")
        row["is_knee"] = (meta["cell"]["mode"] == "closed" and p["status"] == STATUS_OK
                          and p["clients"] == sw.get("knee_clients"))
        row["saturated"] = sw.get("saturated")
        row["is_peak"] = p["status"] == STATUS_OK and p["clients"] == sw.get("peak_clients") \
            and (meta["cell"]["mode"] == "closed" or p["offered_rps"] == sw.get("peak_offered_rps"))
        if p["status"] == STATUS_FAILED:
            row["failure"] = p["failure"]["summary"]
            row["last_good_clients"] = sw.get("last_good_clients")
            row["log_tail"] = log_tails(p["failure"]["culprits"])
        elif p["status"] == STATUS_LOST:
            row["failure"] = p["census"].get("why")
        rows.append(row)
    return rows


def summary_lines(meta: dict) -> list[str]:
    c, sw = meta["cell"], meta.get("sweep", {})
    head = f"throughput {c['mode']} {c['platform']}/{c['backend']} {c['isolation']}"
    if meta["status"] != STATUS_OK:
        return [f"{head}: {meta['status']} {meta.get('reason', '')}"]
    lines = [one_point_line(p) for p in meta.get("points", [])]
    if sw["peak_rps"] is None:
        tail = f"{head}: no good point"
    else:
        tail = f"{head}: peak {sw['peak_rps']:,.0f} rps at {sw['peak_clients']} clients"
        if c["mode"] == "open":
            tail += f" (offered {sw['peak_offered_rps']:g})"
        elif sw.get("saturated"):
            tail += f", knee at {sw['knee_clients']} clients ({sw['knee_rps']:,.0f} rps)"
        else:
            tail += f", no knee: still rising at {sw['knee_clients']} clients"
    if sw.get("failure"):
        tail += f"; FAILED at {sw['failed_clients']} clients (last good: " \
                f"{sw['last_good_clients']}): {sw['failure']}"
    tail += "; data lost: " + ("YES, points " + str(sw["lost_data_points"]) if sw["any_lost"]
                               else "none")
    return lines + [tail]


def sweep_lines(meta_path: str | Path) -> list[str]:
    return summary_lines(records.load(meta_path).dump())
