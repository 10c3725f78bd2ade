"""Informers and leader election against a real store and API server processes on loopback.

The API servers keep a watch cache of only 5 events, so a watch from an older resourceVersion
is answered with Gone and the informer must relist.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Iterator

import pytest
from google.protobuf.message import Message

from controlplane.client.api import ApiClient, WatchEvent
from controlplane.client.informer import NODE_INDEX, SharedInformer, node_name_index, object_key
from controlplane.client.leaderelection import LeaderElector
from controlplane.client.timeutil import parse_time
from protos.skiff.api.v1 import core_pb2
from tests.apiutil import ApiEnv

HANG = 20.0  # generous: these bound waits for things that take well under a second


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    e = ApiEnv(tmp_path_factory.mktemp("informer-live"), "skiff",
               server_args=("--no-auth", "--watch-cache-size", "5", "--bookmark-interval", "0.3"), servers=2)
    e.start()
    yield e
    e.stop()


def pod(name: str, ns: str) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, ns
    p.spec.containers.add(name="c", image="busybox:1.36")
    return p


async def make_namespace(client: ApiClient, name: str) -> None:
    ns = core_pb2.Namespace()
    ns.metadata.name = name
    await client.create(ns)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def _note(self, what: str, obj: Message) -> None:
        self.calls.append((what, object_key(obj)))
        self.changed.set()

    def attach(self, inf: SharedInformer) -> None:
        inf.add_handler(lambda o: self._note("add", o), lambda old, new: self._note("update", new),
                        lambda o: self._note("delete", o))


async def eventually(check: Any, what: str, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_informer_follows_creates_updates_deletes_and_indexes_by_node(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        await make_namespace(client, "inf-basic")
        await client.create(pod("a", "inf-basic"))
        inf = SharedInformer(client, "pods", namespace="inf-basic")
        inf.add_index(NODE_INDEX, node_name_index)
        rec = Recorder()
        rec.attach(inf)
        inf.start()
        try:
            assert await inf.wait_for_sync(HANG)
            assert rec.calls == [("add", "inf-basic/a")]
            await client.create(pod("b", "inf-basic"))
            await client.bind("inf-basic", "b", "node-1")
            await client.patch("pods", "a", {"metadata": {"labels": {"tier": "web"}}}, namespace="inf-basic")
            await client.delete("pods", "a", namespace="inf-basic")
            await eventually(lambda: ("delete", "inf-basic/a") in rec.calls, "the delete")
            assert rec.calls == [("add", "inf-basic/a"), ("add", "inf-basic/b"), ("update", "inf-basic/b"),
                                 ("update", "inf-basic/a"), ("delete", "inf-basic/a")]
            assert [p.metadata.name for p in inf.by_index(NODE_INDEX, "node-1")] == ["b"]  # type: ignore[attr-defined]
            assert inf.keys() == ["inf-basic/b"] and inf.lists == 1
        finally:
            await inf.stop()
    env.run(body)


class GatedClient:
    """The real client, whose next watch waits until `gate` opens (a slow reconnect)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.gate = asyncio.Event()
        self.gate.set()
        self.list = client.list

    async def watch(self, *args: Any, **kw: Any) -> AsyncIterator[WatchEvent]:
        await self.gate.wait()
        async for event in self.client.watch(*args, **kw):
            yield event


def test_a_too_old_watch_makes_the_informer_relist_and_see_deletions(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        await make_namespace(client, "inf-gone")
        for name in ("keep", "drop"):
            await client.create(pod(name, "inf-gone"))
        gated = GatedClient(client)
        gated.gate.clear()  # the informer lists, then its watch is held back
        inf = SharedInformer(gated, "pods", namespace="inf-gone")  # type: ignore[arg-type]
        rec = Recorder()
        rec.attach(inf)
        inf.start()
        try:
            assert await inf.wait_for_sync(HANG)
            await client.delete("pods", "drop", namespace="inf-gone")
            for i in range(8):  # more events than the server's watch cache holds
                await client.create(pod(f"new-{i}", "inf-gone"))
            gated.gate.set()
            await eventually(lambda: len(inf.keys()) == 9, "the relisted state")
            assert inf.lists == 2 and inf.watches >= 2
            assert ("delete", "inf-gone/drop") in rec.calls
            assert sorted(inf.keys()) == sorted(["inf-gone/keep"] + [f"inf-gone/new-{i}" for i in range(8)])
            await client.create(pod("after", "inf-gone"))  # and it follows the watch again
            await eventually(lambda: inf.get("inf-gone/after") is not None, "a create after the relist")
        finally:
            await inf.stop()
    env.run(body)


def test_an_api_server_restart_breaks_the_stream_and_the_informer_recovers(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        other = env.client(1)  # a second API server stays up while the first restarts
        try:
            await make_namespace(other, "inf-restart")
            await other.create(pod("a", "inf-restart"))
            inf = SharedInformer(client, "pods", namespace="inf-restart", backoff_max=1.0)
            rec = Recorder()
            rec.attach(inf)
            inf.start()
            assert await inf.wait_for_sync(HANG)
            server = env.servers[0]
            await asyncio.to_thread(server.stop)
            await other.delete("pods", "a", namespace="inf-restart")
            await other.create(pod("b", "inf-restart"))
            await asyncio.to_thread(server.start, 60)
            await eventually(lambda: inf.keys() == ["inf-restart/b"], "the state after the restart")
            assert inf.lists >= 2 and ("delete", "inf-restart/a") in rec.calls
            await inf.stop()
        finally:
            await other.close()
    env.run(body)


def test_two_leader_electors_one_leads_and_the_other_takes_over_after_expiry(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        second = env.client(1)

        def elector(c: ApiClient, who: str) -> LeaderElector:
            return LeaderElector(c, "kube-system", "live-election", who, lease_duration=2.0,
                                 renew_deadline=1.5, retry_period=0.2)
        a, b = elector(client, "a"), elector(second, "b")
        ta = asyncio.create_task(a.run())
        try:
            await eventually(lambda: a.is_leader, "a to lead")
            tb = asyncio.create_task(b.run())
            await asyncio.sleep(3.0)  # longer than the lease: a keeps renewing, b stays out
            assert a.is_leader and not b.is_leader and b.leader == "a"
            ta.cancel()
            await asyncio.gather(ta, return_exceptions=True)
            last: Any = await client.get("leases", "live-election", "kube-system")
            assert last.spec.holder_identity == "a"
            await eventually(lambda: b.is_leader, "b to take over")
            now: Any = await client.get("leases", "live-election", "kube-system")
            assert now.spec.holder_identity == "b" and now.spec.lease_transitions == 1
            # b judged expiry by its own observation, which came after a's last renewal:
            assert parse_time(now.spec.acquire_time) - parse_time(last.spec.renew_time) >= 2.0
            tb.cancel()
            await asyncio.gather(tb, return_exceptions=True)
        finally:
            await second.close()
    env.run(body)


def test_a_released_lease_is_taken_over_without_waiting_for_expiry(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        second = env.client(1)
        try:
            a = LeaderElector(client, "kube-system", "live-release", "a", 30.0, 20.0, 0.2, release_on_cancel=True)
            b = LeaderElector(second, "kube-system", "live-release", "b", 30.0, 20.0, 0.2)
            ta = asyncio.create_task(a.run())
            await eventually(lambda: a.is_leader, "a to lead")
            tb = asyncio.create_task(b.run())
            await asyncio.sleep(0.5)
            ta.cancel()
            await asyncio.gather(ta, return_exceptions=True)
            released = time.monotonic()
            await eventually(lambda: b.is_leader, "b to take over", timeout=HANG)
            assert time.monotonic() - released < 30.0  # long before the 30 s lease would expire
            tb.cancel()
            await asyncio.gather(tb, return_exceptions=True)
        finally:
            await second.close()
    env.run(body)
