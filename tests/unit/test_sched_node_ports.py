"""NodePorts: a requested host port must be free; 0.0.0.0 conflicts with every address."""
from __future__ import annotations

import pytest

from controlplane.scheduler.framework import SKIP, Code
from controlplane.scheduler.plugins.node_ports import REASON, NodePorts
from tests.schedutil import info, node, node_info, pod, snapshot

Port = tuple[int, str, str]


@pytest.mark.parametrize("used, wanted, fits", [
    ([], [(80, "TCP", "")], True),
    ([(80, "TCP", "")], [(80, "TCP", "")], False),
    ([(80, "TCP", "")], [(80, "UDP", "")], True),
    ([(80, "TCP", "")], [(81, "TCP", "")], True),
    ([(80, "TCP", "10.0.0.1")], [(80, "TCP", "10.0.0.2")], True),
    ([(80, "TCP", "10.0.0.1")], [(80, "TCP", "10.0.0.1")], False),
    ([(80, "TCP", "10.0.0.1")], [(80, "TCP", "0.0.0.0")], False),
    ([(80, "TCP", "0.0.0.0")], [(80, "TCP", "10.0.0.2")], False),
    ([(53, "UDP", "")], [(80, "TCP", ""), (53, "UDP", "")], False),
], ids=["free", "taken", "other-protocol", "other-port", "other-ip", "same-ip",
        "wildcard-vs-ip", "ip-vs-wildcard", "second-port-taken"])
def test_ports(used: list[Port], wanted: list[Port], fits: bool) -> None:
    ni = node_info(node(), pod("old", node_name="n1", host_ports=used))
    status = NodePorts().filter({}, info(pod(host_ports=wanted)), ni)
    assert status.is_success is fits
    if not fits:
        assert status.reasons == (REASON,)
        assert REASON == "node(s) didn't have free ports for the requested pod ports"
        assert status.code is Code.UNSCHEDULABLE


def test_port_freed_when_pod_removed() -> None:
    ni = node_info(node(), pod("old", node_name="n1", host_ports=[(80, "TCP", "")]))
    ni.remove_pod("default/old")
    assert NodePorts().filter({}, info(pod(host_ports=[(80, "TCP", "")])), ni).is_success


def test_skipped_without_host_ports() -> None:
    assert NodePorts().pre_filter({}, info(pod()), snapshot([node()])) is SKIP
