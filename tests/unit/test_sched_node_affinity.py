"""NodeAffinity: nodeSelector, required terms with every operator, preferred score."""
from __future__ import annotations

from typing import Any

import pytest

from controlplane.scheduler.framework import SKIP, Code, NodeInfo
from controlplane.scheduler.plugins.node_affinity import REASON, NodeAffinity
from tests.schedutil import info, node, pod, snapshot

LABELS = {"zone": "a", "disk": "ssd", "cores": "8"}


def req(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": t} for t in terms]}}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": op, "values": list(values)}


@pytest.mark.parametrize("selector, affinity, fits", [
    ({}, None, True),
    ({"zone": "a"}, None, True),
    ({"zone": "b"}, None, False),
    ({"zone": "a", "missing": "x"}, None, False),
    ({}, req([expr("zone", "In", "a", "b")]), True),
    ({}, req([expr("zone", "In", "b")]), False),
    ({}, req([expr("zone", "NotIn", "b")]), True),
    ({}, req([expr("zone", "NotIn", "a")]), False),
    ({}, req([expr("absent", "NotIn", "a")]), True),
    ({}, req([expr("disk", "Exists")]), True),
    ({}, req([expr("gpu", "Exists")]), False),
    ({}, req([expr("gpu", "DoesNotExist")]), True),
    ({}, req([expr("disk", "DoesNotExist")]), False),
    ({}, req([expr("cores", "Gt", "4")]), True),
    ({}, req([expr("cores", "Gt", "8")]), False),
    ({}, req([expr("cores", "Lt", "16")]), True),
    ({}, req([expr("cores", "Lt", "8")]), False),
    ({}, req([expr("zone", "Gt", "1")]), False),
    ({}, req([expr("absent", "Lt", "9")]), False),
    ({}, req([expr("cores", "Gt", "1", "2")]), False),
    ({}, req([expr("zone", "In", "b")], [expr("disk", "In", "ssd")]), True),
    ({}, req([expr("zone", "In", "a"), expr("disk", "In", "hdd")]), False),
    ({}, req([]), False),
    ({}, {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}, False),
    ({"zone": "b"}, req([expr("zone", "In", "a")]), False),
    ({}, req([expr("zone", "Bogus", "a")]), False),
], ids=["nothing", "selector", "selector-mismatch", "selector-missing-label", "in", "in-miss",
        "notin", "notin-miss", "notin-absent", "exists", "exists-miss", "doesnotexist",
        "doesnotexist-miss", "gt", "gt-equal", "lt", "lt-equal", "gt-not-integer",
        "lt-absent", "gt-two-values", "terms-ored", "requirements-anded", "empty-term",
        "no-terms", "selector-and-affinity", "unknown-operator"])
def test_filter(selector: dict[str, str], affinity: dict[str, Any] | None, fits: bool) -> None:
    status = NodeAffinity().filter({}, info(pod(node_selector=selector, affinity=affinity)),
                                   NodeInfo(node("n1", labels=LABELS)))
    assert status.is_success is fits
    if not fits:
        assert status.reasons == (REASON,) == ("node(s) didn't match Pod's node affinity/selector",)
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


@pytest.mark.parametrize("op, name, fits", [("In", "n1", True), ("In", "n2", False),
                                             ("NotIn", "n1", False), ("NotIn", "n2", True)])
def test_match_fields_metadata_name(op: str, name: str, fits: bool) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [expr("metadata.name", op, name)]}]}}}
    status = NodeAffinity().filter({}, info(pod(affinity=affinity)), NodeInfo(node("n1")))
    assert status.is_success is fits


def test_skips_pods_without_constraints() -> None:
    plugin, snap = NodeAffinity(), snapshot([node()])
    assert plugin.pre_filter({}, info(pod()), snap) is SKIP
    assert plugin.pre_score({}, info(pod()), snap, snap.nodes) is SKIP


def test_score_sums_matching_preferred_weights() -> None:
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [expr("zone", "In", "a")]}},
        {"weight": 30, "preference": {"matchExpressions": [expr("disk", "In", "ssd")]}},
        {"weight": 5, "preference": {}},
    ]}}
    nodes = [NodeInfo(node("a", labels={"zone": "a"})),
             NodeInfo(node("b", labels={"zone": "a", "disk": "ssd"})),
             NodeInfo(node("c"))]
    plugin, p = NodeAffinity(), info(pod(affinity=affinity))
    raw = plugin.score({}, p, nodes)
    assert raw == [10, 40, 0]
    assert plugin.normalize({}, nodes, raw) == [25, 100, 0]
