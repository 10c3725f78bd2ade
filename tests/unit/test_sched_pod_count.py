"""PodCount: fewer running pods (relative to the node's pod capacity) score higher."""
from __future__ import annotations

from controlplane.scheduler.framework import NodeInfo
from controlplane.scheduler.plugins.pod_count import PodCount
from tests.schedutil import info, node, node_info, pod


def test_scores() -> None:
    empty = NodeInfo(node("e", pods="10"))
    busy = node_info(node("b", pods="10"), *[pod(f"p{i}", node_name="b") for i in range(4)])
    full = node_info(node("f", pods="1"), pod("x", node_name="f"))
    none = NodeInfo(node("z", pods="0"))
    assert PodCount().score({}, info(pod()), [empty, busy, full, none]) == [90, 50, 0, 0]
