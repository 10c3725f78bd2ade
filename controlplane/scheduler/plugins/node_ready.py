"""NodeReady (filter): the node exists and its Ready condition is True.

Kubernetes keeps pods off such nodes through the node.kubernetes.io/not-ready taint the node
lifecycle controller adds; skiff checks the condition itself, so a node whose agent never
reported (no conditions yet) gets no pods either. Reason: Kubernetes' old CheckNodeCondition
wording, "node(s) were not ready".
"""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import (SUCCESS, CycleState, NodeInfo, PodInfo, Status,
                                              unschedulable)

NAME = "NodeReady"
REASON = "node(s) were not ready"
_NOT_READY = unschedulable(NAME, REASON, unresolvable=True)


class NodeReady:
    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        return SUCCESS if node.ready and node.node is not None else _NOT_READY

    def filter_batch(self, state: CycleState, pod: PodInfo,
                     nodes: Sequence[NodeInfo]) -> list[tuple[int, Status]]:
        return [(i, _NOT_READY) for i, ni in enumerate(nodes) if not ni.ready or ni.node is None]
