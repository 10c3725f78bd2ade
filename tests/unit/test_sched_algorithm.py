"""schedule(), recheck() and the unschedulable message."""
from __future__ import annotations

import random

import pytest

from controlplane.scheduler.algorithm import (ScheduleResult, num_feasible_nodes_to_find,
                                              recheck, schedule, unschedulable_message)
from controlplane.scheduler.cache import SchedulerCache
from controlplane.scheduler.framework import SchedulerConfig, Snapshot
from controlplane.scheduler.plugins import default_plugins
from kvstore.clock import FakeClock
from protos.skiff.api.v1 import core_pb2
from tests.schedutil import info, node, pod, snapshot

MB = 1024 * 1024


def run(p: core_pb2.Pod, snap: Snapshot, seed: int = 0, **kw: int) -> ScheduleResult:
    return schedule(p, snap, default_plugins(), SchedulerConfig(), random.Random(seed), **kw)


# --- filters exclude nodes; the message counts why -----------------------------------------

def test_counted_message_like_kubernetes() -> None:
    nodes = [node(f"small{i}", cpu="1", labels={"disk": "ssd"}) for i in range(3)]
    nodes += [node(f"hdd{i}", cpu="8", labels={"disk": "hdd"}) for i in range(2)]
    result = run(pod(cpu="2", node_selector={"disk": "ssd"}), snapshot(nodes))
    assert result.node_name is None and result.feasible == 0
    # Kubernetes sorts the "<count> <reason>" strings themselves.
    assert result.message == ("0/5 nodes are available: 2 node(s) didn't match Pod's node "
                              "affinity/selector, 3 Insufficient cpu.")


def test_message_counts_every_reason_of_a_node_and_sorts_as_strings() -> None:
    reasons = {f"n{i}": ["Insufficient cpu", "Insufficient memory"] for i in range(10)}
    reasons["x"] = ["node(s) were unschedulable"]
    reasons["y"] = ["node(s) were unschedulable"]
    assert unschedulable_message(12, reasons) == (
        "0/12 nodes are available: 10 Insufficient cpu, 10 Insufficient memory, "
        "2 node(s) were unschedulable.")
    assert unschedulable_message(0, {}) == "no nodes available to schedule pods"


def test_first_failing_filter_names_the_node() -> None:
    nodes = [node("down", ready=False, unschedulable=True), node("cordoned", unschedulable=True),
             node("tainted", taints=[("k", "v", "NoSchedule")]),
             node("full", pods="0")]
    result = run(pod(), snapshot(nodes))
    assert result.reasons == {"down": ["node(s) were not ready"],
                              "cordoned": ["node(s) were unschedulable"],
                              "tainted": ["node(s) had untolerated taint {k: v}"],
                              "full": ["Too many pods"]}


def test_pending_then_scheduled_when_a_node_is_added() -> None:
    cache = SchedulerCache(FakeClock())
    cache.add_node(node("small", cpu="1"))
    p = pod(cpu="2")
    assert run(p, cache.snapshot()).message == "0/1 nodes are available: 1 Insufficient cpu."
    cache.add_node(node("big", cpu="4"))
    assert run(p, cache.snapshot()).node_name == "big"


# --- scores move the choice -----------------------------------------------------------------

def test_image_present_moves_the_choice() -> None:
    nodes = [node("a"), node("b", images={"app:v1": 800 * MB}), node("c")]
    result = run(pod(image="app:v1"), snapshot(nodes))
    assert result.node_name == "b"
    assert result.scores["b"] > result.scores["a"] == result.scores["c"]


def test_more_free_resources_move_the_choice() -> None:
    nodes = [node("busy", cpu="4", memory="8Gi"), node("free", cpu="4", memory="8Gi")]
    pods = [pod("old", "3", "6Gi", node_name="busy")]
    assert run(pod(cpu="500m", memory="1Gi"), snapshot(nodes, pods)).node_name == "free"
    pods = [pod("old", "3", "6Gi", node_name="free")]
    assert run(pod(cpu="500m", memory="1Gi"), snapshot(nodes, pods)).node_name == "busy"


def test_fewer_running_pods_move_the_choice() -> None:
    nodes = [node("crowded", pods="20"), node("quiet", pods="20")]
    pods = [pod(f"o{i}", node_name="crowded") for i in range(5)]
    result = run(pod(), snapshot(nodes, pods))
    assert result.node_name == "quiet" and result.scores["quiet"] > result.scores["crowded"]


def test_replicas_spread_across_nodes() -> None:
    nodes = [node("a", pods="20"), node("b", pods="20")]
    pods = [pod("r1", owner="web", node_name="a"), pod("x1", node_name="b")]
    assert run(pod(owner="web"), snapshot(nodes, pods)).node_name == "b"


def test_ties_are_broken_by_the_seeded_generator() -> None:
    snap = snapshot([node(f"n{i}") for i in range(8)])
    choices = {run(pod(), snap, seed=s).node_name for s in range(20)}
    assert len(choices) > 1
    assert run(pod(), snap, seed=7).node_name == run(pod(), snap, seed=7).node_name


def test_weights_change_the_decision() -> None:
    nodes = [node("img", images={"app:v1": 800 * MB}),
             node("soft", taints=[("x", "", "PreferNoSchedule")])]
    snap = snapshot(nodes + [node("plain")])
    # Default weights: the image wins over a plain node.
    assert run(pod(image="app:v1"), snap).node_name == "img"
    config = SchedulerConfig(weights={**SchedulerConfig().weights, "ImageLocality": 0})
    result = schedule(pod(image="app:v1"), snap, default_plugins(), config, random.Random(0))
    assert result.scores["img"] == result.scores["plain"]


# --- how many nodes are looked at -----------------------------------------------------------

@pytest.mark.parametrize("nodes, percentage, expected", [
    (50, 0, 50), (100, 0, 100), (200, 0, 100), (1000, 0, 420), (5000, 0, 500),
    (10000, 0, 500), (1000, 30, 300), (1000, 5, 100), (1000, 100, 1000)])
def test_num_feasible_nodes_to_find(nodes: int, percentage: int, expected: int) -> None:
    assert num_feasible_nodes_to_find(nodes, percentage) == expected


def test_search_stops_early_and_rotates() -> None:
    snap = snapshot([node(f"n{i:03d}") for i in range(200)])
    first = run(pod(), snap)
    assert (first.feasible, first.evaluated, first.next_start_index) == (100, 100, 100)
    assert set(first.scores) == {f"n{i:03d}" for i in range(100)}
    second = run(pod(), snap, start_index=first.next_start_index)
    assert set(second.scores) == {f"n{i:03d}" for i in range(100, 200)}
    assert second.next_start_index == 0


def test_rotation_skips_failing_nodes_without_losing_count() -> None:
    nodes = [node(f"n{i:03d}", cpu="1" if i % 2 else "8") for i in range(300)]
    result = run(pod(cpu="2"), snapshot(nodes))  # 300 nodes: adaptive 48% -> find 144
    need = num_feasible_nodes_to_find(300)
    assert result.feasible == need and result.evaluated == 2 * need - 1
    assert all(r == ["Insufficient cpu"] for r in result.reasons.values())


# --- no double booking ------------------------------------------------------------------------

def test_200_pods_onto_capacity_for_exactly_200() -> None:
    cache = SchedulerCache(FakeClock())
    for i in range(10):
        cache.add_node(node(f"n{i}", cpu="2", memory="64Gi"))
    rng, start, placed = random.Random(1), 0, 0
    plugins, config = default_plugins(), SchedulerConfig()
    for i in range(201):
        p = info(pod(f"p{i:03d}", cpu="100m"))
        result = schedule(p, cache.snapshot(), plugins, config, rng, start_index=start)
        start = result.next_start_index
        if result.node_name is None:
            assert i == 200
            assert result.message == "0/10 nodes are available: 10 Insufficient cpu."
            break
        cache.assume(p, result.node_name)
        placed += 1
    assert placed == 200
    snap = cache.snapshot()
    assert all(ni.req_cpu == ni.alloc_cpu == 2000 and len(ni.pods) == 20 for ni in snap.nodes)


# --- the four pre-bind checks -----------------------------------------------------------------

def test_recheck_node_gone() -> None:
    assert recheck(pod(), "n9", snapshot([node("n1")])) == ["node n9 no longer exists"]


def test_recheck_affinity() -> None:
    p = pod(node_selector={"disk": "ssd"})
    assert recheck(p, "n1", snapshot([node("n1", labels={"disk": "ssd"})])) == []
    assert recheck(p, "n1", snapshot([node("n1", labels={"disk": "hdd"})])) == [
        "node(s) didn't match Pod's node affinity/selector"]


def test_recheck_inter_pod_anti_affinity() -> None:
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "host"}]}}
    p = pod(labels={"app": "web"}, affinity=anti)
    n = node("n1", labels={"host": "n1"})
    assert recheck(p, "n1", snapshot([n])) == []
    other = pod("web2", labels={"app": "web"}, node_name="n1")
    assert recheck(p, "n1", snapshot([n], [other])) == [
        "node(s) didn't match pod anti-affinity rules"]


def test_recheck_port_taken() -> None:
    p = pod(host_ports=[(80, "TCP", "")])
    taker = pod("taker", node_name="n1", host_ports=[(80, "TCP", "")])
    assert recheck(p, "n1", snapshot([node("n1")])) == []
    assert recheck(p, "n1", snapshot([node("n1")], [taker])) == [
        "node(s) didn't have free ports for the requested pod ports"]


def test_recheck_resources() -> None:
    p = pod(cpu="3")
    assert recheck(p, "n1", snapshot([node("n1", cpu="4")])) == []
    hog = pod("hog", "2", node_name="n1")
    assert recheck(p, "n1", snapshot([node("n1", cpu="4")], [hog])) == ["Insufficient cpu"]


def test_recheck_does_not_count_the_assumed_pod_against_itself() -> None:
    cache = SchedulerCache(FakeClock())
    cache.add_node(node("n1", cpu="4", labels={"host": "n1"}))
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "host"}]}}
    p = info(pod(cpu="4", labels={"app": "web"}, affinity=anti, host_ports=[(80, "TCP", "")]))
    cache.assume(p, "n1")
    assert recheck(p, "n1", cache.snapshot()) == []
