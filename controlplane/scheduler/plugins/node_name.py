"""NodeName (filter): a pod that names its node (spec.nodeName) fits only that node.
Skipped for pods without one. Reason (Kubernetes'): "node(s) didn't match the requested node
name"."""
from __future__ import annotations

from controlplane.scheduler.framework import (SKIP, SUCCESS, CycleState, NodeInfo, PodInfo,
                                              Snapshot, Status, unschedulable)

NAME = "NodeName"
REASON = "node(s) didn't match the requested node name"
_FAIL = unschedulable(NAME, REASON, unresolvable=True)


class NodeName:
    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status:
        return SUCCESS if pod.node_name else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        return SUCCESS if not pod.node_name or pod.node_name == node.name else _FAIL
