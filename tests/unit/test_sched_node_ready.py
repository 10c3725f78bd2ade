"""NodeReady: only nodes whose Ready condition is True."""
from __future__ import annotations

import pytest

from controlplane.scheduler.framework import Code, NodeInfo
from controlplane.scheduler.plugins.node_ready import REASON, NodeReady
from tests.schedutil import info, node, pod


@pytest.mark.parametrize("ready, fits", [(True, True), (False, False), (None, False)],
                         ids=["ready", "not-ready", "no-conditions"])
def test_ready(ready: bool | None, fits: bool) -> None:
    ni = NodeInfo(node(ready=ready))
    status = NodeReady().filter({}, info(pod()), ni)
    assert status.is_success is fits
    if not fits:
        assert status.reasons == (REASON,) == ("node(s) were not ready",)
        assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert NodeReady().filter_batch({}, info(pod()), [ni]) == ([] if fits else [(0, status)])


def test_placeholder_without_node_is_not_ready() -> None:
    assert not NodeReady().filter({}, info(pod()), NodeInfo(None, "gone")).is_success
