"""Namespace controller: a terminating namespace is emptied, then its finalizer removed."""
from __future__ import annotations

from controlplane.client.timeutil import format_time
from controlplane.controllers.namespace import NamespaceController
from protos.skiff.api.v1 import core_pb2
from tests.ctrl_more_util import T0, Env, run


def namespace(name: str, deleting: bool) -> core_pb2.Namespace:
    """As the API server leaves it; phase Terminating already set on delete (FakeApi would
    remove a finalizer-less namespace on a status write, which the real server does not)."""
    ns = core_pb2.Namespace()
    ns.metadata.name = name
    ns.spec.finalizers.append("kubernetes")
    ns.status.phase = "Active"
    if deleting:
        ns.metadata.deletion_timestamp = format_time(T0)
        ns.status.phase = "Terminating"
    return ns


def pod(name: str, ns: str, node: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, ns
    p.spec.node_name = node
    p.spec.containers.add(name="c", image="busybox")
    return p


def config_map(name: str, ns: str) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name, cm.metadata.namespace = name, ns
    return cm


def test_active_namespace_is_left_alone() -> None:
    async def body(env: Env) -> None:
        env.seed(namespace("keep", False), pod("a", "keep"))
        c = NamespaceController(env.ctx)
        await env.start()
        await c.sync("keep")
        assert env.writes() == [] and not [a for a in env.api.actions if a[0] == "list" and a[2] == "keep"]
    run(body)


def test_terminating_namespace_is_emptied_then_finalized() -> None:
    async def body(env: Env) -> None:
        env.seed(namespace("gone", True), pod("a", "gone"), pod("bound", "gone", node="n1"),
                 config_map("cfg", "gone"), pod("other", "default"))
        c = NamespaceController(env.ctx, recheck=2.0)
        await env.start()
        await c.sync("gone")
        deleted = sorted((a[1], a[3]) for a in env.writes(verb="delete"))
        assert deleted == [("configmaps", "cfg"), ("pods", "a"), ("pods", "bound")]
        assert c.queue.waiting().get("gone") is not None  # the bound pod is still terminating
        stored = env.api.stored("namespaces", "gone")
        assert stored is not None and stored.status.phase == "Terminating"
        env.api.clear_actions()
        await env.settle()
        await c.sync("gone")
        assert env.writes() == []  # nothing deleted twice; still waiting
        await env.api.delete("pods", "bound", "gone", grace_period_seconds=0)  # the agent finishes
        await env.settle()
        await c.sync("gone")
        assert env.writes() == [("delete", "pods", "gone", "bound"), ("update", "namespaces", "", "gone")]
        assert env.api.stored("namespaces", "gone") is None
        assert env.api.stored("pods", "other", "default") is not None
    run(body)
