"""TaintToleration: NoSchedule/NoExecute filter, PreferNoSchedule score (reversed)."""
from __future__ import annotations

from typing import Any

import pytest

from controlplane.scheduler.framework import Code, NodeInfo
from controlplane.scheduler.plugins.taint_toleration import TaintToleration
from tests.schedutil import info, node, pod

GPU = ("dedicated", "gpu", "NoSchedule")


@pytest.mark.parametrize("taints, tolerations, reason", [
    ([], [], None),
    ([GPU], [], "node(s) had untolerated taint {dedicated: gpu}"),
    ([GPU], [{"key": "dedicated", "operator": "Equal", "value": "gpu"}], None),
    ([GPU], [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}], None),
    ([GPU], [{"key": "dedicated", "value": "cpu"}], "node(s) had untolerated taint {dedicated: gpu}"),
    ([GPU], [{"key": "dedicated", "operator": "Exists"}], None),
    ([GPU], [{"operator": "Exists"}], None),
    ([GPU], [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}],
     "node(s) had untolerated taint {dedicated: gpu}"),
    ([("maint", "", "NoExecute")], [], "node(s) had untolerated taint {maint: }"),
    ([("soft", "x", "PreferNoSchedule")], [], None),
    ([GPU, ("b", "2", "NoSchedule")], [{"key": "dedicated", "operator": "Exists"}],
     "node(s) had untolerated taint {b: 2}"),
], ids=["none", "untolerated", "equal", "equal-effect", "other-value", "exists",
        "exists-any-key", "wrong-effect", "no-execute", "prefer-does-not-filter",
        "second-taint"])
def test_filter(taints: list[tuple[str, str, str]], tolerations: list[dict[str, Any]],
                reason: str | None) -> None:
    ni = NodeInfo(node(taints=taints))
    p = info(pod(tolerations=tolerations))
    status = TaintToleration().filter({}, p, ni)
    if reason is None:
        assert status.is_success
        assert TaintToleration().filter_batch({}, p, [ni]) == []
    else:
        assert status.reasons == (reason,)
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        assert TaintToleration().filter_batch({}, p, [ni]) == [(0, status)]


def test_score_prefers_fewest_untolerated_soft_taints() -> None:
    soft = [("a", "1", "PreferNoSchedule"), ("b", "2", "PreferNoSchedule")]
    nodes = [NodeInfo(node("n0")), NodeInfo(node("n1", taints=soft[:1])),
             NodeInfo(node("n2", taints=soft))]
    plugin = TaintToleration()
    p = info(pod())
    assert plugin.score({}, p, nodes) == [0, 1, 2]
    assert plugin.normalize({}, nodes, [0, 1, 2]) == [100, 50, 0]
    tolerant = info(pod(tolerations=[{"key": "a", "operator": "Exists",
                                      "effect": "PreferNoSchedule"}]))
    assert plugin.score({}, tolerant, nodes) == [0, 0, 1]
    # A NoSchedule toleration does not count against PreferNoSchedule taints.
    hard_only = info(pod(tolerations=[{"key": "a", "operator": "Exists", "effect": "NoSchedule"}]))
    assert plugin.score({}, hard_only, nodes) == [0, 1, 2]


def test_no_soft_taints_anywhere_scores_all_100() -> None:
    nodes = [NodeInfo(node("a")), NodeInfo(node("b"))]
    assert TaintToleration().normalize({}, nodes, [0, 0]) == [100, 100]
