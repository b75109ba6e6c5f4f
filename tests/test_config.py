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


def counts(jobs) -> dict:
    out: dict = {}
    for j in jobs:
        out[j.suite_key] = out.get(j.suite_key, 0) + 1
    return out


@pytest.mark.parametrize("name", ["config/config.yaml", "config/paper.yaml", "config/docker.yaml",
                                  "config/hosts.yaml"])
def test_shipped_configs_expand_to_the_cells_they_promise(name):
    c = load(ROOT / name)
    per_backend = len(c["platforms"]) * len(c["backends"])
    # micro: co-located runs as deployment 1, isolated as 2 and 5 (one pair each), times the payloads
    m = c["micro"]
    pairs = (("co-located" in m["isolations"] and 1 in m["deployments"])
             + ("isolated" in m["isolations"]) * len([d for d in m["deployments"] if d != 1]))
    expect = {"micro": per_backend * pairs * len(m["payloads"]),
              "beps": per_backend * len(c["beps"]["isolations"]) * len(c["beps"]["deployments"])}
    t = c.get("throughput")
    if t:
        open_isos = (t.get("open") or {}).get("isolations") or t["isolations"]
        expect["throughput"] = per_backend * sum(
            len(t["isolations"] if mode == "closed" else open_isos) for mode in t["modes"])
    assert counts(matrix(c)) == expect
    labels = [j.label for j in matrix(c)]
    assert len(set(labels)) == len(labels), "two cells share one output path"


def test_paper_config_has_the_papers_sizes():
    """Section 4 of the paper: 10,000 requests a micro cell, payloads up to 8 KiB; BEPS with 5
    workers, 10,000 users, 500 active x 20 follows and 20 publishes of 280 bytes; fig 11 with
    105,000 pairs a client after 50 warm-up pairs."""
    c = load(ROOT / "config/paper.yaml")
    assert c["micro"]["requests"] == 10_000
    assert c["micro"]["payloads"] == [0, 512, 1024, 2048, 4096, 8192]
    assert c["beps"]["workers"] == 5
    w = c["beps"]["workload"]
    assert (w["users"], w["active_users"], w["follows_per_user"], w["publishes_per_user"],
            w["message_len"]) == (10_000, 500, 20, 20, 280)
    t = c["throughput"]
    assert t["pairs_per_client"] == 105_000 and t["warmup_pairs"] == 50
    assert set(t["isolations"]) == {"co-located", "tiered", "isolated"}
    # 2 platforms x 1 backend: 24 micro cells, 12 BEPS cells, 12 throughput sweeps
    assert counts(matrix(c)) == {"micro": 24, "beps": 12, "throughput": 12}


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
    ({"beps__deployments": [1, 4]}, ["beps", "deployment 4", "client_host", "kind: vm, on: edge1"]),
    ({"backends": ["process", "vm"]}, ["backends[1]", "'vm'", "['process', 'docker']"]),
    ({"backends": []}, ["backends", "non-empty"]),
    ({"deadline_s": 0}, ["deadline_s", "minimum of 0"]),
    ({"deadline_s": "soon"}, ["deadline_s", "'soon' is not of type 'number'"]),
    ({"docker_host": 42}, ["docker_host", "42 is not of type 'string', 'null'"]),
    ({"docker_host": "ftp://engine"}, ["docker_host", "'ftp://engine'", "tcp://", "ssh://"]),
    ({"micro__payload_mode": "bytes"}, ["micro.payload_mode", "'bytes'", "['binary', 'list']"]),
    ({"throughput__quiet": {"wait_s": 3}}, ["throughput.quiet", "'max_unaccounted' is a required"]),
    ({"throughput__quiet": {"max_unaccounted": 0}},
     ["throughput.quiet.max_unaccounted", "minimum of 0"]),
    ({"throughput__quiet": {"max_unaccounted": 0.3, "loud": 1}},
     ["throughput.quiet", "'loud'", "['max_unaccounted', 'retries', 'wait_s']"]),
    ({"beps__deployments": [1, 5], "deployments": KeyError}, ["beps", "deployment 5", "client_host"]),
    ({"throughput__deployment": 3}, ["throughput.deployment", "[2, 5]"]),
    ({"beps__deployments": [5], "hosts": {"edge1": {"kind": "vmm"}}, "deployments": {5: {"client_host": "edge1"}}},
     ["hosts.edge1.kind", "'vmm'", "'local', 'netns', 'ssh', 'board', 'vm'"]),
    ({"beps__deployments": [5], "hosts": {"edge1": {"kind": "netns", "rate": "fast"}},
      "deployments": {5: {"client_host": "edge1"}}}, ["hosts.edge1.rate", "'fast'", "100mbit"]),
    ({"hosts": {"edge1": {"kind": "ssh", "url": "http://x"}}}, ["hosts.edge1.url", "ssh://user@host"]),
    ({"hosts": {"edge1": {"kind": "netns", "colour": 1}}}, ["hosts.edge1", "colour", "allowed"]),
    ({"beps__deployments": [5], "hosts": {"edge1": {"kind": "netns"}},
      "deployments": {5: {"client_host": "edge2"}}}, ["deployments.5.client_host", "'edge2'", "edge1"]),
    ({"deployments": {2: {"server_host": "vm7"}, 5: {"client_host": "edge1"}}},
     ["deployments.2.server_host", "'vm7'", "edge1"]),
    ({"beps__deployments": [3], "hosts": {"vm0": {"kind": "vm"}, "edge1": {"kind": "netns"}},
      "deployments": {3: {"client_host": "vm0", "server_host": "vm0"}, 5: {"client_host": "edge1"}}},
     ["deployment 3", "deployments.3.server_host: 'vm0' is the client's host too"]),
])
def test_bad_config_names_field_and_allowed(changes, expect):
    with pytest.raises(ConfigError) as e:
        validate(broken(**changes))
    for text in expect:
        assert text in str(e.value), f"{text!r} not in: {e.value}"


def test_server_host_reaches_the_cells_of_its_deployment_only():
    """`deployments: {2: {server_host: vm0}}`: deployment 2's cells carry the VM and its entry (a
    change to it reruns them), deployment 1's stay on this machine."""
    c = validate(broken(hosts={"vm0": {"kind": "vm"}, "edge1": {"kind": "netns"}},
                        deployments={2: {"server_host": "vm0"}, 5: {"client_host": "edge1"}}))
    placed = {j.cell.deployment: j.settings for j in matrix(c) if j.cell.suite == "micro"}
    assert placed[2]["server_host"] == "vm0" and placed[2]["hosts"]["vm0"] == {"kind": "vm"}
    assert "server_host" not in placed[1]


def test_micro_matrix_keeps_only_meaningful_pairs():
    cells = {(j.cell.isolation, j.cell.deployment) for j in matrix(DEFAULT) if j.cell.suite == "micro"}
    assert cells == {("co-located", 1), ("isolated", 2)}


def test_not_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("micro: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(p)


def test_config_readme_describes_every_key_of_the_schema():
    """config/README.md's reference is the schema's: every key is described, and the file is
    what `msdbench config-doc` writes from the schema today."""
    from msdbench.config import schema
    from msdbench.config_doc import keys, update

    undocumented = [key for key, _, text, _ in keys(schema()) if not text]
    assert not undocumented, f"schema keys without a description: {undocumented}"
    assert update(ROOT / "config/README.md", schema(), check=True), \
        "config/README.md is out of date: run `msdbench config-doc`"
    text = (ROOT / "config/README.md").read_text()
    for key in ("micro.payloads", "beps.workload.users", "throughput.auto.min_gain",
                "device.beps.workload.seed", "hosts.NAME.kind"):
        assert f"`{key}`" in text
