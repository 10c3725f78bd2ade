"""InterPodAffinity: pods placed relative to other pods, per topology domain.

A topology domain is a (topologyKey, value) pair of node labels: all nodes with
zone=a form one domain for topologyKey "zone". Terms match pods by namespaces (the term's own
namespace when none are given; namespaceSelector against namespaces' labels) and label selector.

Filter, in Kubernetes' order and with its reasons:
1. the pod's required affinity: every term's domain on this node must already hold a pod
   matching all the terms -> "node(s) didn't match pod affinity rules" (unresolvable). The
   first pod of a group that selects itself may go anywhere with the topology labels, when no
   pod in the cluster matches yet.
2. the pod's required anti-affinity: no matching pod in the node's domain of any term ->
   "node(s) didn't match pod anti-affinity rules".
3. existing pods' required anti-affinity against this pod: no such pod in any domain the node
   belongs to -> "node(s) didn't satisfy existing pods anti-affinity rules".
The counts per domain are computed once per cycle in pre_filter (cost: all pods, but only for
pods with affinity terms; otherwise only nodes holding anti-affinity pods are looked at);
with nothing to check the plugin skips.

Score: per domain, the sum of the weights of the pod's preferred terms matched by the pods
there (anti-affinity negative), plus existing pods' preferred terms matching this pod, plus 1
(Kubernetes' hardPodAffinityWeight) per existing pod whose required affinity this pod matches;
a node scores the sum over its domains, min-max normalised to 0..100.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from controlplane.scheduler.framework import (MAX_NODE_SCORE, SKIP, SUCCESS, CycleState,
                                              NodeInfo, PodInfo, Snapshot, Status,
                                              unschedulable)

NAME = "InterPodAffinity"
REASON_AFFINITY = "node(s) didn't match pod affinity rules"
REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
_FAIL_AFFINITY = unschedulable(NAME, REASON_AFFINITY, unresolvable=True)
_FAIL_ANTI = unschedulable(NAME, REASON_ANTI_AFFINITY)
_FAIL_EXISTING = unschedulable(NAME, REASON_EXISTING_ANTI_AFFINITY)
HARD_POD_AFFINITY_WEIGHT = 1

Domain = tuple[str, str]


@dataclass
class _FilterState:
    existing_anti: dict[Domain, int]
    affinity: dict[Domain, int]
    anti: dict[Domain, int]
    self_match: bool


def _bump(counts: dict[Domain, int], node: NodeInfo, key: str, by: int) -> None:
    value = node.labels.get(key)
    if value is not None:
        counts[(key, value)] = counts.get((key, value), 0) + by


def _filter_state(pod: PodInfo, snapshot: Snapshot) -> _FilterState:
    own_ns = snapshot.ns_labels(pod.namespace)
    existing_anti: dict[Domain, int] = {}
    for ni in snapshot.with_required_anti_affinity_pods:
        for other in ni.anti_affinity_pods:
            for term in other.required_anti_affinity:
                if term.matches(pod, own_ns):
                    _bump(existing_anti, ni, term.topology_key, 1)
    affinity: dict[Domain, int] = {}
    anti: dict[Domain, int] = {}
    req, req_anti = pod.required_affinity, pod.required_anti_affinity
    if req or req_anti:
        for ni in snapshot.nodes:
            for other in ni.pods.values():
                ns = snapshot.ns_labels(other.namespace)
                if req and all(t.matches(other, ns) for t in req):
                    for t in req:
                        _bump(affinity, ni, t.topology_key, 1)
                for t in req_anti:
                    if t.matches(other, ns):
                        _bump(anti, ni, t.topology_key, 1)
    self_match = bool(req) and all(t.matches(pod, own_ns) for t in req)
    return _FilterState(existing_anti, affinity, anti, self_match)


def _satisfies_affinity(pod: PodInfo, s: _FilterState, node: NodeInfo) -> bool:
    pods_exist = True
    for term in pod.required_affinity:
        value = node.labels.get(term.topology_key)
        if value is None:
            return False  # every term's topology label must exist on the node
        if s.affinity.get((term.topology_key, value), 0) <= 0:
            pods_exist = False
    return pods_exist or (not s.affinity and s.self_match)


class InterPodAffinity:
    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status:
        if not (pod.required_affinity or pod.required_anti_affinity
                or snapshot.with_required_anti_affinity_pods):
            return SKIP
        s = _filter_state(pod, snapshot)
        if not (s.existing_anti or pod.required_affinity or pod.required_anti_affinity):
            return SKIP
        state[NAME] = s
        return SUCCESS

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        s: _FilterState = state[NAME]
        if pod.required_affinity and not _satisfies_affinity(pod, s, node):
            return _FAIL_AFFINITY
        if s.anti:
            for term in pod.required_anti_affinity:
                value = node.labels.get(term.topology_key)
                if value is not None and s.anti.get((term.topology_key, value), 0) > 0:
                    return _FAIL_ANTI
        if s.existing_anti:
            for domain in node.labels.items():
                if s.existing_anti.get(domain, 0) > 0:
                    return _FAIL_EXISTING
        return SUCCESS

    def pre_score(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                  nodes: Sequence[NodeInfo]) -> Status:
        own = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        scan = snapshot.nodes if own else snapshot.with_affinity_pods
        if not scan:
            return SKIP
        own_ns = snapshot.ns_labels(pod.namespace)
        scores: dict[str, dict[str, int]] = {}  # topology key -> value -> score

        def add(ni: NodeInfo, key: str, by: int) -> None:
            value = ni.labels.get(key)
            if value is not None:
                per_key = scores.setdefault(key, {})
                per_key[value] = per_key.get(value, 0) + by

        for ni in scan:
            for other in (ni.pods.values() if own else ni.affinity_pods):
                ns = snapshot.ns_labels(other.namespace)
                for w, t in pod.preferred_affinity:
                    if t.matches(other, ns):
                        add(ni, t.topology_key, w)
                for w, t in pod.preferred_anti_affinity:
                    if t.matches(other, ns):
                        add(ni, t.topology_key, -w)
                for t in other.required_affinity:
                    if t.matches(pod, own_ns):
                        add(ni, t.topology_key, HARD_POD_AFFINITY_WEIGHT)
                for w, t in other.preferred_affinity:
                    if t.matches(pod, own_ns):
                        add(ni, t.topology_key, w)
                for w, t in other.preferred_anti_affinity:
                    if t.matches(pod, own_ns):
                        add(ni, t.topology_key, -w)
        if not scores:
            return SKIP
        state[NAME + "/score"] = scores
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        scores: dict[str, dict[str, int]] = state[NAME + "/score"]
        out = []
        for ni in nodes:
            total = 0
            for key, per_value in scores.items():
                value = ni.labels.get(key)
                if value is not None:
                    total += per_value.get(value, 0)
            out.append(total)
        return out

    def normalize(self, state: CycleState, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> list[int]:
        if not scores:
            return scores
        low, high = min(scores), max(scores)
        if high == low:
            return [0] * len(scores)
        return [int(MAX_NODE_SCORE * ((s - low) / (high - low))) for s in scores]
