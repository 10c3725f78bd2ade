"""ImageLocality: images already on the node, scaled by how widespread they are."""
from __future__ import annotations

from controlplane.scheduler.framework import SKIP, CycleState
from controlplane.scheduler.plugins.image_locality import (MAX_CONTAINER_THRESHOLD, MB,
                                                           MIN_THRESHOLD, ImageLocality,
                                                           scaled_priority)
from tests.schedutil import info, node, pod, snapshot


def test_scaled_priority_bounds() -> None:
    assert scaled_priority(0, 1) == 0
    assert scaled_priority(MIN_THRESHOLD, 1) == 0
    assert scaled_priority(MAX_CONTAINER_THRESHOLD, 1) == 100
    assert scaled_priority(10 * MAX_CONTAINER_THRESHOLD, 1) == 100
    assert scaled_priority(MAX_CONTAINER_THRESHOLD, 2) == 100 * 977 // 1977  # (1000-23)/(2000-23)


def test_score_by_size_and_spread() -> None:
    big = 500 * MB
    snap = snapshot([node("has", images={"app:v1": big}), node("none"),
                     node("other", images={"busybox:latest": big})])
    plugin, state = ImageLocality(), CycleState()
    p = info(pod(image="app:v1"))
    assert plugin.pre_score(state, p, snap, snap.nodes) is not SKIP
    # One node in three has it: 500 MiB x 1/3, clamped and scaled.
    expected = 100 * (int(big / 3) - MIN_THRESHOLD) // (MAX_CONTAINER_THRESHOLD - MIN_THRESHOLD)
    assert plugin.score(state, p, snap.nodes) == [expected, 0, 0]


def test_names_are_normalised_and_absent_images_skip() -> None:
    snap = snapshot([node("a", images={"busybox:latest": 900 * MB}), node("b")])
    plugin = ImageLocality()
    state = CycleState()
    assert plugin.pre_score(state, info(pod(image="busybox")), snap, snap.nodes) is not SKIP
    assert plugin.score(state, info(pod(image="busybox")), snap.nodes)[0] > 0
    assert plugin.pre_score({}, info(pod(image="nginx")), snap, snap.nodes) is SKIP
