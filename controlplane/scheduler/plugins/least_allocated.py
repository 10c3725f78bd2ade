"""NodeResourcesLeastAllocated (score): prefer nodes with more cpu and memory left.

Kubernetes' LeastAllocated strategy of NodeResourcesFit (named here as before 1.23): per
resource (allocatable - requested) x 100 / allocatable, where requested includes this pod and
counts a container without a request as 100m cpu / 200Mi memory; 0 when over-committed;
averaged over cpu and memory with weight 1 each (a resource the node has none of is left out).
Already in 0..100, so no normalisation.
"""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import MAX_NODE_SCORE, CycleState, NodeInfo, PodInfo

NAME = "NodeResourcesLeastAllocated"


def least_requested(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


class LeastAllocated:
    name = NAME

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        cpu, mem = pod.nz_cpu, pod.nz_mem
        out: list[int] = []
        append = out.append
        for ni in nodes:
            ac, am = ni.alloc_cpu, ni.alloc_mem
            if ac and am:  # the usual node, inline: this runs for every feasible node
                rc, rm = ni.nz_cpu + cpu, ni.nz_mem + mem
                sc = (ac - rc) * MAX_NODE_SCORE // ac if rc <= ac else 0
                sm = (am - rm) * MAX_NODE_SCORE // am if rm <= am else 0
                append((sc + sm) // 2)
            elif ac:
                append(least_requested(ni.nz_cpu + cpu, ac))
            elif am:
                append(least_requested(ni.nz_mem + mem, am))
            else:
                append(0)
        return out
