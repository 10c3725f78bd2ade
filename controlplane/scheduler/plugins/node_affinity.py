"""NodeAffinity: nodeSelector and node affinity.

Filter: the node's labels must hold every nodeSelector pair, and, when the pod has required
node affinity, match at least one of its terms (terms are ORed, a term's requirements ANDed;
a term with no requirements matches nothing, so does a required selector with no terms).
Reason (Kubernetes'): "node(s) didn't match Pod's node affinity/selector".
Score: the sum of the weights of the preferred terms the node matches, normalised so the best
node gets 100.

Operators: In, NotIn (also true when the label is absent), Exists, DoesNotExist, Gt and Lt
(the label must exist and both it and the single value parse as integers). matchFields
supports metadata.name with In and NotIn, as Kubernetes does. A requirement that cannot be
evaluated (unknown operator, Gt with two values) matches nothing.

A pod's selector is parsed once into `PodInfo.plugin_cache` and reused on every node and
every attempt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from controlplane.scheduler.framework import (SKIP, SUCCESS, CycleState, NodeInfo, PodInfo,
                                              Snapshot, Status, default_normalize, unschedulable)
from protos.skiff.api.v1 import core_pb2

NAME = "NodeAffinity"
REASON = "node(s) didn't match Pod's node affinity/selector"
_FAIL = unschedulable(NAME, REASON, unresolvable=True)

# A compiled requirement: a predicate over (labels, node name).
Matcher = Callable[[Mapping[str, str], str], bool]


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _label_matcher(r: core_pb2.NodeSelectorRequirement) -> Matcher:
    key, op, values = r.key, r.operator, frozenset(r.values)
    if op == "In":
        return lambda labels, _: key in labels and labels[key] in values
    if op == "NotIn":
        return lambda labels, _: key not in labels or labels[key] not in values
    if op == "Exists":
        return lambda labels, _: key in labels
    if op == "DoesNotExist":
        return lambda labels, _: key not in labels
    if op in ("Gt", "Lt") and len(r.values) == 1 and _int(r.values[0]) is not None:
        bound = int(r.values[0])
        greater = op == "Gt"

        def compare(labels: Mapping[str, str], _: str) -> bool:
            value = _int(labels[key]) if key in labels else None
            return value is not None and (value > bound if greater else value < bound)
        return compare
    return lambda labels, _: False


def _field_matcher(r: core_pb2.NodeSelectorRequirement) -> Matcher:
    values = frozenset(r.values)
    if r.key == "metadata.name" and r.operator == "In" and len(values) == 1:
        return lambda _, name: name in values
    if r.key == "metadata.name" and r.operator == "NotIn" and len(values) == 1:
        return lambda _, name: name not in values
    return lambda _, __: False


@dataclass(frozen=True)
class Term:
    matchers: tuple[Matcher, ...]

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        return bool(self.matchers) and all(m(labels, name) for m in self.matchers)


def compile_term(term: core_pb2.NodeSelectorTerm) -> Term:
    return Term(tuple(_label_matcher(r) for r in term.match_expressions)
                + tuple(_field_matcher(r) for r in term.match_fields))


@dataclass(frozen=True)
class PodNodeAffinity:
    """A pod's node constraints, compiled."""

    selector: tuple[tuple[str, str], ...]
    required: tuple[Term, ...] | None  # None: no required node affinity at all
    preferred: tuple[tuple[int, Term], ...]

    def fits(self, node: NodeInfo) -> bool:
        labels = node.labels
        for k, v in self.selector:
            if labels.get(k) != v:
                return False
        if self.required is None:
            return True
        return any(t.matches(labels, node.name) for t in self.required)


def pod_node_affinity(pod: PodInfo) -> PodNodeAffinity:
    cached = pod.plugin_cache.get(NAME)
    if cached is None:
        spec = pod.pod.spec
        na = spec.affinity.node_affinity
        required = None
        if na.HasField("required_during_scheduling_ignored_during_execution"):
            terms = na.required_during_scheduling_ignored_during_execution.node_selector_terms
            required = tuple(compile_term(t) for t in terms)
        preferred = tuple((p.weight, compile_term(p.preference))
                          for p in na.preferred_during_scheduling_ignored_during_execution
                          if p.weight)
        cached = PodNodeAffinity(tuple(spec.node_selector.items()), required, preferred)
        pod.plugin_cache[NAME] = cached
    return cached


class NodeAffinity:
    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status:
        aff = pod_node_affinity(pod)
        return SUCCESS if aff.selector or aff.required is not None else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        return SUCCESS if pod_node_affinity(pod).fits(node) else _FAIL

    def pre_score(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                  nodes: Sequence[NodeInfo]) -> Status:
        return SUCCESS if pod_node_affinity(pod).preferred else SKIP

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        preferred = pod_node_affinity(pod).preferred
        return [sum(w for w, t in preferred if t.matches(ni.labels, ni.name)) for ni in nodes]

    def normalize(self, state: CycleState, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> list[int]:
        return default_normalize(scores)
