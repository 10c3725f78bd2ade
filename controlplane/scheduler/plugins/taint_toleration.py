"""TaintToleration: taints repel pods that do not tolerate them.

Filter: the first NoSchedule or NoExecute taint the pod does not tolerate rejects the node,
with Kubernetes' reason "node(s) had untolerated taint {key: value}".
Score: the number of PreferNoSchedule taints the pod does not tolerate (only tolerations with
effect PreferNoSchedule or empty count), normalised in reverse: fewest such taints -> 100.

Toleration matching is Kubernetes': an empty effect matches every effect, an empty key (with
Exists) every key; operator Exists ignores the value, Equal (or empty) compares it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from controlplane.scheduler.framework import (SUCCESS, CycleState, NodeInfo, PodInfo, Status,
                                              default_normalize, unschedulable)
from protos.skiff.api.v1 import core_pb2

NAME = "TaintToleration"


def reason(taint: core_pb2.Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


def toleration_matches(t: core_pb2.Toleration, taint: core_pb2.Taint) -> bool:
    if t.effect and t.effect != taint.effect:
        return False
    if t.key and t.key != taint.key:
        return False
    if t.operator == "Exists":
        return True
    return t.operator in ("", "Equal") and t.value == taint.value


def tolerates(tolerations: Iterable[core_pb2.Toleration], taint: core_pb2.Taint) -> bool:
    return any(toleration_matches(t, taint) for t in tolerations)


def first_untolerated(taints: Iterable[core_pb2.Taint],
                      tolerations: Sequence[core_pb2.Toleration]) -> core_pb2.Taint | None:
    return next((taint for taint in taints if not tolerates(tolerations, taint)), None)


class TaintToleration:
    name = NAME

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        if not node.hard_taints:
            return SUCCESS
        taint = first_untolerated(node.hard_taints, pod.tolerations)
        if taint is None:
            return SUCCESS
        return unschedulable(NAME, reason(taint), unresolvable=True)

    def filter_batch(self, state: CycleState, pod: PodInfo,
                     nodes: Sequence[NodeInfo]) -> list[tuple[int, Status]]:
        flagged = [(i, self.filter(state, pod, ni)) for i, ni in enumerate(nodes) if ni.hard_taints]
        return [(i, st) for i, st in flagged if st is not SUCCESS]

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        soft = [t for t in pod.tolerations if t.effect in ("", "PreferNoSchedule")]
        return [sum(1 for taint in ni.prefer_taints if not tolerates(soft, taint))
                if ni.prefer_taints else 0 for ni in nodes]

    def normalize(self, state: CycleState, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> list[int]:
        return default_normalize(scores, reverse=True)
