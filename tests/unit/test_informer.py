"""Shared informers over the fake API: cache, handlers, indexes, relists, resync, sharing."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import grpc
import pytest
from google.protobuf.message import Message

from controlplane.client import api
from controlplane.client.fake import FakeApi, FakeTimers
from controlplane.client.informer import (NAMESPACE_INDEX, NODE_INDEX, OWNER_INDEX, Indexer,
                                          InformerFactory, SharedInformer, controller_owner_index,
                                          node_name_index, object_key, split_key)
from kvstore.clock import FakeClock
from protos.skiff.api.v1 import core_pb2


def pod(name: str, ns: str = "default", node: str = "", owner: str = "", labels: dict[str, str] | None = None
        ) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, ns
    p.metadata.labels.update(labels or {})
    p.spec.containers.add(name="c", image="busybox")
    p.spec.node_name = node
    if owner:
        p.metadata.owner_references.add(api_version="apps/v1", kind="ReplicaSet", name="rs", uid=owner,
                                         controller=True)
    return p


class Recorder:
    """Handler calls as (event, key, resourceVersion) tuples."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def add(self, obj: Message) -> None:
        self.calls.append(("add", object_key(obj), obj.metadata.resource_version))  # type: ignore[attr-defined]

    def update(self, old: Message, new: Message) -> None:
        self.calls.append(("update", object_key(new), new.metadata.resource_version))  # type: ignore[attr-defined]

    def delete(self, obj: Message) -> None:
        self.calls.append(("delete", object_key(obj), obj.metadata.resource_version))  # type: ignore[attr-defined]

    def kinds(self) -> list[tuple[str, str]]:
        return [(c[0], c[1]) for c in self.calls]


Body = Callable[[FakeApi, SharedInformer, Recorder, FakeTimers], Awaitable[None]]


def with_informer(body: Body, seed: tuple[Message, ...] = (), **kw: Any) -> None:
    async def main() -> None:
        fake = FakeApi()
        fake.seed(*seed)
        clock = FakeClock()
        timers = FakeTimers(clock)
        inf = SharedInformer(fake, "pods", clock=clock, sleep=timers.sleep, **kw)
        rec = Recorder()
        inf.add_handler(rec.add, rec.update, rec.delete)
        inf.start()
        try:
            assert await inf.wait_for_sync(5)
            await timers.idle()
            await body(fake, inf, rec, timers)
        finally:
            await inf.stop()
    asyncio.run(main())


def test_keys() -> None:
    assert object_key(pod("a", "ns")) == "ns/a"
    node = core_pb2.Node()
    node.metadata.name = "n1"
    assert object_key(node) == "n1"
    assert split_key("ns/a") == ("ns", "a") and split_key("n1") == ("", "n1")


def test_lists_then_follows_creates_updates_deletes_in_order() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        assert inf.has_synced and rec.kinds() == [("add", "default/a")]
        assert inf.lists == 1 and inf.watches == 1
        await fake.create(pod("b"))
        await fake.patch("pods", "b", {"metadata": {"labels": {"x": "1"}}})
        await fake.delete("pods", "a")
        await timers.idle()
        assert rec.kinds() == [("add", "default/a"), ("add", "default/b"), ("update", "default/b"),
                               ("delete", "default/a")]
        cached: Any = inf.get("default/b")
        assert cached.metadata.labels == {"x": "1"} and inf.get("default/a") is None
        assert inf.keys() == ["default/b"] and inf.resource_version == str(fake.rev)
        assert rec.calls[-1][2] == str(fake.rev)  # the delete carries the deletion's revision
    with_informer(body, seed=(pod("a"),))


def test_indexes_by_namespace_owner_and_node() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        inf.add_index(OWNER_INDEX, controller_owner_index)  # after sync: existing objects indexed
        inf.add_index(NODE_INDEX, node_name_index)
        assert [o.metadata.name for o in inf.by_index(OWNER_INDEX, "rs-1")] == ["a", "b"]  # type: ignore[attr-defined]
        assert [o.metadata.name for o in inf.by_index(NODE_INDEX, "n1")] == ["a"]  # type: ignore[attr-defined]
        assert [o.metadata.name for o in inf.by_index(NAMESPACE_INDEX, "other")] == ["c"]  # type: ignore[attr-defined]
        await fake.bind("default", "b", "n1")
        await fake.delete("pods", "a", grace_period_seconds=0)
        await timers.idle()
        assert [o.metadata.name for o in inf.by_index(NODE_INDEX, "n1")] == ["b"]  # type: ignore[attr-defined]
        assert [o.metadata.name for o in inf.by_index(OWNER_INDEX, "rs-1")] == ["b"]  # type: ignore[attr-defined]
        assert inf.by_index(NODE_INDEX, "nowhere") == []
        with pytest.raises(KeyError, match="no index named 'bogus'"):
            inf.by_index("bogus", "x")
    with_informer(body, seed=(pod("a", node="n1", owner="rs-1"), pod("b", owner="rs-1"), pod("c", "other")))


def test_indexer_refuses_a_second_function_for_one_name() -> None:
    idx = Indexer()
    idx.add_index("n", node_name_index)
    idx.add_index("n", node_name_index)  # the same registration again is fine
    with pytest.raises(ValueError, match="already registered"):
        idx.add_index("n", controller_owner_index)


def test_a_relist_after_gone_delivers_what_changed_meanwhile() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        rec.calls.clear()
        fake.break_watches(api.GoneError(grpc.StatusCode.OUT_OF_RANGE, "too old resource version"))
        # While the informer is not watching: one pod goes, one changes, one comes.
        last_a: Any = fake.stored("pods", "a")
        await fake.delete("pods", "a")
        await fake.patch("pods", "b", {"metadata": {"labels": {"v": "2"}}})
        await fake.create(pod("c"))
        fake.compact()
        await timers.idle()
        assert inf.lists == 1  # that watch had delivered nothing yet: back off first
        await timers.run_for(0.1)
        assert inf.lists == 2
        assert sorted(rec.kinds()) == [("add", "default/c"), ("delete", "default/a"), ("update", "default/b")]
        deleted = [c for c in rec.calls if c[0] == "delete"][0]
        assert deleted[2] == last_a.metadata.resource_version  # the last state the cache held
        assert sorted(inf.keys()) == ["default/b", "default/c"]
        await fake.create(pod("d"))  # and it watches again
        await timers.idle()
        assert inf.get("default/d") is not None
    with_informer(body, seed=(pod("a"), pod("b")))


def test_a_broken_stream_relists_with_backoff() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        fake.fail("list", times=3)
        fake.fail("watch", times=1)  # the first watch after the relist fails too
        fake.break_watches()
        start = timers.clock.now()
        await timers.run_for(0.1 + 0.2 + 0.4 + 0.8 - 0.01)
        assert inf.lists == 1  # three failed lists, still backing off
        await timers.run_for(0.02)
        assert inf.lists == 2
        await timers.run_for(1.6)  # the failed watch doubles the wait again
        assert inf.lists == 3 and timers.clock.now() - start == pytest.approx(3.11)
        verbs = [a[0] for a in fake.actions if a[0] in ("list", "watch")]
        assert verbs == ["list", "watch", "list", "list", "list", "list", "watch", "list", "watch"]
        await fake.create(pod("b"))  # watching again
        await fake.create(pod("c"))
        await timers.idle()
        assert sorted(inf.keys()) == ["default/a", "default/b", "default/c"]
        fake.break_watches()  # that watch delivered events: relist at once, no backoff
        await timers.idle()
        assert inf.lists == 4
    with_informer(body, seed=(pod("a"),))


def test_a_cleanly_ended_watch_is_reopened_from_the_last_version_without_a_list() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        await fake.create(pod("b"))
        await timers.idle()
        fake.end_watches()  # a healthy watch (it delivered b) timed out on the server
        await fake.create(pod("c"))
        await timers.idle()
        assert inf.lists == 1 and inf.watches == 2
        assert rec.kinds()[-1] == ("add", "default/c")  # replayed from the last resourceVersion
        fake.end_watches()  # it delivered c: reopened at once
        await timers.idle()
        assert inf.watches == 3
        fake.end_watches()  # this one delivered nothing: wait before watching again
        await timers.idle()
        assert inf.watches == 3
        await timers.run_for(0.1)
        assert inf.watches == 4 and inf.lists == 1
    with_informer(body, seed=(pod("a"),))


def test_resync_redelivers_every_object_as_an_update() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        rec.calls.clear()
        await timers.run_for(29)
        assert rec.calls == []
        await timers.run_for(1)
        assert sorted(rec.kinds()) == [("update", "default/a"), ("update", "default/b")]
        await timers.run_for(30)
        assert len(rec.calls) == 4
    with_informer(body, seed=(pod("a"), pod("b")), resync_period=30)


def test_bookmarks_advance_the_resource_version() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        before = inf.resource_version
        await fake.create(core_pb2.Namespace(metadata={"name": "x"}))  # moves the revision, no pod event
        fake.send_bookmarks()
        await timers.idle()
        assert int(inf.resource_version) > int(before) and rec.calls == [("add", "default/a", "2")]
    with_informer(body, seed=(pod("a"),))


def test_late_handlers_get_the_cache_and_a_failing_handler_harms_nobody() -> None:
    async def body(fake: FakeApi, inf: SharedInformer, rec: Recorder, timers: FakeTimers) -> None:
        late = Recorder()

        def boom(obj: Message) -> None:
            raise RuntimeError("handler bug")

        inf.add_handler(on_add=boom)
        inf.add_handler(late.add, late.update, late.delete)
        assert late.kinds() == [("add", "default/a")]
        await fake.create(pod("b"))
        await timers.idle()
        assert late.kinds()[-1] == ("add", "default/b") and rec.kinds()[-1] == ("add", "default/b")
    with_informer(body, seed=(pod("a"),))


def test_selectors_and_namespace_are_passed_to_the_server() -> None:
    async def main() -> None:
        fake = FakeApi()
        fake.seed(pod("a", labels={"app": "web"}), pod("b", labels={"app": "db"}),
                  pod("c", ns="other", labels={"app": "web"}))
        inf = SharedInformer(fake, "pods", namespace="default", label_selector="app=web")
        inf.start()
        assert await inf.wait_for_sync(5)
        assert inf.keys() == ["default/a"]
        await fake.patch("pods", "a", {"metadata": {"labels": {"app": "db"}}})  # leaves the selector
        for _ in range(10):
            await asyncio.sleep(0)
        assert inf.keys() == []
        await inf.stop()
        assert not inf.running
    asyncio.run(main())


def test_factory_shares_one_informer_per_query() -> None:
    async def main() -> None:
        fake = FakeApi()
        fake.seed(pod("a"))
        factory = InformerFactory(fake)
        pods = factory.informer("pods")
        assert factory.informer("po") is pods
        assert factory.informer("pods", label_selector="app=x") is not pods
        nodes = factory.informer("nodes", namespace="ignored")  # cluster-scoped: no namespace
        assert nodes.namespace == "" and factory.informer("nodes") is nodes
        assert not await factory.wait_for_sync(0.01)  # not started yet
        factory.start()
        assert await factory.wait_for_sync(5)
        assert pods.keys() == ["default/a"] and nodes.keys() == []
        assert [a for a in fake.actions if a[0] == "list"] == [("list", "pods", "", ""), ("list", "pods", "", ""),
                                                                ("list", "nodes", "", "")]
        await factory.stop()
        assert not any(i.running for i in factory.informers)
    asyncio.run(main())
