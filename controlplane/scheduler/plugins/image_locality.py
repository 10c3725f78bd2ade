"""ImageLocality (score): prefer nodes that already hold the pod's images.

Kubernetes' formula: each of the pod's images present on the node adds its size scaled by the
fraction of nodes that have it (an image everywhere is no reason to prefer one node; this also
keeps one node from attracting every pod of a popular image). The sum is clamped to
[23 MiB, 1000 MiB x number of containers] and mapped linearly to 0..100. Image names are
normalised ("busybox" = "busybox:latest"). Skipped when no node has any of the pod's images.
"""
from __future__ import annotations

from typing import Sequence

from controlplane.scheduler.framework import (MAX_NODE_SCORE, SKIP, SUCCESS, CycleState,
                                              NodeInfo, PodInfo, Snapshot, Status)

NAME = "ImageLocality"
MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


def scaled_priority(total: int, containers: int) -> int:
    high = MAX_CONTAINER_THRESHOLD * max(containers, 1)
    total = min(max(total, MIN_THRESHOLD), high)
    return MAX_NODE_SCORE * (total - MIN_THRESHOLD) // (high - MIN_THRESHOLD)


class ImageLocality:
    name = NAME

    def pre_score(self, state: CycleState, pod: PodInfo, snapshot: Snapshot,
                  nodes: Sequence[NodeInfo]) -> Status:
        spread = snapshot.image_nodes
        if not any(image in spread for image in pod.images):
            return SKIP
        total = max(len(snapshot.nodes), 1)
        state[NAME] = {image: spread[image] / total for image in pod.images if image in spread}
        return SUCCESS

    def score(self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        spread: dict[str, float] = state[NAME]
        containers = len(pod.images)
        out = []
        for ni in nodes:
            have = ni.images
            total = sum(int(have[image] * fraction)
                        for image, fraction in spread.items() if image in have)
            out.append(scaled_priority(total, containers))
        return out
