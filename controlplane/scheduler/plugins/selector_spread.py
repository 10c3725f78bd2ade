"""SelectorSpread (score): spread one owner's replicas across nodes and zones.

skiff's reading of Kubernetes' SelectorSpread (default until 1.27): pods "of the same set" are
the pods with the same controller ownerReference (uid) as this one. A node scores
100 x (max - count) / max, where count is such pods on it and max the highest count among the
candidate nodes (100 everywhere when none has any). When nodes carry
topology.kubernetes.io/zone (NodeInfo.zone), the zone's count weighs 2/3 and the node's 1/3, as in Kubernetes.
Skipped for pods without a controller.
"""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import (MAX_NODE_SCORE, SKIP, SUCCESS, CycleState,
                                              NodeInfo, PodInfo, Snapshot, Status)

NAME = "SelectorSpread"
ZONE_WEIGHTING = 2.0 / 3.0


class SelectorSpread:
    name = NAME

    def pre_score(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                  nodes: Sequence[NodeInfo]) -> Status:
        return SUCCESS if pod.owner_uid else SKIP

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        owner = pod.owner_uid
        return [ni.owner_counts.get(owner, 0) for ni in nodes]

    def normalize(self, state: CycleState, nodes: Sequence[NodeInfo],
                  scores: list[int]) -> list[int]:
        top = max(scores, default=0)
        if top == 0:
            return [MAX_NODE_SCORE] * len(scores)  # no replica anywhere: every node is best
        zones = [ni.zone for ni in nodes]
        by_zone: dict[str, int] = {}
        for zone, count in zip(zones, scores):
            if zone:
                by_zone[zone] = by_zone.get(zone, 0) + count
        # Float arithmetic in Kubernetes' order, so the integers come out the same.
        node_part = [MAX_NODE_SCORE * ((top - count) / top) for count in scores]
        if not by_zone:
            return [int(f) for f in node_part]
        top_zone = max(by_zone.values())
        zone_part = {z: (MAX_NODE_SCORE * ((top_zone - c) / top_zone) if top_zone > 0
                         else float(MAX_NODE_SCORE)) for z, c in by_zone.items()}
        keep = 1.0 - ZONE_WEIGHTING
        return [int(f * keep + ZONE_WEIGHTING * zone_part[z]) if z else int(f)
                for f, z in zip(node_part, zones)]
