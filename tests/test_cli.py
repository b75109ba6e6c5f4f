"""The `msdbench` commands a user types: validate, bench, throughput run (real processes)."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from msdbench.config import matrix, validate

from conftest import ROOT


def msdbench(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msdbench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_validate_lists_every_cell(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["platforms"] = ["linux"]
    config["micro"]["payloads"] = [0, 64, 128]
    config["beps"]["isolations"] = ["tiered"]
    config["throughput"] = {"isolations": ["isolated"], "modes": ["closed"]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    r = msdbench("validate", str(path))
    assert r.returncode == 0, r.stderr
    # 3 payloads x 2 (co-located d1, isolated d2) + tiered x 2 deployments + 1 sweep
    assert f"{path}: valid; 9 cells" in r.stdout
    listed = [line.strip() for line in r.stdout.splitlines()[1:]]
    expect = [j.label for j in matrix(validate(config))]
    assert listed == expect and len(set(listed)) == 9
    assert "micro linux process isolated d2 p128" in listed
    # the throughput study runs on deployment 5 (the default config's emulated host) by default
    assert "throughput closed linux process isolated d5" in listed


def test_validate_rejects_a_bad_file_naming_the_field(tmp_path):
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config["micro"]["payload_mode"] = "bytes"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    r = msdbench("validate", str(path))
    assert r.returncode == 2 and r.stdout == ""
    assert "micro.payload_mode" in r.stderr and "['binary', 'list']" in r.stderr
    r = msdbench("validate", str(tmp_path / "absent.yaml"))
    assert r.returncode != 0 and "absent.yaml" in r.stderr


def test_bench_measures_every_binding_in_one_run(tmp_path):
    out = tmp_path / "bench.json"
    r = msdbench("bench", "-n", "300", "--warmup", "30", "--sizes", "0,64", "--no-beps",
                 "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    by = {(x["path"], x["size"]): x["median_us"] for x in rows}
    for path in ("direct", "shm", "thrift-tcp", "tcp-echo"):
        assert {(path, 0), (path, 64)} <= set(by), sorted(by)
    assert all(x["n"] == 300 and x["median_us"] > 0 and x["p99_us"] >= x["median_us"] for x in rows)
    # the printed table's ratio columns are the medians' ratios of this very run
    lines = r.stdout.splitlines()
    header = next(line.split() for line in lines if "median_us" in line)
    refs = [h.lstrip("/") for h in header[4:6]]
    checked = 0
    for line in lines:
        parts = line.split()
        if len(parts) == 6 and (parts[0], parts[1].isdigit() and int(parts[1])) in by:
            key = (parts[0], int(parts[1]))
            for col, ref in zip(parts[4:6], refs):
                assert float(col) == pytest.approx(by[key] / by[ref, key[1]], abs=2e-3), line
            checked += 1
    assert checked == len(rows)
    # a direct call is a Python call: it does less than any path with a socket or a wake-up
    for size in (0, 64):
        assert by["direct", size] < min(v for (p, s), v in by.items() if s == size and p != "direct")


def test_throughput_run_by_hand(tmp_path, no_leftovers):
    out = tmp_path / "sweep"
    r = msdbench("throughput", "run", "--isolation", "co-located", "--clients", "1,2",
                 "--pairs", "30", "--warmup", "5", "--pinning", "same-core", "--workers", "2",
                 "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["status"] == "ok"
    assert [(p["clients"], p["status"], p["completed"]) for p in meta["points"]] == [
        (1, "ok", 1 * 2 * 30), (2, "ok", 2 * 2 * 30)]
    table = pd.read_csv(out / "table.csv")
    assert list(table["clients"]) == [1, 2] and (table["lost_users"] == 0).all()
    raw = pd.read_parquet(out / "sweep.parquet")
    assert (~raw["warmup"]).sum() == 2 * 30 * (1 + 2)
    assert str(out / "table.csv") in r.stdout
