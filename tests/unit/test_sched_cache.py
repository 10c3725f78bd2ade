"""The scheduler cache: nodes and pods from the watch, assumed pods, snapshots."""
from __future__ import annotations

import pytest

from controlplane.scheduler.cache import SchedulerCache
from kvstore.clock import FakeClock
from tests.schedutil import info, node, pod


def make(ttl: float = 30.0) -> tuple[SchedulerCache, FakeClock]:
    clock = FakeClock()
    cache = SchedulerCache(clock, ttl=ttl)
    cache.add_node(node("n1", cpu="4"))
    cache.add_node(node("n2", cpu="4"))
    return cache, clock


def cpu_used(cache: SchedulerCache, name: str) -> int:
    ni = cache.snapshot().get(name)
    assert ni is not None
    return ni.req_cpu


def test_bound_pods_count_against_their_node() -> None:
    cache, _ = make()
    cache.add_pod(pod("a", "1", node_name="n1"))
    cache.add_pod(pod("pending", "1"))  # no node: not the cache's business
    assert (cpu_used(cache, "n1"), cpu_used(cache, "n2")) == (1000, 0)
    cache.update_pod(pod("a", "2", node_name="n1"))
    assert cpu_used(cache, "n1") == 2000
    cache.remove_pod("default/a")
    assert cpu_used(cache, "n1") == 0 and cache.pod_count == 0


def test_terminal_pods_free_their_resources() -> None:
    cache, _ = make()
    cache.add_pod(pod("job", "1", node_name="n1"))
    cache.update_pod(pod("job", "1", node_name="n1", phase="Succeeded"))
    assert cpu_used(cache, "n1") == 0


def test_assume_then_confirm_by_the_watch() -> None:
    cache, clock = make()
    p = pod("a", "1")
    placed = cache.assume(info(p), "n1")
    assert placed.node_name == "n1" and cache.is_assumed("default/a")
    assert cpu_used(cache, "n1") == 1000
    p.spec.node_name = "n1"
    cache.add_pod(p)
    assert not cache.is_assumed("default/a") and cpu_used(cache, "n1") == 1000
    clock.advance(3600)
    assert cpu_used(cache, "n1") == 1000  # confirmed pods never expire


def test_update_of_the_still_pending_pod_keeps_it_assumed() -> None:
    cache, _ = make()
    cache.assume(info(pod("a", "1")), "n1")
    cache.update_pod(pod("a", "1"))  # the watch has not seen the binding yet
    assert cache.is_assumed("default/a") and cpu_used(cache, "n1") == 1000


def test_watch_reports_another_node_than_assumed() -> None:
    cache, _ = make()
    cache.assume(info(pod("a", "1")), "n1")
    cache.update_pod(pod("a", "1", node_name="n2"))
    assert (cpu_used(cache, "n1"), cpu_used(cache, "n2")) == (0, 1000)


def test_forget_after_a_failed_bind() -> None:
    cache, _ = make()
    cache.assume(info(pod("a", "1")), "n1")
    cache.forget("default/a")
    assert cpu_used(cache, "n1") == 0 and cache.assumed_count == 0


def test_assumed_pods_expire_after_the_ttl() -> None:
    cache, clock = make(ttl=30)
    cache.assume(info(pod("a", "1")), "n1")
    clock.advance(20)
    cache.finish_binding("default/a")  # restarts the countdown
    clock.advance(20)
    assert cpu_used(cache, "n1") == 1000
    clock.advance(10)
    assert cpu_used(cache, "n1") == 0 and not cache.is_assumed("default/a")


def test_cannot_assume_a_pod_the_watch_has_bound() -> None:
    cache, _ = make()
    cache.add_pod(pod("a", "1", node_name="n1"))
    with pytest.raises(ValueError, match="already bound to node n1"):
        cache.assume(info(pod("a", "1")), "n2")


def test_snapshots_never_change() -> None:
    cache, _ = make()
    before = cache.snapshot()
    assert cache.snapshot() is before  # nothing changed: the same snapshot
    cache.assume(info(pod("a", "1")), "n1")
    after = cache.snapshot()
    assert before.get("n1").req_cpu == 0  # type: ignore[union-attr]
    assert after.get("n1").req_cpu == 1000  # type: ignore[union-attr]
    assert before.get("n2") is after.get("n2")  # untouched nodes are shared, not copied


def test_pods_arriving_before_their_node() -> None:
    clock = FakeClock()
    cache = SchedulerCache(clock)
    cache.add_pod(pod("early", "1", node_name="late"))
    assert cache.snapshot().nodes == []
    cache.add_node(node("late", cpu="4"))
    assert cpu_used(cache, "late") == 1000
    cache.remove_node("late")
    assert cache.snapshot().get("late") is None and cache.node_count == 0
    cache.add_node(node("late", cpu="4"))
    assert cpu_used(cache, "late") == 1000  # still accounted until the watch deletes it


def test_node_updates_and_images() -> None:
    cache, _ = make()
    cache.update_node(node("n1", cpu="8", images={"app:v1": 10}))
    cache.add_node(node("n3", images={"app:v1": 10}))
    snap = cache.snapshot()
    assert snap.get("n1").alloc_cpu == 8000  # type: ignore[union-attr]
    assert snap.image_nodes == {"app:v1": 2}
    cache.remove_node("n3")
    assert cache.snapshot().image_nodes == {"app:v1": 1}
    assert [ni.name for ni in cache.snapshot().nodes] == ["n1", "n2"]


def test_affinity_pods_are_tracked_for_snapshots() -> None:
    cache, _ = make()
    assert cache.snapshot().with_required_anti_affinity_pods == []
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": "zone"}]}}
    cache.add_pod(pod("x", node_name="n2", affinity=anti))
    assert [ni.name for ni in cache.snapshot().with_required_anti_affinity_pods] == ["n2"]
    cache.remove_pod("default/x")
    assert cache.snapshot().with_required_anti_affinity_pods == []
