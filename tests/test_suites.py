"""The suite registry: every suite's cell path round-trips, its config section and figures exist,
and the layers that used to test a suite's name now ask the registry."""

import pytest

from msdbench import suites
from msdbench.axes import Cell, PlanError
from msdbench.config import load, matrix, schema

from conftest import ROOT

CONFIGS = ["config/config.yaml", "config/paper.yaml", "config/device.yaml"]


@pytest.mark.parametrize("config_file", CONFIGS)
def test_every_cell_path_parses_back_to_its_cell(config_file):
    jobs = matrix(load(ROOT / config_file))
    assert {j.suite_key for j in jobs} <= set(suites.SUITES)
    for job in jobs:
        suite, cell, axes = suites.of_stem(job.stem)
        assert (suite.name, cell, axes) == (job.cell.suite, job.cell, job.axes)
    assert len({j.stem for j in jobs}) == len(jobs), "two cells share a path"


def test_a_path_that_is_no_cell_is_refused_by_name():
    with pytest.raises(PlanError, match="suite: 'nano' is not one of 'micro', 'beps', 'throughput', 'device'"):
        suites.of_stem("nano/linux/process/isolated/d2")
    with pytest.raises(PlanError, match="not a micro cell path"):
        suites.of_stem("micro/linux/process/isolated/d2")  # no payload


@pytest.mark.parametrize("name", list(suites.SUITES))
def test_each_suite_has_its_config_section_and_captions(name):
    suite = suites.get(name)
    section = schema()["properties"][name]
    if suite.services is not None:  # a suite of its own cells (not one over other suites' cells)
        assert set(section["properties"]["isolations"]["items"]["enum"]) == set(suite.isolations)
    for figure in suite.figures:
        caption = ROOT / "workflow/report" / f"{figure}.rst"
        assert caption.is_file() and len(caption.read_text().split()) > 20, caption
    for ref in (suite.measure, suite.rows, suite.lines, *suite.figures.values()):
        assert callable(suites.resolve(ref)), ref


def test_a_suites_own_deployments_are_enforced_by_planning():
    from msdbench.planning import plan

    with pytest.raises(PlanError, match="deployment: the throughput suite runs at deployment 2"):
        plan(Cell("throughput", "linux", "process", "tiered", 1))
    m = plan(Cell("throughput", "linux", "process", "tiered", 2), {"workers": 2})
    assert m.suite == "throughput" and m.service("lb").domain == "front"
    assert [e.callee for e in m.edges_from("client")] == ["lb"]


def test_no_layer_tests_a_suite_by_name():
    """The registry is the one place that knows the suites: outside msdbench/suites/ (and the
    figure modules of a suite's own figures), no code compares a suite to a name."""
    offenders = []
    for path in (ROOT / "msdbench").rglob("*.py"):
        rel = path.relative_to(ROOT / "msdbench").as_posix()
        if rel.startswith(("suites/", "figures/")):
            continue
        text = path.read_text()
        for needle in ('suite == "', "suite == '", 'suite != "', 'suite in ("'):
            if needle in text:
                offenders.append(f"{rel}: {needle}")
    for path in (ROOT / "workflow/rules").glob("*.smk"):
        if '"micro"' in path.read_text() or '"beps"' in path.read_text():
            offenders.append(path.name)
    assert not offenders, offenders

