"""NodeResourcesBalancedAllocation (score): prefer nodes whose cpu and memory would be used in
equal proportion after placing the pod.

Kubernetes' formula (1.23+): fractions requested/allocatable (this pod included, real requests,
capped at 1) for cpu and memory; score = (1 - standard deviation) x 100, which for two
resources is (1 - |cpu - memory| / 2) x 100. Skipped for pods that request neither (as
Kubernetes does for best-effort pods): they would not change any node's balance.
"""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import (MAX_NODE_SCORE, SKIP, SUCCESS, CycleState,
                                              NodeInfo, PodInfo, Snapshot, Status)

NAME = "NodeResourcesBalancedAllocation"


def balanced_score(fractions: Sequence[float]) -> int:
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = (sum((f - mean) ** 2 for f in fractions) / len(fractions)) ** 0.5
    else:
        std = 0.0
    return int((1 - std) * MAX_NODE_SCORE)


class BalancedAllocation:
    name = NAME

    def pre_score(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                  nodes: Sequence[NodeInfo]) -> Status:
        return SUCCESS if pod.req_cpu or pod.req_mem else SKIP

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        cpu, mem = pod.req_cpu, pod.req_mem
        out: list[int] = []
        append = out.append
        for ni in nodes:
            ac, am = ni.alloc_cpu, ni.alloc_mem
            if ac and am:  # the usual node, inline, same arithmetic as balanced_score
                fc = (ni.req_cpu + cpu) / ac
                fm = (ni.req_mem + mem) / am
                std = abs(((fc if fc < 1.0 else 1.0) - (fm if fm < 1.0 else 1.0)) / 2)
                append(int((1 - std) * MAX_NODE_SCORE))
                continue
            fractions = []
            if ac:
                fractions.append(min((ni.req_cpu + cpu) / ac, 1.0))
            if am:
                fractions.append(min((ni.req_mem + mem) / am, 1.0))
            append(balanced_score(fractions))
        return out
