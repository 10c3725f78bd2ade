"""The scheduler driver over the fake API: Pending with the counted message, then scheduled when
a node arrives; a failed bind is retried; events are aggregated; metrics render and serve."""
from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

from controlplane.client.fake import FakeApi
from controlplane.client.events import EventRecorder
from controlplane.scheduler.driver import (Scheduler, is_pending_for, node_changed,
                                           pod_spec_changed, with_unschedulable_condition)
from controlplane.client.metricsserver import MetricsServer
from controlplane.scheduler.metrics import SchedulerMetrics, parse_text
from controlplane.scheduler.queue import SchedulingQueue
from kvstore.clock import MonotonicClock
from protos.skiff.api.v1 import core_pb2
from tests.schedutil import node, pod

HANG = 10.0  # a hang guard only: everything here takes milliseconds


async def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + HANG
    while asyncio.get_running_loop().time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def with_scheduler(body: Callable[[FakeApi, Scheduler], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        fake = FakeApi()
        clock = MonotonicClock()
        queue = SchedulingQueue(clock, initial_backoff=0.01, max_backoff=0.05, poll_interval=0.01)
        sched = Scheduler(fake, clock=clock, rng=random.Random(0), queue=queue, **kw)
        task = asyncio.create_task(sched.run())
        try:
            await body(fake, sched)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sched.stop()
    asyncio.run(main())


def stored_pod(fake: FakeApi, name: str) -> Any:
    return fake.stored("pods", name, "default")


async def events(fake: FakeApi) -> list[Any]:
    return (await fake.list("events")).items


def condition(p: Any) -> Any:
    return next((c for c in p.status.conditions if c.type == "PodScheduled"), None)


def test_pending_with_counted_message_then_scheduled_when_a_node_arrives() -> None:
    async def body(fake: FakeApi, sched: Scheduler) -> None:
        fake.seed(node("small-1", cpu="1"), node("small-2", cpu="1"), node("tainted", cpu="8",
                  taints=[("dedicated", "db", "NoSchedule")]))
        await fake.create(pod("web", cpu="2"))
        want = ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, "
                "2 Insufficient cpu.")
        p = await eventually(lambda: (c := condition(stored_pod(fake, "web"))) and c.status == "False"
                             and stored_pod(fake, "web"), "PodScheduled=False")
        assert (condition(p).reason, condition(p).message) == ("Unschedulable", want)
        assert not p.spec.node_name
        await sched.events.flush()
        failed = [e for e in await events(fake) if e.reason == "FailedScheduling"]
        assert len(failed) == 1
        ev = failed[0]
        assert (ev.type, ev.message, ev.source.component, ev.count) == ("Warning", want, "default-scheduler", 1)
        assert (ev.involved_object.kind, ev.involved_object.name, ev.involved_object.uid) == (
            "Pod", "web", p.metadata.uid)
        assert sched.queue.where("default/web") == "unschedulable"

        await fake.create(node("big", cpu="4"))
        bound = await eventually(lambda: stored_pod(fake, "web").spec.node_name, "the bind")
        assert bound == "big"
        await sched.events.flush()
        ok = [e for e in await events(fake) if e.reason == "Scheduled"]
        assert [(e.type, e.message) for e in ok] == [("Normal", "Successfully assigned default/web to big")]
        assert sched.metrics.attempts["scheduled"] == 1
        assert sched.metrics.attempts["unschedulable"] >= 1
        # The status write happened once: a repeat of the same message does not write again.
        assert sched.stats.status_writes == 1
    with_scheduler(body)


def test_a_failed_bind_forgets_the_pod_and_retries_it() -> None:
    async def body(fake: FakeApi, sched: Scheduler) -> None:
        fake.seed(node("n1", cpu="1"))
        fake.fail("bind", "pods", times=2)
        await fake.create(pod("a", cpu="600m"))
        assert await eventually(lambda: stored_pod(fake, "a").spec.node_name, "the bind") == "n1"
        binds = [a for a in fake.actions if a[0] == "bind"]
        assert len(binds) == 3
        assert sched.stats.bind_failures == 2
        assert sched.metrics.attempts["error"] == 2 and sched.metrics.attempts["scheduled"] == 1
        # Forgotten then assumed again: the pod counts once on n1, so a second 600m pod no longer fits.
        await eventually(lambda: not sched.cache.is_assumed("default/a"), "the watch confirming the bind")
        assert sched.cache.node_info("n1").req_cpu == 600  # type: ignore[union-attr]
        await fake.create(pod("b", cpu="600m"))
        await eventually(lambda: condition(stored_pod(fake, "b")), "b unschedulable")
        assert condition(stored_pod(fake, "b")).message == "0/1 nodes are available: 1 Insufficient cpu."
    with_scheduler(body)


def test_no_double_booking_while_binds_are_in_flight() -> None:
    async def body(fake: FakeApi, sched: Scheduler) -> None:
        fake.seed(*(node(f"n{i}", cpu="1") for i in range(4)))
        for i in range(12):
            await fake.create(pod(f"p{i}", cpu="500m"))
        await eventually(lambda: sum(1 for i in range(12) if stored_pod(fake, f"p{i}").spec.node_name) == 8,
                         "8 pods bound")
        await eventually(lambda: sum(1 for i in range(12) if condition(stored_pod(fake, f"p{i}")) is not None
                                     and condition(stored_pod(fake, f"p{i}")).status == "False") == 4,
                         "4 pods unschedulable")
        per_node: dict[str, int] = {}
        for i in range(12):
            n = stored_pod(fake, f"p{i}").spec.node_name
            if n:
                per_node[n] = per_node.get(n, 0) + 1
        assert per_node == {f"n{i}": 2 for i in range(4)}
    with_scheduler(body, bind_concurrency=4)


def test_pods_for_other_schedulers_and_deleted_nodes() -> None:
    async def body(fake: FakeApi, sched: Scheduler) -> None:
        other = pod("other", cpu="100m")
        other.spec.scheduler_name = "someone-else"
        fake.seed(node("n1"))
        await fake.create(other)
        await fake.create(pod("mine", cpu="100m"))
        assert await eventually(lambda: stored_pod(fake, "mine").spec.node_name, "mine bound") == "n1"
        await asyncio.sleep(0.05)
        assert not stored_pod(fake, "other").spec.node_name
        await fake.delete("nodes", "n1")
        await fake.create(pod("late", cpu="100m"))
        await eventually(lambda: condition(stored_pod(fake, "late")), "late unschedulable")
        assert condition(stored_pod(fake, "late")).message == "no nodes available to schedule pods"
    with_scheduler(body)


def test_deleting_a_bound_pod_frees_room_for_an_unschedulable_one() -> None:
    async def body(fake: FakeApi, sched: Scheduler) -> None:
        fake.seed(node("n1", cpu="1"))
        await fake.create(pod("first", cpu="800m"))
        await eventually(lambda: stored_pod(fake, "first").spec.node_name, "first bound")
        await fake.create(pod("second", cpu="800m"))
        await eventually(lambda: condition(stored_pod(fake, "second")), "second unschedulable")
        await fake.delete("pods", "first", "default", grace_period_seconds=0)
        assert await eventually(lambda: stored_pod(fake, "second").spec.node_name, "second bound") == "n1"
    with_scheduler(body)


def test_event_recorder_aggregates_repeats() -> None:
    async def main() -> None:
        fake = FakeApi()
        rec = EventRecorder(fake, "default-scheduler", workers=2)
        rec.start()
        p: Any = fake.seed(pod("x"))[0]
        rec.record(p, "Warning", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
        await rec.flush()
        for _ in range(3):
            rec.record(p, "Warning", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")
        await rec.flush()
        rec.record(p, "Warning", "FailedScheduling", "0/2 nodes are available: 2 Insufficient cpu.")
        await rec.flush()
        evs = await events(fake)
        assert sorted((e.message, e.count) for e in evs) == [
            ("0/1 nodes are available: 1 Insufficient cpu.", 4), ("0/2 nodes are available: 2 Insufficient cpu.", 1)]
        creates = [a for a in fake.actions if a[:2] == ("create", "events")]
        assert len(creates) == 2  # the repeats were patches of the first, coalesced
        await rec.stop()
    asyncio.run(main())


def test_event_recorder_drops_when_its_queue_is_full() -> None:
    async def main() -> None:
        metrics = SchedulerMetrics()
        rec = EventRecorder(FakeApi(), "default-scheduler", on_drop=metrics.count_dropped_event, queue_size=2)
        for i in range(5):
            rec.record(pod(f"p{i}"), "Normal", "Scheduled", "ok")
        assert rec.dropped == 3 and metrics.events_dropped == 3
    asyncio.run(main())


def test_unschedulable_condition_is_written_only_when_it_changes() -> None:
    p = pod("p")
    first = with_unschedulable_condition(p, "0/1 nodes are available.", "2026-01-01T00:00:00Z")
    assert first is not None and first is not p
    assert [(c.type, c.status, c.reason) for c in first.status.conditions] == [
        ("PodScheduled", "False", "Unschedulable")]
    assert not p.status.conditions  # the informer's object is never changed
    assert with_unschedulable_condition(first, "0/1 nodes are available.", "later") is None
    again = with_unschedulable_condition(first, "0/2 nodes are available.", "later")
    assert again is not None
    assert again.status.conditions[0].last_transition_time == "2026-01-01T00:00:00Z"


def test_filters_of_updates() -> None:
    a = node("n", cpu="1")
    b = core_pb2.Node()
    b.CopyFrom(a)
    b.status.conditions[0].last_heartbeat_time = "2026-01-01T00:00:10Z"
    assert not node_changed(a, b)
    b.status.allocatable["cpu"] = "2"
    assert node_changed(a, b)
    p1, p2 = pod("p", cpu="1"), pod("p", cpu="1")
    p2.status.conditions.add(type="PodScheduled", status="False")
    assert not pod_spec_changed(p1, p2)
    p2.metadata.labels["x"] = "y"
    assert pod_spec_changed(p1, p2)
    assert is_pending_for(pod("p"), "default-scheduler")
    assert not is_pending_for(pod("p", node_name="n"), "default-scheduler")
    assert not is_pending_for(pod("p", phase="Failed"), "default-scheduler")


def test_metrics_render_and_serve() -> None:
    metrics = SchedulerMetrics(pending=lambda: {"active": 2, "backoff": 1, "unschedulable": 3})
    metrics.observe_attempt("scheduled", 0.0015)
    metrics.observe_attempt("scheduled", 0.5)
    metrics.observe_attempt("unschedulable", 0.002)
    samples = parse_text(metrics.render())
    assert samples['scheduler_schedule_attempts_total{result="scheduled"}'] == 2
    assert samples['scheduler_schedule_attempts_total{result="error"}'] == 0
    h = "scheduler_scheduling_attempt_duration_seconds"
    assert samples[f'{h}_bucket{{result="scheduled",le="0.002"}}'] == 1
    assert samples[f'{h}_bucket{{result="scheduled",le="+Inf"}}'] == 2
    assert samples[f'{h}_count{{result="scheduled"}}'] == 2
    assert samples['scheduler_pending_pods{queue="unschedulable"}'] == 3

    async def main() -> None:
        ready = [False]
        server = MetricsServer(metrics.render, port=0, ready=lambda: ready[0])
        await server.start()
        try:
            async def get(path: str) -> tuple[str, str]:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                data = (await reader.read()).decode()
                writer.close()
                head, _, body = data.partition("\r\n\r\n")
                return head.split("\r\n")[0], body
            status, body = await get("/metrics")
            assert status == "HTTP/1.1 200 OK" and 'result="scheduled"} 2' in body
            assert (await get("/readyz"))[0] == "HTTP/1.1 503 Service Unavailable"
            ready[0] = True
            assert (await get("/readyz"))[0] == "HTTP/1.1 200 OK"
            assert (await get("/nope"))[0] == "HTTP/1.1 404 Not Found"
        finally:
            await server.stop()
    asyncio.run(main())


def test_a_node_deleted_between_choice_and_bind_fails_the_recheck() -> None:
    async def main() -> None:
        fake = FakeApi()
        clock = MonotonicClock()
        queue = SchedulingQueue(clock, initial_backoff=0.01, max_backoff=0.05, poll_interval=0.01)
        sched = Scheduler(fake, clock=clock, rng=random.Random(0), queue=queue)
        (n1,) = fake.seed(node("n1"))
        fake.seed(pod("p", cpu="100m"))
        sched.start_informers()
        assert await sched.wait_for_sync(HANG)
        item = queue.pop_nowait()
        assert item is not None
        await sched.schedule_one(item)  # chose n1, assumed; the bind task has not run yet
        assert sched.cache.is_assumed("default/p")
        sched._node_deleted(n1)  # as the node informer would on a watch event
        await eventually(lambda: sched.stats.recheck_failures == 1, "the recheck failing")
        assert not [a for a in fake.actions if a[0] == "bind"]
        assert not sched.cache.is_assumed("default/p") and sched.cache.node_of("default/p") is None
        assert queue.where("default/p") in ("backoff", "active")
        assert sched.metrics.attempts["error"] == 1
        await sched.stop()
    asyncio.run(main())
