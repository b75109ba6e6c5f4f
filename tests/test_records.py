"""The cell record: written once and typed; read back by the summaries; records from before the
format version are upgraded; newer or broken ones are refused with a message that says what to do."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from msdbench import records
from msdbench.aggregate import table
from msdbench.cell import run_cell
from msdbench.planning import Cell, plan

from conftest import ROOT


@pytest.fixture(scope="module")
def micro_cell(tmp_path_factory):
    """One real micro cell (its record and raw samples)."""
    d = tmp_path_factory.mktemp("cell")
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 64),
             {"requests": 100, "warmup": 10, "pinning": "same-core"})
    written = run_cell(m, d / "c.parquet", d / "c.json")
    return d, written


def test_written_record_is_typed_and_versioned(micro_cell):
    d, written = micro_cell
    rec = records.load(d / "c.json")
    assert rec.format == records.FORMAT and written["format"] == records.FORMAT
    assert rec.cell.suite == "micro" and rec.cell.deployment == 2 and rec.status == "ok"
    assert rec.dump() == json.loads((d / "c.json").read_text()) == written
    assert "points" not in written and "mode" not in written["cell"]  # what does not apply


def test_an_unversioned_record_is_upgraded_and_gives_the_same_rows(micro_cell, tmp_path):
    d, written = micro_cell
    old = dict(written)
    del old["format"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "old.parquet").write_bytes((d / "c.parquet").read_bytes())
    assert records.load(tmp_path / "old.json").format == records.FORMAT
    pd.testing.assert_frame_equal(table("micro", [tmp_path / "old.json"]),
                                  table("micro", [d / "c.json"]))


@pytest.mark.parametrize("change,expect", [
    ({"format": 99}, "record format 99 is newer than this msdbench reads"),
    ({"status": "fine"}, "field 'status'"),
    ({"cell": {"suite": "micro"}}, "field 'cell.platform'"),
    ({"samples": []}, "field 'samples'"),
])
def test_a_record_it_cannot_read_is_refused_with_the_field(micro_cell, tmp_path, change, expect):
    d, written = micro_cell
    (tmp_path / "bad.json").write_text(json.dumps(written | change))
    with pytest.raises(records.RecordError) as e:
        records.load(tmp_path / "bad.json")
    assert str(tmp_path / "bad.json") in str(e.value) and expect in str(e.value)


def test_msdbench_aggregate_refuses_a_broken_record_in_one_line(micro_cell, tmp_path):
    d, written = micro_cell
    (tmp_path / "bad.json").write_text(json.dumps(written | {"format": 7}))
    r = subprocess.run([sys.executable, "-m", "msdbench", "aggregate", "micro", "--csv",
                        str(tmp_path / "t.csv"), "--parquet", str(tmp_path / "t.parquet"),
                        str(tmp_path / "bad.json")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "record format 7 is newer" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "t.csv").exists()
