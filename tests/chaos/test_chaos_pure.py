"""Pure parts of the chaos runner: seeded schedules, error classification, the timeline."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from deploy.chaos import nemesis
from deploy.chaos.clients import classify, prefix_end
from deploy.chaos.timeline import render_timeline


@pytest.mark.parametrize("kind", ["partition", "kill", "pause", "bridge", "mixed"])
def test_schedules_are_seeded_and_do_not_overlap(kind: str) -> None:
    replicas = ["n1", "n2", "n3", "n4", "n5"]
    a = nemesis.plan(kind, replicas, 60, seed=7)
    assert a == nemesis.plan(kind, replicas, 60, seed=7)
    assert a, "a 60 s run gets faults"
    for f, g in zip(a, a[1:]):
        assert f.end < g.start
    assert all(0 < f.start < f.end <= 60 for f in a)
    for f in a:
        if f.kind in ("kill", "pause"):
            assert 1 <= len(f.hosts) <= 2  # a minority of five
        if f.kind == "partition":
            assert sorted(f.groups[0] + f.groups[1]) == replicas and len(f.groups[0]) == 2


def test_short_runs_still_get_a_fault() -> None:
    assert nemesis.plan("partition", ["n1", "n2", "n3"], 10, seed=1)


class _Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_classification() -> None:
    assert classify(_Err(grpc.StatusCode.DEADLINE_EXCEEDED), "read") == "fail"
    assert classify(_Err(grpc.StatusCode.DEADLINE_EXCEEDED), "write") == "info"
    assert classify(_Err(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"), "cas") == "info"
    assert classify(_Err(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"), "write") == "fail"
    assert classify(_Err(grpc.StatusCode.INVALID_ARGUMENT), "add") == "fail"


def test_prefix_end() -> None:
    assert prefix_end(b"/chaos/x/") == b"/chaos/x0"
    assert prefix_end(b"a\xff") == b"b"


def test_timeline_renders(tmp_path: Path) -> None:
    t0 = 1_000_000_000
    events = [
        {"process": 0, "type": "invoke", "f": "write", "key": "k", "value": 1, "time": t0, "index": 0, "node": "n1", "client": "c0"},
        {"process": 0, "type": "ok", "f": "write", "key": "k", "value": 1, "time": t0 + 5_000_000, "index": 1, "node": "n1", "client": "c0"},
        {"process": 1, "type": "invoke", "f": "cas", "key": "k", "value": [1, 2], "time": t0 + 10**9, "index": 2, "node": "n2", "client": "c1"},
        {"process": 1, "type": "info", "f": "cas", "key": "k", "value": [1, 2], "time": t0 + 2 * 10**9, "index": 3, "node": "n2", "client": "c1"},
    ]
    periods = [nemesis.Period("partition", ["n2"], [["n2"], ["n1", "n3"]], t0 + 5 * 10**8, t0 + 3 * 10**9, detail="n2 | n1,n3")]
    render_timeline(tmp_path / "t.png", events, periods, t0, title="test")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
