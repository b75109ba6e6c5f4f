"""Bad configuration is rejected before anything runs, with the field and the allowed values."""

import copy

import pytest
import yaml

from msdbench.config import ConfigError, load, matrix, validate

from conftest import ROOT

DEFAULT = yaml.safe_load((ROOT / "config/config.yaml").read_text())


def broken(**changes):
    c = copy.deepcopy(DEFAULT)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = c
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value
    return c


@pytest.mark.parametrize("config_files", ["config/config.yaml", "config/paper.yaml"])
def test_shipped_configs_are_valid(config_files):
    assert matrix(load(ROOT / config_files))


@pytest.mark.parametrize("changes,expect", [
    ({"micro__isolations": ["co-located", "sharded"]},
     ["micro.isolations[1]", "'sharded'", "['co-located', 'isolated']"]),
    ({"micro__payloads": [0, -8]}, ["micro.payloads[1]", "-8", "minimum of 0"]),
    ({"micro__requests": KeyError}, ["micro", "'requests' is a required property"]),
    ({"micro__requests": "many"}, ["micro.requests", "'many' is not of type 'integer'"]),
    ({"platforms": ["linux", "windows"]}, ["platforms[1]", "'windows'", "['linux', 'specialized']"]),
    ({"pinning": "everywhere"}, ["pinning", "['same-core', 'split', 'none']"]),
    ({"beps__workload__users": 1}, ["beps.workload.users", "minimum of 2"]),
    ({"micro__paylods": [1]}, ["micro", "paylods", "allowed keys"]),
    ({"beps__deployments": [1, 4]}, ["beps", "deployment: 4", "supported deployments: [1, 2]"]),
])
def test_bad_config_names_field_and_allowed(changes, expect):
    with pytest.raises(ConfigError) as e:
        validate(broken(**changes))
    for text in expect:
        assert text in str(e.value), f"{text!r} not in: {e.value}"


def test_micro_matrix_keeps_only_meaningful_pairs():
    cells = {(j.cell.isolation, j.cell.deployment) for j in matrix(DEFAULT) if j.cell.suite == "micro"}
    assert cells == {("co-located", 1), ("isolated", 2)}


def test_not_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("micro: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(p)
