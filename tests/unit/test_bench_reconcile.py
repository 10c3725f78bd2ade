"""`skiff bench reconcile`'s pure parts: the Running-pods count the pod watch keeps, the figures,
the printed line and table, the scenario names, and the PNG plots drawn from a raw record."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from controlplane.client.timeutil import parse_time
from deploy.bench import reconcile
from deploy.bench.reconcile import PodTracker
from deploy.bench.reconcile_report import (CDF_PNG, TIMELINE_PNG, cdf_points, figures, format_result, series,
                                           summary_table, write_plots)
from deploy.cli.errors import CommandError
from protos.skiff.api.v1 import core_pb2


def pod(name: str, running: bool = False, deleting: bool = False) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.creation_timestamp = "2024-01-01T00:00:00Z"
    p.spec.containers.add(name="app")
    if running:
        p.status.phase = "Running"
        p.status.container_statuses.add(name="app").state.running.SetInParent()
    if deleting:
        p.metadata.deletion_timestamp = "2024-01-01T00:00:05Z"
    return p


def tracker() -> PodTracker:
    async def make() -> PodTracker:
        return PodTracker(client=None)  # needs a loop only for its asyncio.Event
    return asyncio.run(make())


def test_tracker_counts_running_pods_on_every_change() -> None:
    t = tracker()
    events = [("ADDED", pod("a")), ("ADDED", pod("b")), ("MODIFIED", pod("a", running=True)),
              ("MODIFIED", pod("a", running=True)),  # no change of the count: no entry
              ("MODIFIED", pod("b", running=True)), ("MODIFIED", pod("a", running=True, deleting=True)),
              ("DELETED", pod("a", running=True, deleting=True)), ("DELETED", pod("b", running=True)),
              ("ADDED", pod("b")), ("MODIFIED", pod("b", running=True))]  # the name reused: a new pod
    for kind, obj in events:
        t._event(kind, obj, parse_time)
    assert [n for _, n in t.running] == [1, 2, 1, 0, 1]
    assert t.serving_count == len(t.serving()) == 1
    times = [at for at, _ in t.running]
    assert times == sorted(times) and times[0] >= t.origin


def test_figures_nearest_rank_in_ms() -> None:
    f = figures([i / 100 for i in range(1, 101)])  # 10 ms .. 1000 ms
    assert f == {"n": 100, "p50_ms": 500.0, "p90_ms": 900.0, "p99_ms": 990.0, "max_ms": 1000.0}
    assert figures([])["n"] == 0


def test_cdf_points_step_to_one() -> None:
    assert cdf_points([0.3, 0.1, 0.2, 0.4]) == ([0.1, 0.2, 0.3, 0.4], [0.25, 0.5, 0.75, 1.0])


def test_cm_failover_line_and_table() -> None:
    r = {"killed": "bench-cm-a", "new_leader": "bench-cm-b", "replicas_before": 100, "replicas_after": 110,
         "lease_handover_s": 4.512, "total_s": 6.25, "new_pod_running_since_kill": figures([5.0, 5.5, 6.0])}
    line = format_result("cm-failover", r)
    assert "(bench-cm-a), scaled 100->110: Lease held by bench-cm-b after 4.51 s" in line
    assert "all new pods Running in 6.25 s" in line and "p50 5500" in line
    assert "after never seen" in format_result("cm-failover", {**r, "lease_handover_s": None, "new_leader": ""})
    table = summary_table([series("startup", "startup", [0.1, 0.2], 0.25),
                           series("delete-pod", "delete pod -> replacement Running", [1.0])])
    lines = table.splitlines()
    assert lines[0].split() == ["series", "n", "p50", "ms", "p90", "ms", "p99", "ms", "max", "ms", "total", "s"]
    assert lines[2].split() == ["startup", "2", "100", "200", "200", "200", "0.25"]
    assert lines[3].endswith(" -") and len({len(x) for x in lines}) == 1


def args_for(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    reconcile.add_arguments(p)
    return p.parse_args(list(argv))


def test_skip_names_include_cm_failover() -> None:
    assert "cm-failover" in reconcile.check_args(args_for("--skip", "cm-failover"))
    assert "cm-failover" in reconcile.check_args(args_for("--server", "127.0.0.1:1"))  # not ours to kill
    assert "cm-failover" not in reconcile.check_args(args_for())
    with pytest.raises(CommandError, match="unknown cm-failure"):
        reconcile.check_args(args_for("--skip", "cm-failure"))
    with pytest.raises(CommandError, match="--cm-lease-duration"):
        reconcile.check_args(args_for("--cm-lease-duration", "0.5"))


def test_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    raw = {"series": [series("startup", "startup", [0.05, 0.2, 0.3], 0.4), series("delete-pod", "delete", [0.0]),
                      series("node-lost", "empty", [])],
           "running": [[0.1, 1], [0.2, 2], [0.3, 3], [5.0, 2]],
           "phases": [{"name": "startup", "start_s": 0.0, "end_s": 0.4}, {"name": "delete-pod", "start_s": 0.4,
                                                                        "end_s": 5.5}]}
    paths = write_plots(raw, tmp_path / "plots", "test")
    assert paths == [tmp_path / "plots" / CDF_PNG, tmp_path / "plots" / TIMELINE_PNG]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(write_plots({"series": [], "running": [], "phases": []}, tmp_path), list)  # empty run draws
