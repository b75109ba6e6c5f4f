"""The one-cell commands check their flags and manifests against the config schema (one line that
names the flag and what is allowed, before anything starts) and work outside the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from msdbench.cli import main
from msdbench.planning import Cell, plan

from conftest import ROOT

MICRO = ["micro", "--isolation", "isolated", "--deployment", "2"]


@pytest.fixture(autouse=True)
def own_temp_dir(tmp_path, monkeypatch):
    """Only this test's temp dir is swept (and what it makes lands there)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.mark.parametrize("args,expect", [
    (["--requests", "-5"], ["--requests: -5", "allowed: an integer >= 1", "micro.requests"]),
    (["--requests", "0"], ["--requests: 0", "allowed: an integer >= 1"]),
    (["--warmup", "-3"], ["--warmup: -3", "allowed: an integer >= 0", "micro.warmup"]),
    (["--payload", "-1"], ["--payload: -1", "allowed: an integer >= 0 and <= 1048576"]),
    (["--payload", "2000000"], ["--payload: 2000000", "<= 1048576"]),
    (["--workers", "2"], ["--workers: not a setting of a micro cell", "only of: beps"]),
])
@pytest.mark.parametrize("command", ["run", "up"])
def test_bad_flags_get_one_line(tmp_path, capsys, command, args, expect):
    extra = ["--addresses", str(tmp_path / "a.json")] if command == "up" else []
    assert main([command, *MICRO, *args, *extra]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    for text in expect:
        assert text in err, err
    assert "outputs go to" not in out  # refused before anything was made


@pytest.mark.parametrize("args,expect", [
    (["beps", "--isolation", "tiered", "--deployment", "2", "--workers", "0"],
     "--workers: 0 is less than the minimum of 1; allowed: an integer >= 1 and <= 64"),
    (["beps", "--isolation", "tiered", "--deployment", "2", "--requests", "5"],
     "--requests: not a setting of a beps cell (only of: micro)"),
    (["micro", "--isolation", "tiered", "--deployment", "2"], "isolation (suite micro): 'tiered'"),
])
def test_bad_cells_get_one_line(capsys, args, expect):
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expect in err, err


def test_up_refuses_a_bad_duration(tmp_path, capsys):
    assert main(["up", *MICRO, "--seconds", "-1", "--addresses", str(tmp_path / "a.json")]) == 2
    assert "--seconds: -1 is not allowed; allowed: a number > 0" in capsys.readouterr().err


@pytest.mark.parametrize("settings,expect", [
    ({"requests": -5}, "setting 'requests': -5 is less than the minimum of 1"),
    ({"warmup": -3}, "setting 'warmup': -3 is less than the minimum of 0"),
    ({"pinning": "anywhere"}, "allowed values: ['same-core', 'split', 'none']"),
])
def test_measure_checks_the_manifest_settings(tmp_path, capsys, settings, expect):
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), {"requests": 10})
    m.settings.update(settings)  # a hand-edited manifest
    m.save(tmp_path / "m.yaml")
    assert main(["measure", str(tmp_path / "m.yaml"), "--raw", str(tmp_path / "c.parquet"),
                 "--meta", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "c.json").exists()


def _outside(tmp_path, *args) -> subprocess.CompletedProcess:
    """msdbench in a directory that is not the repository (the package still on the path)."""
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "msdbench", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_repeats_flag(tmp_path, capsys, no_leftovers):
    """`msdbench run --repeats K`: checked against the config schema's `repeats`, then K fresh
    bring-ups whose samples all reach the summary and the raw file."""
    assert main(["run", *MICRO, "--repeats", "0"]) == 2
    err = capsys.readouterr().err
    assert "--repeats: 0" in err and "(config field repeats)" in err, err
    out = tmp_path / "out"
    assert main(["run", *MICRO, "--requests", "20", "--warmup", "0", "--repeats", "2",
                 "--out", str(out)]) == 0
    assert "poll: n=40" in capsys.readouterr().out
    import pandas as pd
    raw = pd.read_parquet(out / "cell.parquet")
    assert sorted(set(raw["rep"])) == [0, 1]
    assert (raw[raw["op"] == "poll"].groupby("rep").size() == 20).all()


def test_outside_the_repository(tmp_path, no_leftovers):
    r = _outside(tmp_path, "run", *MICRO, "--requests", "20", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    repeats = yaml.safe_load((ROOT / "config/config.yaml").read_text())["repeats"]
    assert f"poll: n={20 * repeats}" in r.stdout  # the repository's config: its repetitions
    m = plan(Cell("micro", "linux", "process", "isolated", 2, 0), {"requests": 20, "warmup": 0})
    m.save(tmp_path / "m.yaml")
    r = _outside(tmp_path, "measure", "m.yaml", "--raw", "c.parquet", "--meta", "c.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "c.json").read_text())["status"] == "ok"
    for args, expect in [(["run", *MICRO, "--config", "mine.yaml"], "config file 'mine.yaml' not found"),
                         (["measure", "nothing.yaml", "--raw", "c.parquet", "--meta", "c.json"],
                          "manifest 'nothing.yaml' not found")]:
        r = _outside(tmp_path, *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr, \
            r.stderr
