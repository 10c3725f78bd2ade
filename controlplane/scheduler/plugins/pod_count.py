"""PodCount (score, skiff's own): prefer nodes running fewer pods.

100 x (allowed pods - pods after placing this one) / allowed pods: LeastAllocated applied to
the node's pod capacity, so best-effort pods (which request no cpu or memory) spread too.
Already in 0..100.
"""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import MAX_NODE_SCORE, CycleState, NodeInfo, PodInfo

NAME = "PodCount"


class PodCount:
    name = NAME

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        out = []
        for ni in nodes:
            allowed, after = ni.alloc_pods, len(ni.pods) + 1
            out.append((allowed - after) * MAX_NODE_SCORE // allowed
                       if allowed and after <= allowed else 0)
        return out
