"""One scheduling decision: filter, score, pick — a pure function of its inputs.

`schedule(pod, snapshot, plugins, weights, rng)`:
1. pre-filter: each filter plugin may SKIP itself for this pod (no node can fail it) or
   precompute per-cycle state (inter-pod affinity counts).
2. filter: nodes are visited from `start_index` round the ring (the driver passes back
   `next_start_index`, so successive pods start where the last one stopped, as Kubernetes
   rotates); a node fails on the first filter that rejects it and that filter's reasons are
   its reasons. The search stops once `num_feasible_nodes_to_find` nodes fit (Kubernetes'
   percentageOfNodesToScore; 0 = adaptive: 50% - 1% per 125 nodes, at least 5%, at least 100
   nodes).
3. score: each score plugin with a non-zero weight (a name missing from `weights` weighs 1)
   scores the feasible nodes, its normaliser
   maps them to 0..100, and the weighted sum is the node's total. One feasible node is taken
   without scoring, as Kubernetes does.
4. pick: the highest total; ties are broken uniformly with `rng` (seeded: reproducible).

`unschedulable_message` renders Kubernetes' FitError text; `recheck` re-runs the four pre-bind
checks against a newer snapshot.

Invariants: nothing here mutates the snapshot or the pod; same inputs, same rng state -> same
result.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from controlplane.scheduler.framework import (SKIP, Code, CycleState, NodeInfo,
                                              PodInfo, SchedulerConfig, Snapshot, Status)
from controlplane.scheduler.plugins.inter_pod_affinity import InterPodAffinity
from controlplane.scheduler.plugins.node_affinity import NodeAffinity
from controlplane.scheduler.plugins.node_ports import NodePorts
from controlplane.scheduler.plugins.node_resources_fit import NodeResourcesFit
from protos.skiff.api.v1 import core_pb2

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
NO_NODES_MESSAGE = "no nodes available to schedule pods"


@dataclass(frozen=True)
class ScheduleResult:
    """`node_name` is None when nothing fits; `reasons` names why each rejected node was
    rejected; `scores` holds the weighted totals of the scored nodes."""

    node_name: str | None
    feasible: int
    evaluated: int
    num_nodes: int
    scores: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, list[str]] = field(default_factory=dict)
    next_start_index: int = 0

    @property
    def message(self) -> str:
        """Kubernetes' "0/5 nodes are available: ..." text ("" when a node was chosen)."""
        if self.node_name is not None:
            return ""
        return unschedulable_message(self.num_nodes, self.reasons)


def num_feasible_nodes_to_find(num_nodes: int, percentage: int = 0) -> int:
    """How many feasible nodes end the search (Kubernetes' numFeasibleNodesToFind)."""
    if num_nodes < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return num_nodes
    if percentage <= 0:
        percentage = max(50 - num_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def unschedulable_message(num_nodes: int, reasons: Mapping[str, Sequence[str]]) -> str:
    """Each reason counted over the nodes, "<count> <reason>" strings sorted as strings and
    joined, as Kubernetes' FitError prints them."""
    if num_nodes == 0:
        return NO_NODES_MESSAGE
    counts = Counter(r for node_reasons in reasons.values() for r in node_reasons)
    parts = sorted(f"{count} {reason}" for reason, count in counts.items())
    head = f"0/{num_nodes} nodes are available"
    return f"{head}: {', '.join(parts)}." if parts else f"{head}."


Check = Callable[[CycleState, PodInfo, Sequence[NodeInfo]], list[tuple[int, Status]]]


def _per_node(fn: Callable[[CycleState, PodInfo, NodeInfo], Status]) -> Check:
    """A plugin's per-node filter as a batch check (for plugins without filter_batch)."""
    def check(state: CycleState, pod: PodInfo,
              nodes: Sequence[NodeInfo]) -> list[tuple[int, Status]]:
        return [(i, st) for i, ni in enumerate(nodes)
                if (st := fn(state, pod, ni)).code is not Code.SUCCESS]
    return check


def _pre_filter(plugins: Sequence[Any], state: CycleState, pod: PodInfo,
                snapshot: Snapshot) -> tuple[list[Check], Status | None]:
    """The checks to run, in plugin order, or a status that rejects every node."""
    checks: list[Check] = []
    for plugin in plugins:
        fn = getattr(plugin, "filter", None)
        if fn is None:
            continue
        pre = getattr(plugin, "pre_filter", None)
        if pre is not None:
            status = pre(state, pod, snapshot)
            if status is SKIP or status.code is Code.SKIP:
                continue
            if status.code is not Code.SUCCESS:
                return [], status
        checks.append(getattr(plugin, "filter_batch", None) or _per_node(fn))
    return checks, None


def _find_feasible(checks: Sequence[Check], state: CycleState, pod: PodInfo,
                   nodes: Sequence[NodeInfo], start: int,
                   need: int) -> tuple[list[NodeInfo], dict[str, Status], int]:
    """The first `need` feasible nodes from `start` round the ring, the failures met on the
    way and how many nodes were looked at. Nodes are taken in chunks of exactly as many as
    are still needed and each check runs over a whole chunk (one call per plugin, not per
    node); a node leaves the chunk at its first failing check. So the outcome is the same as
    checking node by node and stopping at the need-th fit."""
    ring = (*nodes[start:], *nodes[:start])
    feasible: list[NodeInfo] = []
    failed: dict[str, Status] = {}
    pos = 0
    while pos < len(ring) and len(feasible) < need:
        chunk: Sequence[NodeInfo] = ring[pos:pos + need - len(feasible)]
        pos += len(chunk)
        for check in checks:
            failures = check(state, pod, chunk)
            if failures:
                out = {i for i, _ in failures}
                for i, status in failures:
                    failed[chunk[i].name] = status
                chunk = [ni for i, ni in enumerate(chunk) if i not in out]
                if not chunk:
                    break
        feasible.extend(chunk)
    return feasible, failed, pos


def _score(plugins: Sequence[Any], weights: Mapping[str, int], state: CycleState,
           pod: PodInfo, snapshot: Snapshot, nodes: list[NodeInfo]) -> list[int]:
    totals = [0] * len(nodes)
    for plugin in plugins:
        score = getattr(plugin, "score", None)
        weight = weights.get(plugin.name, 1)
        if score is None or weight == 0:
            continue
        pre = getattr(plugin, "pre_score", None)
        if pre is not None and pre(state, pod, snapshot, nodes).code is Code.SKIP:
            continue
        raw = score(state, pod, nodes)
        normalize = getattr(plugin, "normalize", None)
        if normalize is not None:
            raw = normalize(state, nodes, raw)
        totals = [t + s * weight for t, s in zip(totals, raw)]
    return totals


def schedule(pod: PodInfo | core_pb2.Pod, snapshot: Snapshot, plugins: Sequence[Any],
             weights: Mapping[str, int] | SchedulerConfig, rng: random.Random, *,
             start_index: int = 0, percentage_of_nodes_to_score: int | None = None
             ) -> ScheduleResult:
    """Choose a node for `pod` among `snapshot.nodes`; see the module docstring."""
    if isinstance(weights, SchedulerConfig):
        if percentage_of_nodes_to_score is None:
            percentage_of_nodes_to_score = weights.percentage_of_nodes_to_score
        weights = weights.weights
    info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
    nodes = snapshot.nodes
    n = len(nodes)
    if n == 0:
        return ScheduleResult(None, 0, 0, 0)
    start = start_index % n
    state: CycleState = {}
    checks, rejected = _pre_filter(plugins, state, info, snapshot)
    if rejected is not None:
        reasons = {ni.name: list(rejected.reasons) for ni in nodes}
        return ScheduleResult(None, 0, n, n, reasons=reasons, next_start_index=start)
    need = num_feasible_nodes_to_find(n, percentage_of_nodes_to_score or 0)
    feasible, failed, processed = _find_feasible(checks, state, info, nodes, start, need)
    reasons = {name: list(status.reasons) for name, status in failed.items()}
    next_start = (start + processed) % n
    if not feasible:
        return ScheduleResult(None, 0, processed, n, reasons=reasons, next_start_index=next_start)
    if len(feasible) == 1:
        return ScheduleResult(feasible[0].name, 1, processed, n, reasons=reasons,
                              next_start_index=next_start)
    totals = _score(plugins, weights, state, info, snapshot, feasible)
    best = max(totals)
    ties = [i for i, t in enumerate(totals) if t == best]
    chosen = ties[rng.randrange(len(ties))] if len(ties) > 1 else ties[0]
    scores = {ni.name: t for ni, t in zip(feasible, totals)}
    return ScheduleResult(feasible[chosen].name, len(feasible), processed, n, scores, reasons,
                          next_start)


NODE_GONE = "node {name} no longer exists"
_RECHECKS = (NodeAffinity(), InterPodAffinity(), NodePorts(), NodeResourcesFit())


def recheck(pod: PodInfo | core_pb2.Pod, node_name: str, snapshot: Snapshot) -> list[str]:
    """Why `pod` may no longer go to `node_name` (empty: it still may): the node is gone, or
    it fails node affinity, inter-pod affinity, host ports or resources. A pod the cache
    already assumed on that node is taken off it first, so it does not count against itself."""
    info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
    node = snapshot.get(node_name)
    if node is None or node.node is None:
        return [NODE_GONE.format(name=node_name)]
    if info.key in node.pods:
        node = node.clone()
        node.remove_pod(info.key)
        snapshot = snapshot.replacing(node)
    reasons: list[str] = []
    for plugin in _RECHECKS:
        state: CycleState = {}
        pre = getattr(plugin, "pre_filter", None)
        if pre is not None:
            status = pre(state, info, snapshot)
            if status.code is Code.SKIP:
                continue
            if status.code is not Code.SUCCESS:
                reasons.extend(status.reasons)
                continue
        status = plugin.filter(state, info, node)
        if status.code is not Code.SUCCESS:
            reasons.extend(status.reasons)
    return reasons
