"""NodeResourcesLeastAllocated: more free cpu and memory after placing the pod, higher score."""
from __future__ import annotations

import pytest

from controlplane.scheduler.framework import NodeInfo
from controlplane.scheduler.plugins.least_allocated import LeastAllocated, least_requested
from tests.schedutil import info, node, node_info, pod


@pytest.mark.parametrize("requested, capacity, score", [
    (0, 100, 100), (25, 100, 75), (100, 100, 0), (150, 100, 0), (1, 0, 0), (1, 3, 66)])
def test_least_requested(requested: int, capacity: int, score: int) -> None:
    assert least_requested(requested, capacity) == score


def test_scores() -> None:
    empty = NodeInfo(node("empty", cpu="4", memory="8Gi"))
    half = node_info(node("half", cpu="4", memory="8Gi"), pod("o", "2", "4Gi", node_name="half"))
    p = info(pod(cpu="1", memory="2Gi"))
    # empty: cpu (4-1)/4 = 75, memory (8-2)/8 = 75; half: cpu 25, memory 25.
    assert LeastAllocated().score({}, p, [empty, half]) == [75, 25]


def test_pods_without_requests_count_defaults() -> None:
    ni = NodeInfo(node(cpu="1", memory=str(1000 * 1024 * 1024)))
    # 100m of 1000m -> 90; 200Mi of 1000Mi -> 80; average 85.
    assert LeastAllocated().score({}, info(pod()), [ni]) == [85]
