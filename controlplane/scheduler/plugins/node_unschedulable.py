"""NodeUnschedulable (filter): a cordoned node (spec.unschedulable) takes only pods that
tolerate the node.kubernetes.io/unschedulable:NoSchedule taint. Reason (Kubernetes'):
"node(s) were unschedulable"."""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import (SUCCESS, CycleState, NodeInfo, PodInfo, Status,
                                              unschedulable)
from controlplane.scheduler.plugins.taint_toleration import tolerates
from protos.skiff.api.v1 import core_pb2

NAME = "NodeUnschedulable"
REASON = "node(s) were unschedulable"
UNSCHEDULABLE_TAINT = core_pb2.Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule")
_FAIL = unschedulable(NAME, REASON, unresolvable=True)


class NodeUnschedulable:
    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        if not node.unschedulable or tolerates(pod.tolerations, UNSCHEDULABLE_TAINT):
            return SUCCESS
        return _FAIL

    def filter_batch(self, state: CycleState, pod: PodInfo,
                     nodes: Sequence[NodeInfo]) -> list[tuple[int, Status]]:
        if not any(ni.unschedulable for ni in nodes):
            return []
        if tolerates(pod.tolerations, UNSCHEDULABLE_TAINT):
            return []
        return [(i, _FAIL) for i, ni in enumerate(nodes) if ni.unschedulable]
