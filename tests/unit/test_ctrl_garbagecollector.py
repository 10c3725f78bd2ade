"""Garbage collector: Background (owner gone), dangling references, Foreground, Orphan."""
from __future__ import annotations

from controlplane.controllers import podutil
from controlplane.controllers.garbagecollector import FOREGROUND, ORPHAN, GarbageCollector
from protos.skiff.api.v1 import apps_pb2, core_pb2
from tests.ctrl_more_util import Env, run


def rs(name: str = "web") -> apps_pb2.ReplicaSet:
    r = apps_pb2.ReplicaSet()
    r.metadata.name, r.metadata.namespace = name, "default"
    r.spec.template.spec.containers.add(name="c", image="busybox")
    return r


def owned_pod(name: str, owner: apps_pb2.ReplicaSet | None = None, block: bool = True) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, "default"
    p.spec.containers.add(name="c", image="busybox")
    if owner is not None:
        ref = podutil.controller_ref(owner)
        ref.block_owner_deletion = block
        p.metadata.owner_references.append(ref)
    return p


def test_dependents_of_a_missing_owner_are_deleted_background() -> None:
    async def body(env: Env) -> None:
        owner = env.seed(rs())[0]
        assert isinstance(owner, apps_pb2.ReplicaSet)
        env.seed(owned_pod("a", owner), owned_pod("b", owner), owned_pod("free"))
        gc = GarbageCollector(env.ctx)
        await env.start()
        await gc.sync("pods|default/a")
        assert env.writes() == []  # owner present
        await env.api.delete("replicasets", "web", "default")
        await env.settle()
        assert {"pods|default/a", "pods|default/b"} <= gc.queue._dirty  # owner's delete enqueued them
        env.api.clear_actions()
        await gc.sync("pods|default/a")
        await gc.sync("pods|default/b")
        await gc.sync("pods|default/free")
        assert sorted(a[3] for a in env.writes("pods", "delete")) == ["a", "b"]
    run(body)


def test_owner_with_another_uid_counts_as_gone_and_cache_miss_is_confirmed_live() -> None:
    async def body(env: Env) -> None:
        owner = rs()
        owner.metadata.uid = "old-uid"
        p = owned_pod("a", owner)
        env.seed(rs(), p)  # a new "web" with a different uid
        gc = GarbageCollector(env.ctx)
        await env.start()
        await gc.sync("pods|default/a")
        assert ("get", "replicasets", "default", "web") in env.api.actions
        assert env.writes("pods", "delete") == [("delete", "pods", "default", "a")]
    run(body)


def test_dangling_reference_is_removed_when_another_owner_remains() -> None:
    async def body(env: Env) -> None:
        alive = env.seed(rs("alive"))[0]
        gone = rs("gone")
        gone.metadata.uid = "gone-uid"
        p = owned_pod("a", alive)  # type: ignore[arg-type]
        extra = podutil.controller_ref(gone)
        extra.controller = False
        p.metadata.owner_references.append(extra)
        env.seed(p)
        gc = GarbageCollector(env.ctx)
        await env.start()
        await gc.sync("pods|default/a")
        assert env.writes("pods") == [("patch", "pods", "default", "a")]
        refs = env.api.stored("pods", "a", "default").metadata.owner_references  # type: ignore[union-attr]
        assert [r.name for r in refs] == ["alive"]
    run(body)


def test_foreground_deletes_dependents_then_removes_the_finalizer() -> None:
    async def body(env: Env) -> None:
        owner = env.seed(rs())[0]
        assert isinstance(owner, apps_pb2.ReplicaSet)
        env.seed(owned_pod("a", owner), owned_pod("b", owner, block=False))
        gc = GarbageCollector(env.ctx)
        await env.start()
        await env.api.delete("replicasets", "web", "default", propagation_policy="Foreground")
        await env.settle()
        stored = env.api.stored("replicasets", "web", "default")
        assert stored is not None and FOREGROUND in stored.metadata.finalizers
        env.api.clear_actions()
        await gc.sync("replicasets|default/web")
        assert sorted(a[3] for a in env.writes("pods", "delete")) == ["a", "b"]
        assert env.writes("replicasets") == []  # "a" blocks until it is gone
        await env.settle()
        env.api.clear_actions()
        await gc.sync("replicasets|default/web")
        assert env.writes("replicasets") == [("update", "replicasets", "default", "web")]
        assert env.api.stored("replicasets", "web", "default") is None
    run(body)


def test_foreground_waits_for_a_dependent_that_is_terminating() -> None:
    async def body(env: Env) -> None:
        owner = env.seed(rs())[0]
        p = owned_pod("a", owner)  # type: ignore[arg-type]
        p.spec.node_name = "n1"  # bound: its deletion waits for the agent
        env.seed(p)
        gc = GarbageCollector(env.ctx)
        await env.start()
        await env.api.delete("replicasets", "web", "default", propagation_policy="Foreground")
        await env.settle()
        await gc.sync("replicasets|default/web")
        await env.settle()
        env.api.clear_actions()
        await gc.sync("replicasets|default/web")
        assert env.writes() == []  # a is terminating: not deleted twice, owner still waits
        await env.api.delete("pods", "a", "default", grace_period_seconds=0)  # the agent finishes
        await env.settle()
        assert "replicasets|default/web" in gc.queue._dirty
        await gc.sync("replicasets|default/web")
        assert env.api.stored("replicasets", "web", "default") is None
    run(body)


def test_orphan_removes_references_then_the_finalizer() -> None:
    async def body(env: Env) -> None:
        owner = env.seed(rs())[0]
        env.seed(owned_pod("a", owner))  # type: ignore[arg-type]
        gc = GarbageCollector(env.ctx)
        await env.start()
        await env.api.delete("replicasets", "web", "default", propagation_policy="Orphan")
        await env.settle()
        stored = env.api.stored("replicasets", "web", "default")
        assert stored is not None and ORPHAN in stored.metadata.finalizers
        env.api.clear_actions()
        await gc.sync("replicasets|default/web")
        assert env.writes() == [("patch", "pods", "default", "a"), ("update", "replicasets", "default", "web")]
        assert env.api.stored("replicasets", "web", "default") is None
        pod = env.api.stored("pods", "a", "default")
        assert pod is not None and list(pod.metadata.owner_references) == []
        await env.settle()
        env.api.clear_actions()
        await gc.sync("pods|default/a")
        assert env.writes() == []
    run(body)


def test_orphan_and_foreground_see_dependents_the_cache_has_not_seen_yet() -> None:
    """A dependent created just before its owner's deletion may not be in the cache yet: orphaning
    must still free it (not leave it to be collected), and a foreground owner must still wait."""
    async def body(env: Env) -> None:
        orphan_owner, fg_owner = env.seed(rs("or"), rs("fg"))
        env.seed(owned_pod("late", orphan_owner), owned_pod("fg-late", fg_owner))  # type: ignore[arg-type]
        gc = GarbageCollector(env.ctx)
        await env.start()
        gc.watched["pods"].store.delete("default/late")  # the pods cache lags behind the API
        gc.watched["pods"].store.delete("default/fg-late")
        await env.api.delete("replicasets", "or", "default", propagation_policy="Orphan")
        await env.api.delete("replicasets", "fg", "default", propagation_policy="Foreground")
        await env.settle()
        gc.watched["pods"].store.delete("default/late")
        gc.watched["pods"].store.delete("default/fg-late")
        await gc.sync("replicasets|default/or")
        pod = env.api.stored("pods", "late", "default")
        assert pod is not None and list(pod.metadata.owner_references) == []
        assert env.api.stored("replicasets", "or", "default") is None
        await gc.sync("replicasets|default/fg")
        stored = env.api.stored("replicasets", "fg", "default")
        assert stored is not None and FOREGROUND in stored.metadata.finalizers  # still waits for fg-late
    run(body)


def test_unknown_owner_kinds_are_never_collected() -> None:
    async def body(env: Env) -> None:
        p = owned_pod("a")
        p.metadata.owner_references.add(api_version="example.com/v1", kind="Widget", name="w", uid="w-1")
        env.seed(p)
        gc = GarbageCollector(env.ctx)
        await env.start()
        await gc.sync("pods|default/a")
        assert env.writes() == []
    run(body)
