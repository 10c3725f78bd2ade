"""NodeResourcesBalancedAllocation: cpu and memory used in equal proportion score higher."""
from __future__ import annotations

import pytest

from controlplane.scheduler.framework import SKIP, NodeInfo
from controlplane.scheduler.plugins.balanced_allocation import BalancedAllocation, balanced_score
from tests.schedutil import info, node, node_info, pod, snapshot


@pytest.mark.parametrize("fractions, score", [
    ([0.5, 0.5], 100), ([0.2, 0.6], 80), ([0.0, 1.0], 50), ([0.3], 100), ([], 100)])
def test_balanced_score(fractions: list[float], score: int) -> None:
    assert balanced_score(fractions) == score


def test_scores_with_the_pod_placed() -> None:
    p = info(pod(cpu="1", memory="1Gi"))
    balanced = NodeInfo(node("b", cpu="4", memory="4Gi"))
    skewed = node_info(node("s", cpu="4", memory="4Gi"), pod("o", "2", node_name="s"))
    # balanced: 1/4 and 1/4 -> 100; skewed: 3/4 cpu, 1/4 memory -> 1 - 0.25 = 75.
    assert BalancedAllocation().score({}, p, [balanced, skewed]) == [100, 75]


def test_fractions_capped_at_one() -> None:
    full = node_info(node(cpu="1", memory="4Gi"), pod("o", "3", node_name="n1"))
    assert BalancedAllocation().score({}, info(pod(cpu="1", memory="2Gi")), [full]) == [75]


def test_best_effort_pods_skip() -> None:
    snap = snapshot([node()])
    assert BalancedAllocation().pre_score({}, info(pod()), snap, snap.nodes) is SKIP
    assert BalancedAllocation().pre_score({}, info(pod(cpu="1")), snap, snap.nodes) is not SKIP
