"""The agent's pure Node builders: capacity, allocatable, labels, status, conditions, lease."""
from __future__ import annotations

import asyncio

import pytest

from controlplane.client.api import ConflictError
from controlplane.client.fake import FakeApi
from controlplane.client.timeutil import FakeWallClock, format_time
from node.agent.node import (HostFacts, NodeConfig, NodeReporter, allocatable, host_capacity, new_node, node_status,
                             os_image, ready_condition, renewed_lease)
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2

MEMINFO = "MemTotal:       16314020 kB\nMemFree:         1000000 kB\n"
FACTS = HostFacts("host1", "6.1.0-18-amd64", "Debian GNU/Linux 12 (bookworm)", "linux", "amd64", "m-id", "b-id")
NOW = 1_800_000_000.0
OK = [cri.RuntimeCondition(type="RuntimeReady", status=True), cri.RuntimeCondition(type="NetworkReady", status=True)]


def test_capacity_from_the_host_or_flags() -> None:
    assert host_capacity(MEMINFO, 8) == {"cpu": "8", "memory": "16314020Ki", "pods": "110"}
    assert host_capacity(MEMINFO, 8, 20, cpu="2", memory="4Gi") == {"cpu": "2", "memory": "4Gi", "pods": "20"}
    with pytest.raises(ValueError, match="MemTotal"):
        host_capacity("nothing", 1)


def test_allocatable_subtracts_reserved() -> None:
    cap = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    assert allocatable(cap, {"cpu": "500m", "memory": "1Gi", "pods": "10"}) == {
        "cpu": "3500m", "memory": f"{7 * 1024 * 1024}Ki", "pods": "100"}
    assert allocatable(cap, {"cpu": "1"})["cpu"] == "3"
    assert allocatable(cap, {"cpu": "8"})["cpu"] == "0"
    with pytest.raises(ValueError, match="no gpu capacity"):
        allocatable(cap, {"gpu": "1"})


def test_os_image() -> None:
    assert os_image('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n') == "Debian GNU/Linux 12 (bookworm)"
    assert os_image("") == "Linux"


def test_new_node_labels_and_pod_cidr() -> None:
    node = new_node(NodeConfig("n1", "10.0.0.5", pod_cidr="10.244.1.0/24", labels={"zone": "a"}), FACTS)
    assert node.metadata.labels["kubernetes.io/hostname"] == "n1"
    assert node.metadata.labels["kubernetes.io/arch"] == "amd64" and node.metadata.labels["kubernetes.io/os"] == "linux"
    assert node.metadata.labels["zone"] == "a"
    assert (node.spec.pod_cidr, list(node.spec.pod_cidrs)) == ("10.244.1.0/24", ["10.244.1.0/24"])


def test_ready_follows_the_runtime_and_keeps_transition_times() -> None:
    ready = ready_condition(OK, {}, NOW)
    assert (ready.status, ready.reason, ready.last_transition_time) == ("True", "KubeletReady", format_time(NOW))
    later = ready_condition(OK, {"Ready": ready}, NOW + 30)
    assert later.last_transition_time == format_time(NOW) and later.last_heartbeat_time == format_time(NOW + 30)
    no_net = [OK[0], cri.RuntimeCondition(type="NetworkReady", status=False, reason="NetworkPluginNotReady",
                                          message="no pod CIDR")]
    down = ready_condition(no_net, {"Ready": later}, NOW + 60)
    assert down.status == "False" and down.reason == "KubeletNotReady" and "network not ready" in down.message
    assert "no pod CIDR" in down.message and down.last_transition_time == format_time(NOW + 60)
    gone = ready_condition(None, {}, NOW)
    assert gone.status == "False" and "runtime is down" in gone.message


def test_node_status() -> None:
    config = NodeConfig("n1", "10.0.0.5", reserved={"memory": "1Gi"}, node_service_port=10250)
    images = [cri.Image(id="sha256:a", repo_tags=["busybox:1.0"], repo_digests=["busybox@sha256:x"], size=2_000_000),
              cri.Image(id="sha256:b", size=5)]  # no name: not reported
    status = node_status(config, FACTS, host_capacity(MEMINFO, 4), "skiff://0.1.0", images, OK,
                         core_pb2.NodeStatus(), NOW)
    assert status.capacity["cpu"] == "4" and status.allocatable["memory"] == f"{16314020 - 1024 * 1024}Ki"
    assert [(a.type, a.address) for a in status.addresses] == [("InternalIP", "10.0.0.5"), ("Hostname", "n1")]
    assert status.daemon_endpoints.kubelet_endpoint.port == 10250
    info = status.node_info
    assert (info.kubelet_version, info.container_runtime_version, info.os_image, info.architecture) == (
        "skiff/0.1.0", "skiff://0.1.0", "Debian GNU/Linux 12 (bookworm)", "amd64")
    assert [(list(i.names), i.size_bytes) for i in status.images] == [(["busybox@sha256:x", "busybox:1.0"], 2_000_000)]
    assert {c.type: c.status for c in status.conditions} == {
        "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False", "Ready": "True"}


def test_lease_renewal() -> None:
    lease = renewed_lease(None, "n1", 40, NOW)
    assert (lease.metadata.namespace, lease.metadata.name, lease.spec.holder_identity) == ("kube-node-lease", "n1", "n1")
    assert lease.spec.lease_duration_seconds == 40 and lease.spec.renew_time.endswith(".000000Z")
    again = renewed_lease(lease, "n1", 40, NOW + 10.5)
    assert again.spec.renew_time != lease.spec.renew_time and again.metadata.name == "n1"


def _reporter(conditions: list[cri.RuntimeCondition]) -> tuple[NodeReporter, FakeApi, FakeWallClock]:
    clock = FakeWallClock(NOW)
    api = FakeApi(clock)
    reporter = NodeReporter(api, None, NodeConfig("n1", "10.0.0.1"), "skiff://0.1.0", facts=FACTS,  # type: ignore[arg-type]
                            capacity={"cpu": "2", "memory": "1Gi", "pods": "110"}, wall=clock)

    async def facts() -> tuple[list[cri.RuntimeCondition], list[cri.Image]]:
        return conditions, []
    reporter._runtime_facts = facts  # type: ignore[method-assign]
    return reporter, api, clock


def test_an_unchanged_status_is_written_only_every_report_interval() -> None:
    conditions = list(OK)
    reporter, api, clock = _reporter(conditions)

    async def body() -> None:
        await reporter.register()
        assert reporter.status_writes == 1
        for _ in range(5):  # 50 s of status ticks, nothing changes: no write
            clock.advance(10)
            await reporter.update_status()
        assert reporter.status_writes == 1
        conditions[1] = cri.RuntimeCondition(type="NetworkReady", status=False, reason="NoCNI", message="no network")
        clock.advance(10)
        node = await reporter.update_status()  # a change: written at once
        assert reporter.status_writes == 2
        assert next(c for c in node.status.conditions if c.type == "Ready").status == "False"
        clock.advance(300)
        await reporter.update_status()  # unchanged, but the report interval has passed
        assert reporter.status_writes == 3
    asyncio.run(body())


def test_lease_renewals_write_from_the_last_copy_and_reread_after_a_conflict() -> None:
    reporter, api, clock = _reporter(list(OK))

    async def body() -> None:
        await reporter.renew_lease()
        clock.advance(10)
        api.clear_actions()
        await reporter.renew_lease()
        assert [a[0] for a in api.actions] == ["update"]  # no read
        other = await api.get("leases", "n1", "kube-node-lease")
        other.spec.lease_transitions = 1  # type: ignore[attr-defined]
        await api.update(other)  # someone else writes it: our copy is stale
        clock.advance(10)
        with pytest.raises(ConflictError):
            await reporter.renew_lease()
        api.clear_actions()
        await reporter.renew_lease()
        assert [a[0] for a in api.actions] == ["get", "update"] and reporter.lease_renewals == 3
    asyncio.run(body())
