"""InterPodAffinity: required affinity / anti-affinity per topology domain, existing pods'
anti-affinity against the incoming pod, and the preferred score."""
from __future__ import annotations

from typing import Any

import pytest

from controlplane.scheduler.framework import SKIP, Code, CycleState, Snapshot
from controlplane.scheduler.plugins.inter_pod_affinity import (REASON_AFFINITY,
                                                               REASON_ANTI_AFFINITY,
                                                               REASON_EXISTING_ANTI_AFFINITY,
                                                               InterPodAffinity)
from protos.skiff.api.v1 import core_pb2
from tests.schedutil import info, node, pod, snapshot, term

NODES = [node("a1", labels={"zone": "a", "host": "a1"}),
         node("a2", labels={"zone": "a", "host": "a2"}),
         node("b1", labels={"zone": "b", "host": "b1"}),
         node("x", labels={"host": "x"})]  # no zone label
WEB_ON_A1 = pod("web", labels={"app": "web"}, node_name="a1")


def required(kind: str, *terms: dict[str, Any]) -> dict[str, Any]:
    return {kind: {"requiredDuringSchedulingIgnoredDuringExecution": list(terms)}}


def run(p: core_pb2.Pod, snap: Snapshot) -> dict[str, tuple[str, ...]]:
    """Each node's reasons (empty when it fits)."""
    plugin, state = InterPodAffinity(), CycleState()
    if plugin.pre_filter(state, info(p), snap) is SKIP:
        return {ni.name: () for ni in snap.nodes}
    return {ni.name: plugin.filter(state, info(p), ni).reasons for ni in snap.nodes}


def test_required_affinity_same_zone() -> None:
    p = pod(affinity=required("podAffinity", term({"app": "web"}, "zone")))
    assert run(p, snapshot(NODES, [WEB_ON_A1])) == {
        "a1": (), "a2": (), "b1": (REASON_AFFINITY,), "x": (REASON_AFFINITY,)}
    assert REASON_AFFINITY == "node(s) didn't match pod affinity rules"


def test_required_affinity_unresolvable_code() -> None:
    p = pod(affinity=required("podAffinity", term({"app": "web"}, "zone")))
    snap, plugin, state = snapshot(NODES, [WEB_ON_A1]), InterPodAffinity(), CycleState()
    plugin.pre_filter(state, info(p), snap)
    assert plugin.filter(state, info(p), snap.nodes[2]).code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_first_pod_of_a_self_affine_group_goes_anywhere_with_the_label() -> None:
    p = pod(labels={"app": "db"}, affinity=required("podAffinity", term({"app": "db"}, "zone")))
    reasons = run(p, snapshot(NODES, [WEB_ON_A1]))
    assert reasons == {"a1": (), "a2": (), "b1": (), "x": (REASON_AFFINITY,)}


def test_affinity_only_in_the_terms_namespaces() -> None:
    p = pod(affinity=required("podAffinity", term({"app": "web"}, "zone", ["other"])))
    assert run(p, snapshot(NODES, [WEB_ON_A1]))["a1"] == (REASON_AFFINITY,)
    other = pod("web2", labels={"app": "web"}, node_name="b1", namespace="other")
    assert run(p, snapshot(NODES, [WEB_ON_A1, other]))["b1"] == ()


def test_required_anti_affinity() -> None:
    p = pod(affinity=required("podAntiAffinity", term({"app": "web"}, "zone")))
    assert run(p, snapshot(NODES, [WEB_ON_A1])) == {
        "a1": (REASON_ANTI_AFFINITY,), "a2": (REASON_ANTI_AFFINITY,), "b1": (), "x": ()}
    assert REASON_ANTI_AFFINITY == "node(s) didn't match pod anti-affinity rules"


def test_existing_pods_anti_affinity_against_incoming() -> None:
    loner = pod("loner", labels={"app": "loner"}, node_name="a1",
                affinity=required("podAntiAffinity", term({"app": "web"}, "host")))
    assert run(pod(labels={"app": "web"}), snapshot(NODES, [loner])) == {
        "a1": (REASON_EXISTING_ANTI_AFFINITY,), "a2": (), "b1": (), "x": ()}
    assert run(pod(labels={"app": "api"}), snapshot(NODES, [loner])) == {
        n.metadata.name: () for n in NODES}
    assert REASON_EXISTING_ANTI_AFFINITY == "node(s) didn't satisfy existing pods anti-affinity rules"


def test_skips_without_any_terms() -> None:
    snap = snapshot(NODES, [WEB_ON_A1])
    assert InterPodAffinity().pre_filter({}, info(pod()), snap) is SKIP
    assert InterPodAffinity().pre_score({}, info(pod()), snap, snap.nodes) is SKIP


@pytest.mark.parametrize("kind, expected", [
    ("podAffinity", {"a1": 100, "a2": 100, "b1": 0}),
    ("podAntiAffinity", {"a1": 0, "a2": 0, "b1": 100}),
])
def test_preferred_score(kind: str, expected: dict[str, int]) -> None:
    p = pod(affinity={kind: {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "podAffinityTerm": term({"app": "web"}, "zone")}]}})
    snap = snapshot(NODES[:3], [WEB_ON_A1])
    plugin, state = InterPodAffinity(), CycleState()
    assert plugin.pre_score(state, info(p), snap, snap.nodes) is not SKIP
    raw = plugin.score(state, info(p), snap.nodes)
    assert dict(zip(["a1", "a2", "b1"], plugin.normalize(state, snap.nodes, raw))) == expected


def test_existing_pods_required_affinity_attracts_matching_pods() -> None:
    fan = pod("fan", labels={"app": "fan"}, node_name="b1",
              affinity=required("podAffinity", term({"app": "web"}, "zone")))
    snap = snapshot(NODES[:3], [fan])
    plugin, state = InterPodAffinity(), CycleState()
    p = info(pod(labels={"app": "web"}))
    assert plugin.pre_score(state, p, snap, snap.nodes) is not SKIP
    assert plugin.normalize(state, snap.nodes, plugin.score(state, p, snap.nodes)) == [0, 0, 100]
