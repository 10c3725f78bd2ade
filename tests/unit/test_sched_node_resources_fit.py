"""NodeResourcesFit: requests against allocatable minus what the node's pods request."""
from __future__ import annotations

from typing import Sequence

import pytest

from controlplane.scheduler.framework import NodeInfo, PodInfo, pod_requests
from controlplane.scheduler.plugins.node_resources_fit import NodeResourcesFit
from protos.skiff.api.v1 import core_pb2
from tests.schedutil import info, node, node_info, pod


def check(ni: NodeInfo, p: PodInfo) -> tuple[str, ...]:
    plugin = NodeResourcesFit()
    status = plugin.filter({}, p, ni)
    batch = plugin.filter_batch({}, p, [ni])
    assert batch == ([] if status.is_success else [(0, status)])
    return status.reasons


@pytest.mark.parametrize("cpu, memory, reasons", [
    ("1", "1Gi", ()),
    ("2", "4Gi", ()),
    ("2100m", "1Gi", ("Insufficient cpu",)),
    ("1", "5Gi", ("Insufficient memory",)),
    ("3", "5Gi", ("Insufficient cpu", "Insufficient memory")),
    (None, None, ()),
], ids=["fits", "exactly", "cpu", "memory", "both", "best-effort"])
def test_against_pods_already_there(cpu: str | None, memory: str | None,
                                    reasons: tuple[str, ...]) -> None:
    ni = node_info(node(cpu="4", memory="8Gi"), pod("old", "2", "4Gi", node_name="n1"))
    assert check(ni, info(pod(cpu=cpu, memory=memory))) == reasons


def test_too_many_pods_comes_first() -> None:
    ni = node_info(node(cpu="1", pods="1"), pod("old", "500m", node_name="n1"))
    assert check(ni, info(pod(cpu="1"))) == ("Too many pods", "Insufficient cpu")
    assert check(ni, info(pod())) == ("Too many pods",)


def test_zero_request_pod_fits_an_overcommitted_node() -> None:
    ni = node_info(node(cpu="1"), pod("old", "2", node_name="n1"))
    assert check(ni, info(pod(memory="1Mi"))) == ()


def test_extended_resources() -> None:
    ni = node_info(node())
    assert check(ni, info(pod(extra={"example.com/gpu": "1"}))) == ("Insufficient example.com/gpu",)
    gpu_node = core_pb2.Node()
    gpu_node.CopyFrom(node())
    gpu_node.status.allocatable["example.com/gpu"] = "2"
    assert check(NodeInfo(gpu_node), info(pod(extra={"example.com/gpu": "2"}))) == ()
    assert check(NodeInfo(gpu_node), info(pod(extra={"example.com/gpu": "3"}))) == (
        "Insufficient example.com/gpu",)


def spec(containers: list[str], inits: Sequence[tuple[str, bool]] = (),
         overhead: str | None = None) -> core_pb2.PodSpec:
    s = core_pb2.PodSpec()
    for cpu in containers:
        s.containers.add(name="c").resources.requests["cpu"] = cpu
    for cpu, sidecar in inits:
        c = s.init_containers.add(name="i")
        c.resources.requests["cpu"] = cpu
        if sidecar:
            c.restart_policy = "Always"
    if overhead:
        s.overhead["cpu"] = overhead
    return s


@pytest.mark.parametrize("pod_spec, millis", [
    (spec(["100m", "200m"]), 300),
    (spec(["100m", "200m"], [("500m", False)]), 500),
    (spec(["100m", "200m"], [("250m", False), ("50m", False)]), 300),
    (spec(["100m"], [("100m", True)]), 200),
    (spec(["100m"], [("100m", True), ("500m", False)]), 600),
    (spec(["300m"], [("500m", False), ("100m", True)]), 500),
    (spec(["100m"], overhead="250m"), 350),
], ids=["sum", "init-larger", "init-smaller", "sidecar-adds", "init-after-sidecar",
        "init-before-sidecar", "overhead"])
def test_pod_requests_like_kubernetes(pod_spec: core_pb2.PodSpec, millis: int) -> None:
    assert pod_requests(pod_spec)["cpu"] == millis


def test_limits_stand_in_for_missing_requests() -> None:
    s = core_pb2.PodSpec()
    c = s.containers.add(name="c")
    c.resources.limits.update({"cpu": "1", "memory": "1Gi"})
    assert pod_requests(s) == {"cpu": 1000, "memory": 1 << 30}


def test_non_zero_requests_for_scoring() -> None:
    s = core_pb2.PodSpec()
    s.containers.add(name="c").resources.requests["memory"] = "1Mi"
    assert pod_requests(s, non_zero=True) == {"cpu": 100, "memory": 1 << 20}
    assert pod_requests(core_pb2.PodSpec(containers=[core_pb2.Container(name="x")]),
                        non_zero=True) == {"cpu": 100, "memory": 200 << 20}
