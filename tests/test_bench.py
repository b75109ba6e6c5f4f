"""`msdbench bench` runs end to end: every path answers, the C echo is built and measured in the
same run (or skipped with a note), and the ratios it prints come from its own rows."""

import json
import shutil
import subprocess
import sys


def test_bench_measures_every_path_beside_the_c_echo(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "msdbench.bench", "-n", "200", "--warmup", "20",
                        "--sizes", "0,512", "--json", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    paths = {(row["path"], row["size"]) for row in result["rows"]}
    for size in (0, 512):
        assert {("thrift-tcp", size), ("poll-list", size), ("shm", size), ("direct", size),
                ("tcp-echo", size)} <= paths
    assert {("beps-linux create_user", 0), ("beps-specialized publish", 0)} <= paths
    if shutil.which("cc") or shutil.which("gcc"):
        assert ("c-echo", 0) in paths and "thrift-tcp/c-echo" in r.stdout
        # create_user's route in C (3 threads over loopback TCP) costs more than one echo
        by = {(row["path"], row["size"]): row["median_us"] for row in result["rows"]}
        assert by[("c-chain (beps)", 0)] > by[("c-echo (beps)", 0)]
        assert "(c-chain/c-echo)" in r.stdout
    else:
        assert any("c-echo" in n and "skipped" in n for n in result["notes"])
    assert all(row["median_us"] > 0 for row in result["rows"])
    publish = [row for row in result["rows"] if row["path"].endswith("publish")]
    assert publish and all(row["per"] == 20 for row in publish)
