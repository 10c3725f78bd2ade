"""The scheduling queue: priority then FIFO, backoff 1-2-4-8-10 s, unschedulable pods moved on
cluster events or after 5 minutes, in-flight bookkeeping, async pop."""
from __future__ import annotations

import asyncio

import pytest

from controlplane.scheduler.framework import PodInfo
from controlplane.scheduler.queue import (NODE_ADD, POD_DELETE, SchedulingQueue,
                                          backoff_duration)
from kvstore.clock import FakeClock
from tests.schedutil import info, pod


def make() -> tuple[SchedulingQueue, FakeClock]:
    clock = FakeClock()
    return SchedulingQueue(clock), clock


def keys(q: SchedulingQueue) -> list[str]:
    out = []
    while (item := q.pop_nowait()) is not None:
        out.append(item.key)
        q.done(item.key)
    return out


def test_priority_then_fifo() -> None:
    q, clock = make()
    for name, prio in [("low1", 0), ("high", 10), ("low2", 0), ("mid", 5)]:
        q.add(info(pod(name, priority=prio)))
        clock.advance(0.001)
    q.add(info(pod("low3")))  # same time as nothing else; FIFO still holds
    assert keys(q) == ["default/high", "default/mid", "default/low1", "default/low2",
                       "default/low3"]


def test_backoff_durations() -> None:
    assert [backoff_duration(a) for a in range(0, 8)] == [0, 1, 2, 4, 8, 10, 10, 10]


def test_failed_pods_back_off_1_2_4_8_10_seconds() -> None:
    q, clock = make()
    q.add(info(pod("p")))
    waits = []
    for _ in range(6):
        item = q.pop_nowait()
        assert item is not None
        q.add_unschedulable(item.pod_info, item.attempts, error=True)
        q.done(item.key)
        waited = 0.0
        while q.where("default/p") == "backoff":
            clock.advance(0.5)
            waited += 0.5
            q.flush()
        assert q.where("default/p") == "active"
        waits.append(waited)
    assert waits == [1, 2, 4, 8, 10, 10]


def fail_unschedulable(q: SchedulingQueue) -> PodInfo:
    item = q.pop_nowait()
    assert item is not None
    q.add_unschedulable(item.pod_info, item.attempts)
    q.done(item.key)
    return item.pod_info


def test_unschedulable_waits_for_a_cluster_event() -> None:
    q, clock = make()
    q.add(info(pod("p")))
    fail_unschedulable(q)
    assert q.where("default/p") == "unschedulable"
    clock.advance(60)
    q.flush()
    assert q.where("default/p") == "unschedulable" and q.pop_nowait() is None
    assert q.move_all_to_active(NODE_ADD) == 1
    assert q.where("default/p") == "active"  # its 1 s backoff is long over
    assert q.events == {NODE_ADD: 1}


@pytest.mark.parametrize("event", [NODE_ADD, "NodeUpdate", POD_DELETE])
def test_moved_pod_still_backing_off_goes_to_backoff(event: str) -> None:
    q, clock = make()
    q.add(info(pod("p")))
    fail_unschedulable(q)
    q.move_all_to_active(event)
    assert q.where("default/p") == "backoff"
    clock.advance(1)
    q.flush()
    assert q.where("default/p") == "active"


def test_unschedulable_flushed_after_five_minutes() -> None:
    q, clock = make()
    q.add(info(pod("p")))
    fail_unschedulable(q)
    clock.advance(299)
    q.flush()
    assert q.where("default/p") == "unschedulable"
    clock.advance(1)
    q.flush()
    assert q.where("default/p") == "active"


def test_event_during_the_attempt_sends_the_pod_to_backoff() -> None:
    q, clock = make()
    q.add(info(pod("p")))
    item = q.pop_nowait()
    assert item is not None
    q.move_all_to_active(NODE_ADD)  # e.g. a node arrived while we were filtering
    q.add_unschedulable(item.pod_info, item.attempts)
    q.done(item.key)
    assert q.where("default/p") == "backoff"


def test_deleted_during_the_attempt_is_not_requeued() -> None:
    q, _ = make()
    q.add(info(pod("p")))
    item = q.pop_nowait()
    assert item is not None
    q.delete(item.key)
    q.add_unschedulable(item.pod_info, item.attempts)
    q.done(item.key)
    assert q.where("default/p") is None and len(q) == 0


def test_updated_during_the_attempt_is_requeued_with_the_update() -> None:
    q, clock = make()
    q.add(info(pod("p")))
    item = q.pop_nowait()
    assert item is not None
    q.add(info(pod("p", cpu="1")))
    q.add_unschedulable(item.pod_info, item.attempts)
    q.done(item.key)
    clock.advance(1)
    again = q.pop_nowait()
    assert again is not None and again.pod_info.req_cpu == 1000 and again.attempts == 2


def test_update_of_an_unschedulable_pod_moves_it() -> None:
    q, clock = make()
    q.add(info(pod("p")))
    fail_unschedulable(q)
    clock.advance(5)
    q.add(info(pod("p", cpu="1")))
    assert q.where("default/p") == "active"


def test_delete_and_pending_counts() -> None:
    q, _ = make()
    q.add(info(pod("a")))
    q.add(info(pod("b")))
    q.add(info(pod("a")))  # an update, not a second entry
    assert q.pending() == {"active": 2, "backoff": 0, "unschedulable": 0}
    q.delete("default/a")
    assert keys(q) == ["default/b"]


def test_async_pop_waits_for_work_and_close_ends_it() -> None:
    async def scenario() -> None:
        q, _ = make()
        waiter = asyncio.ensure_future(q.pop())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        q.add(info(pod("p")))
        item = await asyncio.wait_for(waiter, timeout=5)
        assert item is not None and item.key == "default/p" and item.attempts == 1
        closer = asyncio.ensure_future(q.pop())
        await asyncio.sleep(0.01)
        q.close()
        assert await asyncio.wait_for(closer, timeout=5) is None
    asyncio.run(scenario())
