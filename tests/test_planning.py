"""Planning is pure: every isolation x deployment of both suites, checked without running anything."""

import pytest

from msdbench.manifest import Manifest
from msdbench.planning import ISOLATIONS, Cell, PlanError, plan

MICRO_VALID = {("co-located", 1), ("isolated", 2)}


@pytest.mark.parametrize("isolation", ISOLATIONS["micro"])
@pytest.mark.parametrize("deployment", [1, 2])
def test_micro_every_isolation_and_deployment(isolation, deployment):
    cell = Cell("micro", "linux", "process", isolation, deployment, 4096)
    if (isolation, deployment) not in MICRO_VALID:
        with pytest.raises(PlanError, match=f"isolation '{isolation}' with deployment {deployment}"):
            plan(cell)
        return
    m = plan(cell, {"pinning": "same-core"})
    client_domain = m.domain(m.service("client").domain)
    if deployment == 1:
        assert client_domain.name == m.service("poll").domain
    else:
        assert client_domain.services == ["client"]
    assert [(e.caller, e.callee, e.transport) for e in m.edges] == [("client", "poll", "thrift-tcp")]
    assert m.settings["payload"] == 4096
    assert all(d.cpus == [0] for d in m.domains)
    assert all(e.address is None for e in m.edges), "ports are picked at run time, not planned"


@pytest.mark.parametrize("isolation,domains", [
    ("co-located", {"server": 9}),
    ("tiered", {"front": 6, "data": 2, "read": 1}),
    ("isolated", {f"worker{i}": 1 for i in range(5)} | {"lb": 1, "userdb": 1, "payloaddb": 1, "reader": 1}),
])
@pytest.mark.parametrize("deployment", [1, 2])
def test_beps_domains_follow_paper_fig3(isolation, domains, deployment):
    m = plan(Cell("beps", "linux", "process", isolation, deployment), {"workers": 5})
    sizes = {d.name: len([s for s in d.services if s != "client"]) for d in m.domains}
    sizes = {k: v for k, v in sizes.items() if v}
    assert sizes == domains
    client_domain = m.domain(m.service("client").domain)
    if deployment == 1:  # the client sits inside the entry service's (the load balancer's) domain
        assert client_domain.name == m.service("lb").domain
    else:                # a domain of its own, holding the client and nothing else
        assert client_domain.services == ["client"]
        assert sum("client" in d.services for d in m.domains) == 1
    # client -> lb, lb -> 5 workers, each worker -> 3 stores
    assert len(m.edges) == 1 + 5 + 5 * 3
    assert {e.transport for e in m.edges} == {"thrift-tcp"}


def test_split_pinning_puts_client_apart():
    m = plan(Cell("beps", "linux", "process", "tiered", 2), {"pinning": "split"})
    assert m.domain("client").cpus == [0]
    assert all(d.cpus == [1] for d in m.domains if d.name != "client")


@pytest.mark.parametrize("deployment", [3, 4])
def test_unsupported_deployments_are_named(deployment):
    with pytest.raises(PlanError, match=f"deployment: {deployment} .*needs a VM.*supported deployments: \\[1, 2, 5\\]"):
        plan(Cell("beps", "linux", "process", "tiered", deployment))


EDGE = {"client_host": "edge1", "hosts": {"edge1": {"kind": "netns", "rate": "1gbit"}}}


@pytest.mark.parametrize("platform", ["linux", "specialized"])
def test_deployment_5_puts_the_client_on_the_named_host(platform):
    m = plan(Cell("beps", platform, "process", "tiered", 5), EDGE)
    assert m.client_domain().host == "edge1"
    assert {d.host for d in m.server_domains()} == {"local"}
    assert m.hosts == {"local": {"kind": "local"}, "edge1": {"kind": "netns", "rate": "1gbit"}}
    # across hosts every platform speaks Thrift over TCP (specialized keeps shm between local domains)
    (edge,) = m.edges_from("client")
    assert edge.transport == "thrift-tcp"
    m2 = Manifest.from_dict(m.to_dict())
    assert m2 == m


@pytest.mark.parametrize("settings,match", [
    ({}, "deployment 5 .*client_host"),
    ({"client_host": "edge9", "hosts": EDGE["hosts"]}, "deployments.5.client_host: 'edge9'"),
    ({"client_host": "edge1", "hosts": {"edge1": {"kind": "local"}}}, "kind 'local'"),
    ({"client_host": "edge1", "hosts": {"edge1": {"kind": "netns", "delay": "soon"}}},
     "hosts.edge1.delay: 'soon'"),
])
def test_deployment_5_without_a_usable_host_is_named(settings, match):
    with pytest.raises(PlanError, match=match):
        plan(Cell("micro", "linux", "process", "isolated", 5, 0), settings)


def test_deployment_5_with_docker_is_refused_by_name():
    with pytest.raises(PlanError, match="deployment 5 with backend 'docker'.*process"):
        plan(Cell("micro", "linux", "docker", "isolated", 5, 0), EDGE)


@pytest.mark.parametrize("field,cell,allowed", [
    ("isolation", Cell("beps", "linux", "process", "sharded", 1), "'co-located', 'tiered', 'isolated'"),
    ("platform", Cell("micro", "windows", "process", "isolated", 2, 0), "'linux', 'specialized'"),
    ("backend", Cell("micro", "linux", "vm", "isolated", 2, 0), "'process', 'docker'"),
])
def test_bad_cells_name_field_and_allowed_values(field, cell, allowed):
    with pytest.raises(PlanError) as e:
        plan(cell)
    assert field in str(e.value) and allowed in str(e.value)


def test_negative_payload_rejected():
    with pytest.raises(PlanError, match="payload"):
        plan(Cell("micro", "linux", "process", "isolated", 2, -1))


def test_manifest_round_trips_through_yaml(tmp_path):
    m = plan(Cell("beps", "specialized", "process", "tiered", 2))
    m.save(tmp_path / "m.yaml")
    assert Manifest.load(tmp_path / "m.yaml") == m
