#!/usr/bin/env python
"""What a container costs a poll() round trip: the same micro cell on the process and docker backends.

    python scripts/bench_docker.py [--payloads 0,8192] [--requests 5000] [--warmup 1000]
                                   [--pinning same-core] [--docker-host URL] [--json FILE]

One run: for each payload, the cell `micro linux isolated d2` (client and poll in separate domains,
the same pinning for both backends) on the process backend and then on the docker backend, back to
back, through msdbench.cell.run_cell. Prints the median and p99 round trip of each and the ratio
docker / process, and for docker: the image check (a warm ensure_image), each container's
create-to-ready time and the whole bring-up. Machines here are noisy: read the ratio, and rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pandas as pd  # noqa: E402

from msdbench.cell import run_cell  # noqa: E402
from msdbench.planning import Cell, plan  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--payloads", default="0,8192")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--pinning", default="same-core", choices=("same-core", "split", "none"))
    ap.add_argument("--docker-host", default=None)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    from msdbench.backends import docker_image

    t0 = time.monotonic()
    image = docker_image.ensure_image(Path(ROOT), a.docker_host, log=lambda m: print(f"  {m}", file=sys.stderr))
    image_s = time.monotonic() - t0
    print(f"image {image['tag']} ({image['id'][:19]}): ensure_image {image_s:.2f} s "
          f"({'warm: present' if image['cached'] else 'built'})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="msdbench-bench-docker-") as tmp:
        for payload in [int(p) for p in a.payloads.split(",")]:
            for backend in ("process", "docker"):
                m = plan(Cell("micro", "linux", backend, "isolated", 2, payload),
                         {"requests": a.requests, "warmup": a.warmup, "pinning": a.pinning})
                raw, meta_path = Path(tmp) / f"{backend}-{payload}.parquet", Path(tmp) / f"{backend}-{payload}.json"
                opts = {"image": image["id"]} if backend == "docker" else {}
                if backend == "docker" and a.docker_host:
                    opts["docker_host"] = a.docker_host
                meta = run_cell(m, raw, meta_path, opts or None, workdir=Path(tmp) / f"w-{backend}-{payload}")
                if meta["status"] != "ok":
                    print(f"{backend} payload {payload}: {meta['status']} {meta.get('reason', '')}")
                    return 1
                df = pd.read_parquet(raw)
                us = df.loc[~df["warmup"], "e2e_ns"] / 1e3
                row = {"backend": backend, "payload": payload, "n": len(us), "p50_us": round(us.median(), 2),
                       "p99_us": round(us.quantile(0.99), 2), "bring_up_s": meta["bring_up_s"],
                       "affinity": {k: v.get("affinity") for k, v in meta["placement"].items()}}
                if backend == "docker":
                    info = meta["backend_info"]
                    row["ready_s"] = {d: c["start_to_ready_s"] for d, c in info["containers"].items()}
                    row["launch_s"] = info["timings"].get("launch_s")
                rows.append(row)
    print(f"\nmicro linux isolated d2, pinning {a.pinning}, {a.requests} timed calls per cell "
          f"(+{a.warmup} warm-up); round trip in us")
    print(f"{'payload':>8} {'process p50':>12} {'docker p50':>11} {'ratio':>6} {'process p99':>12} "
          f"{'docker p99':>11}   docker bring-up (create-to-ready per container)")
    for payload in sorted({r["payload"] for r in rows}):
        p = next(r for r in rows if r["payload"] == payload and r["backend"] == "process")
        d = next(r for r in rows if r["payload"] == payload and r["backend"] == "docker")
        ready = ", ".join(f"{k} {v:.2f} s" for k, v in d["ready_s"].items())
        print(f"{payload:>8} {p['p50_us']:>12.1f} {d['p50_us']:>11.1f} {d['p50_us'] / p['p50_us']:>6.2f} "
              f"{p['p99_us']:>12.1f} {d['p99_us']:>11.1f}   {d['bring_up_s']:.2f} s ({ready})")
    print("pinning in effect:", json.dumps({f"{r['backend']}/{r['payload']}": r["affinity"] for r in rows}))
    if a.json:
        Path(a.json).write_text(json.dumps({"image": image, "image_check_s": image_s, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
