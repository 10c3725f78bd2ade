"""NodeName: a pod naming its node fits only that node."""
from __future__ import annotations

import pytest

from controlplane.scheduler.framework import SKIP, NodeInfo
from controlplane.scheduler.plugins.node_name import REASON, NodeName
from tests.schedutil import info, node, pod, snapshot


@pytest.mark.parametrize("wanted, fits", [("n1", True), ("n2", False), ("", True)])
def test_node_name(wanted: str, fits: bool) -> None:
    status = NodeName().filter({}, info(pod(node_name=wanted)), NodeInfo(node("n1")))
    assert status.is_success is fits
    assert status.reasons == (() if fits else ("node(s) didn't match the requested node name",))
    assert REASON == "node(s) didn't match the requested node name"


def test_skipped_without_node_name() -> None:
    assert NodeName().pre_filter({}, info(pod()), snapshot([node()])) is SKIP
    assert NodeName().pre_filter({}, info(pod(node_name="n1")), snapshot([node()])) is not SKIP
