"""SelectorSpread: one owner's replicas spread over nodes (1/3) and zones (2/3)."""
from __future__ import annotations

from controlplane.scheduler.framework import SKIP, NodeInfo
from controlplane.scheduler.plugins.selector_spread import SelectorSpread
from tests.schedutil import info, node, node_info, pod, snapshot


def test_fewer_replicas_score_higher() -> None:
    nodes = [node_info(node("n0")),
             node_info(node("n1"), pod("r1", owner="web", node_name="n1")),
             node_info(node("n2"), pod("r2", owner="web", node_name="n2"),
                       pod("r3", owner="web", node_name="n2"),
                       pod("other", owner="api", node_name="n2"))]
    plugin, p = SelectorSpread(), info(pod(owner="web"))
    raw = plugin.score({}, p, nodes)
    assert raw == [0, 1, 2]
    assert plugin.normalize({}, nodes, raw) == [100, 50, 0]


def test_no_replicas_anywhere_all_equal() -> None:
    nodes = [NodeInfo(node("a")), NodeInfo(node("b"))]
    assert SelectorSpread().normalize({}, nodes, [0, 0]) == [100, 100]


def test_zones_weigh_two_thirds() -> None:
    z = "topology.kubernetes.io/zone"
    nodes = [node_info(node("a1", labels={z: "a"}), pod("r1", owner="web", node_name="a1")),
             node_info(node("a2", labels={z: "a"})),
             node_info(node("b1", labels={z: "b"}))]
    plugin = SelectorSpread()
    raw = plugin.score({}, info(pod(owner="web")), nodes)
    # a1: node 0, zone 0 -> 0; a2: node 100, zone a has the replica -> 100/3; b1: 100.
    assert plugin.normalize({}, nodes, raw) == [0, 33, 100]


def test_pods_without_a_controller_skip() -> None:
    snap = snapshot([node()])
    assert SelectorSpread().pre_score({}, info(pod()), snap, snap.nodes) is SKIP
