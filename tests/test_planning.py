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


VM1 = {"client_host": "vm1", "hosts": {"vm1": {"kind": "vm", "on": "local"}}}
VM2 = {"client_host": "vm2", "hosts": {"vm2": {"kind": "vm", "on": "edge1"},
                                      "edge1": {"kind": "netns", "rate": "1gbit"}}}


@pytest.mark.parametrize("pinning,qemu_cpus", [("same-core", [0]), ("split", [0]), ("none", None)])
def test_deployment_3_puts_the_client_in_a_vm_pinned_where_the_client_would_run(pinning, qemu_cpus):
    m = plan(Cell("micro", "specialized", "process", "isolated", 3, 64), VM1 | {"pinning": pinning})
    assert m.client_domain().host == "vm1" and {d.host for d in m.server_domains()} == {"local"}
    assert m.hosts["vm1"] == {"kind": "vm", "on": "local", "cpus": qemu_cpus}
    (edge,) = m.edges_from("client")
    assert edge.transport == "thrift-tcp"  # across hosts, whatever the platform


def test_deployment_4_carries_the_vms_own_host_entry():
    m = plan(Cell("beps", "linux", "process", "tiered", 4), VM2)
    assert m.client_domain().host == "vm2"
    assert m.hosts["vm2"]["on_host"] == {"kind": "netns", "rate": "1gbit"}
    assert "edge1" not in m.hosts  # the VM brings its own host up (it is the VM's, not the cell's)


@pytest.mark.parametrize("deployment,settings,match", [
    (3, {}, "deployment 3 .*client_host: NAME.*kind: vm, on: local"),
    (4, {}, "deployment 4 .*client_host: NAME.*kind: vm, on: edge1"),
    (3, VM2, "hosts.vm2.on: 'edge1'; deployment 3 .*on local"),
    (4, VM1, "hosts.vm1.on: 'local'; deployment 4 .*on another host"),
    (3, {"client_host": "e", "hosts": {"e": {"kind": "netns"}}}, "'e' is kind 'netns'.*'vm'"),
    (5, VM1, "'vm1' is kind 'vm'; deployment 5 .*'netns' or 'ssh'"),
    (4, {"client_host": "vm2", "hosts": {"vm2": {"kind": "vm", "on": "edge9"}}}, "hosts.vm2.on: 'edge9' is not a host"),
    (3, {"client_host": "vm1", "hosts": {"vm1": {"kind": "vm", "accel": "hvf"}}}, "hosts.vm1.accel: 'hvf'.*'auto', 'kvm', 'tcg'"),
    (3, {"client_host": "vm1", "hosts": {"vm1": {"kind": "vm", "boot": "warm"}}}, "hosts.vm1.boot: 'warm'.*'restore', 'cold'"),
])
def test_vm_deployments_without_a_usable_vm_are_named(deployment, settings, match):
    with pytest.raises(PlanError, match=match):
        plan(Cell("beps", "linux", "process", "tiered", deployment), settings)


VM0 = {"server_host": "vm0", "hosts": {"vm0": {"kind": "vm", "on": "local"}}}


@pytest.mark.parametrize("deployment", [1, 2])
@pytest.mark.parametrize("pinning,qemu_cpus", [("same-core", {1: [0], 2: [0]}),
                                               ("split", {1: [1], 2: [0, 1]}), ("none", {})])
def test_server_host_puts_every_domain_in_one_guest(deployment, pinning, qemu_cpus):
    """The paper's layout of deployments 1-2: all domains (the client too) in the server's VM,
    pinned to its one vCPU; QEMU gets the CPUs the domains would have had on the bare host."""
    m = plan(Cell("beps", "linux", "process", "tiered", deployment), VM0 | {"pinning": pinning})
    assert {d.host for d in m.domains} == {"vm0"}
    assert all(d.cpus == (None if pinning == "none" else [0]) for d in m.domains)
    assert m.hosts["vm0"] == {"kind": "vm", "on": "local", "cpus": qemu_cpus.get(deployment)}


@pytest.mark.parametrize("deployment,client,pinning,server_cpus,client_cpus", [
    (3, VM1, "same-core", [0], [0]), (3, VM1, "split", [1], [0]), (3, VM1, "none", None, None),
    (4, VM2, "split", [1], [0]),
    (5, {"client_host": "edge1", "hosts": {"edge1": {"kind": "netns"}}}, "split", [1], [0]),
])
def test_server_host_with_the_client_on_a_host_of_its_own(deployment, client, pinning, server_cpus,
                                                          client_cpus):
    """The paper's layout of deployments 3-5: the server side's domains in the server's guest, the
    client on its own host; each QEMU gets the CPUs its domains would have had on the bare host."""
    settings = VM0 | client | {"hosts": VM0["hosts"] | client["hosts"], "pinning": pinning}
    m = plan(Cell("beps", "linux", "process", "tiered", deployment), settings)
    assert {d.host for d in m.server_domains()} == {"vm0"}
    assert m.client_domain().host == client["client_host"] and m.client_domain().cpus == client_cpus
    assert m.hosts["vm0"]["cpus"] == server_cpus and "local" in m.hosts
    if deployment in (3, 4):
        assert m.hosts[client["client_host"]]["cpus"] == client_cpus
    (edge,) = m.edges_from("client")
    assert edge.transport == "thrift-tcp"


SSH = {"client_host": "nuc2", "hosts": {"nuc2": {"kind": "ssh", "url": "ssh://b@nuc2"}}}


@pytest.mark.parametrize("cell,settings,match", [
    (Cell("beps", "linux", "process", "tiered", 3), VM0 | {"client_host": "vm0"},
     r"deployments.3.server_host: 'vm0' is the client's host too; .*deployment 2"),
    (Cell("beps", "linux", "process", "tiered", 5), VM0 | SSH | {"hosts": VM0["hosts"] | SSH["hosts"]},
     r"deployments.5.server_host: 'vm0' with client_host 'nuc2' of kind 'ssh'.*'vm' or 'netns' only"),
    (Cell("beps", "linux", "docker", "tiered", 2), VM0, r"deployments.2.server_host: 'vm0' with backend 'docker'"),
    (Cell("beps", "linux", "process", "tiered", 2), {"server_host": "vm9", "hosts": {}},
     r"deployments.2.server_host: 'vm9' is not a host"),
    (Cell("beps", "linux", "process", "tiered", 1), {"server_host": "e", "hosts": {"e": {"kind": "netns"}}},
     r"deployments.1.server_host: 'e' is kind 'netns'.*kind 'vm' on local"),
])
def test_server_host_where_it_cannot_run_is_refused_by_name(cell, settings, match):
    with pytest.raises(PlanError, match=match):
        plan(cell, settings)


def test_yaml_reads_on_as_true_and_the_vm_still_finds_its_host():
    import yaml

    hosts = yaml.safe_load("vm2: {kind: vm, on: edge1}\nedge1: {kind: netns}")
    assert True in hosts["vm2"]  # YAML 1.1: `on` is a boolean
    m = plan(Cell("beps", "linux", "process", "tiered", 4), {"client_host": "vm2", "hosts": hosts})
    assert m.hosts["vm2"]["on"] == "edge1" and m.hosts["vm2"]["on_host"] == {"kind": "netns"}


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


def test_deployment_5_with_docker_plans_the_client_container_on_the_other_host():
    m = plan(Cell("micro", "specialized", "docker", "isolated", 5, 0), EDGE)
    assert m.client_domain().host == "edge1" and {d.host for d in m.server_domains()} == {"local"}
    (edge,) = m.edges_from("client")
    assert edge.transport == "thrift-tcp"


@pytest.mark.parametrize("deployment", [3, 4])
def test_a_vm_deployment_with_docker_is_refused_by_name(deployment):
    with pytest.raises(PlanError, match=f"deployment {deployment} with backend 'docker'.*process"):
        plan(Cell("micro", "linux", "docker", "isolated", deployment, 0), EDGE)


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
