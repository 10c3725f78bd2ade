"""NodeResourcesFit (filter): the pod's requests fit in what the node has left.

Left = allocatable - the requests of the pods already on the node (assumed pods included).
Checked as Kubernetes does, reasons in its order: the pod count ("Too many pods"), then cpu,
memory, ephemeral-storage and extended resources ("Insufficient <name>"), each only when the
pod requests some of it. A pod's requests count init containers as Kubernetes does (see
framework.pod_requests). Every failing resource is reported, so one node can add several
reasons to the unschedulable message.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from controlplane.scheduler.framework import (SUCCESS, CycleState, NodeInfo, PodInfo, Status,
                                              unschedulable)

NAME = "NodeResourcesFit"
TOO_MANY_PODS = "Too many pods"


@lru_cache(maxsize=256)
def _status(reasons: tuple[str, ...]) -> Status:
    return unschedulable(NAME, *reasons)


def insufficient(pod: PodInfo, node: NodeInfo) -> list[str]:
    """The reasons the pod does not fit, empty when it does."""
    reasons: list[str] = []
    if len(node.pods) + 1 > node.alloc_pods:
        reasons.append(TOO_MANY_PODS)
    if pod.req_cpu > 0 and pod.req_cpu > node.alloc_cpu - node.req_cpu:
        reasons.append("Insufficient cpu")
    if pod.req_mem > 0 and pod.req_mem > node.alloc_mem - node.req_mem:
        reasons.append("Insufficient memory")
    if pod.req_eph > 0 and pod.req_eph > node.alloc_eph - node.req_eph:
        reasons.append("Insufficient ephemeral-storage")
    for name, amount in pod.req_scalars.items():
        if amount > node.alloc_scalars.get(name, 0) - node.req_scalars.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


class NodeResourcesFit:
    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        # The common case inline: a pod that fits costs a few comparisons, no list.
        if (len(node.pods) < node.alloc_pods
                and pod.req_cpu <= node.alloc_cpu - node.req_cpu
                and pod.req_mem <= node.alloc_mem - node.req_mem
                and (not pod.req_eph or pod.req_eph <= node.alloc_eph - node.req_eph)
                and not pod.req_scalars):
            return SUCCESS
        reasons = insufficient(pod, node)
        return _status(tuple(reasons)) if reasons else SUCCESS

    def filter_batch(self, state: CycleState, pod: PodInfo,
                     nodes: Sequence[NodeInfo]) -> list[tuple[int, Status]]:
        cpu, mem = pod.req_cpu, pod.req_mem
        if pod.req_eph or pod.req_scalars:
            flagged = [(i, self.filter(state, pod, ni)) for i, ni in enumerate(nodes)]
        else:
            # Only nodes failing the quick test are looked at closely (a pod requesting 0 cpu
            # on an over-committed node fails the quick test and passes the close look).
            flagged = [(i, self.filter(state, pod, ni)) for i, ni in enumerate(nodes)
                       if len(ni.pods) >= ni.alloc_pods or cpu > ni.alloc_cpu - ni.req_cpu
                       or mem > ni.alloc_mem - ni.req_mem]
        return [(i, st) for i, st in flagged if st is not SUCCESS]
