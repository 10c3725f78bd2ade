"""FakeApi keeps the API server's semantics that controllers rely on, and records calls."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

import grpc
import pytest

from controlplane.client import api
from controlplane.client.api import WatchEvent
from controlplane.client.fake import FakeApi, FakeTimers
from controlplane.client.timeutil import FakeWallClock
from kvstore.clock import FakeClock
from protos.skiff.api.v1 import apps_pb2, core_pb2

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def main() -> T:
        return await aw
    return asyncio.run(main())


def pod(name: str, labels: dict[str, str] | None = None, node: str = "", ns: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, ns
    p.metadata.labels.update(labels or {})
    p.spec.containers.add(name="c", image="busybox")
    p.spec.node_name = node
    return p


def rs(name: str, replicas: int) -> apps_pb2.ReplicaSet:
    r = apps_pb2.ReplicaSet()
    r.metadata.name = name
    r.spec.replicas = replicas
    return r


def test_create_fills_server_fields_and_get_list_return_copies() -> None:
    async def body() -> None:
        fake = FakeApi(FakeWallClock(1_800_000_000))
        created = await fake.create(pod("a", {"app": "web"}))
        assert created.metadata.namespace == "default"
        assert created.metadata.uid == "00000000-0000-0000-0000-000000000001"
        assert created.metadata.generation == 1
        assert created.metadata.creation_timestamp == "2027-01-15T08:00:00Z"
        assert int(created.metadata.resource_version) == fake.rev
        got: Any = await fake.get("po", "a")
        assert got == created
        got.metadata.labels["app"] = "changed"  # the caller's copy; the fake is unaffected
        assert (await fake.get("pods", "a", "default")).metadata.labels["app"] == "web"  # type: ignore[attr-defined]
        await fake.create(pod("b", {"app": "db"}, ns="other"))
        listed = await fake.list("pods", label_selector="app=web")
        assert [p.metadata.name for p in listed.items] == ["a"]  # type: ignore[attr-defined]
        assert listed.resource_version == str(fake.rev)
        assert len((await fake.list("pods")).items) == 2
        assert len((await fake.list("pods", namespace="other")).items) == 1
        assert fake.actions[:3] == [("create", "pods", "default", "a"), ("get", "pods", "default", "a"),
                                    ("get", "pods", "default", "a")]
    run(body())


def test_create_errors_and_generate_name() -> None:
    async def body() -> None:
        fake = FakeApi()
        await fake.create(pod("a"))
        with pytest.raises(api.AlreadyExistsError, match='pods "a" already exists'):
            await fake.create(pod("a"))
        p = pod("")
        p.metadata.generate_name = "web-"
        made = await fake.create(p)
        assert made.metadata.name.startswith("web-") and len(made.metadata.name) == 9
        with pytest.raises(api.InvalidError, match="name or generateName is required"):
            await fake.create(pod(""))
        with pytest.raises(api.NotFoundError, match='pods "zz" not found'):
            await fake.get("pods", "zz")
        with pytest.raises(api.InvalidError, match="field label not supported"):
            await fake.list("pods", field_selector="spec.bogus=1")
    run(body())


def test_update_is_optimistic_keeps_status_and_bumps_generation_on_spec_change() -> None:
    async def body() -> None:
        fake = FakeApi()
        r = await fake.create(rs("web", 1))
        stale = apps_pb2.ReplicaSet()
        stale.CopyFrom(r)
        r.spec.replicas = 3
        r.status.replicas = 99  # an update cannot set status
        r2 = await fake.update(r)
        assert r2.metadata.generation == 2 and r2.status.replicas == 0
        assert int(r2.metadata.resource_version) > int(r.metadata.resource_version)
        with pytest.raises(api.ConflictError, match="the object has been modified"):
            await fake.update(stale)
        r2.metadata.labels["x"] = "y"  # metadata only: no new generation
        r3 = await fake.update(r2)
        assert r3.metadata.generation == 2
        same = await fake.update(r3)  # nothing changed: no new revision
        assert same.metadata.resource_version == r3.metadata.resource_version
        r3.status.ready_replicas = 2
        r3.spec.replicas = 7  # status update cannot change spec
        r4 = await fake.update_status(r3)
        assert r4.status.ready_replicas == 2 and r4.spec.replicas == 3
        unconditional = apps_pb2.ReplicaSet()
        unconditional.CopyFrom(r4)
        unconditional.metadata.resource_version = ""
        unconditional.spec.replicas = 4
        assert (await fake.update(unconditional)).spec.replicas == 4
    run(body())


def test_patch_merges_and_patches_status() -> None:
    async def body() -> None:
        fake = FakeApi()
        await fake.create(rs("web", 1))
        out: Any = await fake.patch("rs", "web", {"spec": {"replicas": 5}, "metadata": {"labels": {"a": "b"}}})
        assert out.spec.replicas == 5 and out.metadata.labels == {"a": "b"} and out.metadata.generation == 2
        out = await fake.patch("rs", "web", {"status": {"replicas": 5}}, subresource="status")
        assert out.status.replicas == 5
        with pytest.raises(api.ConflictError):
            await fake.patch("rs", "web", {"metadata": {"resourceVersion": "1"}})
    run(body())


def test_delete_with_preconditions_finalizers_and_pod_grace() -> None:
    async def body() -> None:
        fake = FakeApi()
        a = await fake.create(pod("a"))
        with pytest.raises(api.ConflictError, match="Precondition failed: UID"):
            await fake.delete("pods", "a", uid="nope")
        obj, gone = await fake.delete("pods", "a", uid=a.metadata.uid)
        assert gone and fake.stored("pods", "a") is None
        f = pod("f")
        f.metadata.finalizers.append("example.com/hold")
        await fake.create(f)
        held: Any
        held, gone = await fake.delete("pods", "f")
        assert not gone and held.metadata.deletion_timestamp
        held.metadata.ClearField("finalizers")
        await fake.update(held)  # the last finalizer removed: the object goes
        assert fake.stored("pods", "f") is None
        await fake.create(pod("bound", node="n1"))
        _, gone = await fake.delete("pods", "bound")
        stored: Any = fake.stored("pods", "bound")
        assert not gone and stored.metadata.deletion_grace_period_seconds == 30
        _, gone = await fake.delete("pods", "bound", grace_period_seconds=0)
        assert gone
        await fake.create(rs("web", 1))
        _, gone = await fake.delete("rs", "web", propagation_policy="Orphan")
        assert not gone and list(fake.stored("rs", "web").metadata.finalizers) == ["orphan"]  # type: ignore[union-attr]
    run(body())


def test_bind_sets_node_once() -> None:
    async def body() -> None:
        fake = FakeApi()
        p = await fake.create(pod("a"))
        bound: Any = await fake.bind("default", "a", "n1", uid=p.metadata.uid)
        assert bound.spec.node_name == "n1"
        assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
        with pytest.raises(api.ConflictError, match='already assigned to node "n1"'):
            await fake.bind("default", "a", "n2")
        assert ("bind", "pods", "default", "a") in fake.writes()
    run(body())


def test_injected_failures_are_recorded_and_consumed() -> None:
    async def body() -> None:
        fake = FakeApi()
        fake.fail("create", "pods", times=2)
        for _ in range(2):
            with pytest.raises(api.UnavailableError):
                await fake.create(pod("a"))
        await fake.create(pod("a"))
        assert [a[0] for a in fake.actions] == ["create"] * 3
        fake.fail("get", error=api.ForbiddenError(grpc.StatusCode.PERMISSION_DENIED, "no"), times=None, name="a")
        for _ in range(3):
            with pytest.raises(api.ForbiddenError):
                await fake.get("pods", "a")
        fake.clear_failures()
        await fake.get("pods", "a")
        fake.clear_actions()
        assert fake.actions == []
    run(body())


async def take(stream: Any, n: int) -> list[WatchEvent]:
    return [await asyncio.wait_for(stream.__anext__(), 5) for _ in range(n)]


def test_watch_from_empty_version_replays_from_a_version_and_goes_on() -> None:
    async def body() -> None:
        fake = FakeApi()
        await fake.create(pod("a"))
        start = fake.rev
        await fake.create(pod("b"))
        w = fake.watch("pods")
        assert [(e.type, e.object.metadata.name) for e in await take(w, 2)] == [("ADDED", "a"), ("ADDED", "b")]  # type: ignore[attr-defined]
        w2 = fake.watch("pods", resource_version=str(start))
        assert [e.object.metadata.name for e in await take(w2, 1)] == ["b"]  # type: ignore[attr-defined]
        await fake.delete("pods", "a")
        (ev,) = await take(w, 1)
        assert ev.type == "DELETED" and ev.object.metadata.resource_version == str(fake.rev)  # type: ignore[attr-defined]
        assert fake.open_watches == 2
        await w.aclose()
        await w2.aclose()
        assert fake.open_watches == 0
    run(body())


def test_watch_selectors_turn_modified_into_added_and_deleted() -> None:
    async def body() -> None:
        fake = FakeApi()
        w = fake.watch("pods", label_selector="app=web", resource_version=str(fake.rev))
        await fake.create(pod("a", {"app": "db"}))
        await fake.patch("pods", "a", {"metadata": {"labels": {"app": "web"}}})
        await fake.patch("pods", "a", {"metadata": {"labels": {"app": "db"}}})
        events = await take(w, 2)
        assert [e.type for e in events] == ["ADDED", "DELETED"]
        assert events[1].object.metadata.labels["app"] == "web"  # type: ignore[attr-defined]
        await w.aclose()
    run(body())


def test_watch_too_old_is_gone_and_breaking_ends_streams() -> None:
    async def body() -> None:
        fake = FakeApi(history_size=2)
        old = fake.rev
        for name in "abc":
            await fake.create(pod(name))
        with pytest.raises(api.GoneError, match="too old resource version"):
            await take(fake.watch("pods", resource_version=str(old)), 1)
        w = fake.watch("pods", resource_version=str(fake.rev), bookmarks=True)
        first = asyncio.create_task(take(w, 1))  # a watch opens on its first iteration
        while fake.open_watches == 0:
            await asyncio.sleep(0)
        fake.send_bookmarks()
        (mark,) = await first
        assert mark.type == "BOOKMARK" and mark.object.metadata.resource_version == str(fake.rev)  # type: ignore[attr-defined]
        fake.break_watches(api.GoneError(grpc.StatusCode.OUT_OF_RANGE, "gone"))
        with pytest.raises(api.GoneError):
            await take(w, 1)
        fake.compact()
        with pytest.raises(api.GoneError):
            await take(fake.watch("pods", resource_version=str(fake.rev - 1)), 1)
    run(body())


def test_fake_timers_fire_in_order_and_move_both_clocks() -> None:
    async def body() -> None:
        clock, wall = FakeClock(0), FakeWallClock(100)
        timers = FakeTimers(clock, wall)
        order: list[tuple[str, float]] = []

        async def sleeper(name: str, d: float) -> None:
            await timers.sleep(d)
            order.append((name, clock.now()))

        tasks = [asyncio.create_task(sleeper("late", 5)), asyncio.create_task(sleeper("early", 1))]
        await timers.run_until(3)
        assert order == [("early", 1)] and clock.now() == 3 and wall.now() == 103
        await timers.run_for(10)
        assert order == [("early", 1), ("late", 5)] and clock.now() == 13
        await asyncio.gather(*tasks)
    run(body())
