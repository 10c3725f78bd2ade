"""NodeUnschedulable: cordoned nodes take only pods tolerating the unschedulable taint."""
from __future__ import annotations

from typing import Any

import pytest

from controlplane.scheduler.framework import NodeInfo
from controlplane.scheduler.plugins.node_unschedulable import REASON, NodeUnschedulable
from tests.schedutil import info, node, pod

TOLERATE = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
            "effect": "NoSchedule"}


@pytest.mark.parametrize("cordoned, tolerations, fits", [
    (False, [], True),
    (True, [], False),
    (True, [TOLERATE], True),
    (True, [{"operator": "Exists"}], True),
    (True, [{**TOLERATE, "effect": "NoExecute"}], False),
], ids=["schedulable", "cordoned", "tolerated", "tolerates-everything", "wrong-effect"])
def test_unschedulable(cordoned: bool, tolerations: list[dict[str, Any]], fits: bool) -> None:
    ni = NodeInfo(node(unschedulable=cordoned))
    p = info(pod(tolerations=tolerations))
    status = NodeUnschedulable().filter({}, p, ni)
    assert status.is_success is fits
    assert status.reasons == (() if fits else (REASON,))
    assert REASON == "node(s) were unschedulable"
    assert NodeUnschedulable().filter_batch({}, p, [ni]) == ([] if fits else [(0, status)])
