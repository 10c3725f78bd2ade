"""Node lifecycle: lease-based health, Unknown conditions, NoExecute taints, timed eviction,
force deletion of a deleted node's pods, and full-disruption mode."""
from __future__ import annotations

from controlplane.client.fake import copy_of
from controlplane.client.timeutil import format_micro_time, format_time
from controlplane.controllers import nodelifecycle as nl
from controlplane.controllers.nodelifecycle import NodeLifecycleController
from protos.skiff.api.v1 import coordination_pb2, core_pb2
from tests.ctrl_more_util import T0, Env, node, run

GRACE = 40.0


def lease(name: str, renew: float) -> coordination_pb2.Lease:
    lz = coordination_pb2.Lease()
    lz.metadata.name, lz.metadata.namespace = name, nl.NODE_LEASE_NAMESPACE
    lz.spec.holder_identity = name
    lz.spec.renew_time = format_micro_time(renew)
    return lz


def pod(name: str, node_name: str, seconds: int | None = 300, ns: str = "default") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = name, ns
    p.spec.node_name = node_name
    p.spec.containers.add(name="c", image="busybox")
    for key in (nl.NOT_READY, nl.UNREACHABLE):
        t = p.spec.tolerations.add(key=key, operator="Exists", effect="NoExecute")
        if seconds is not None:
            t.toleration_seconds = seconds
    return p


async def renew(env: Env, name: str) -> None:
    lz = env.api.stored("leases", name, nl.NODE_LEASE_NAMESPACE)
    lz.spec.renew_time = format_micro_time(env.wall.now())  # type: ignore[union-attr]
    await env.api.update(lz)
    await env.settle()


def taints(env: Env, name: str) -> list[tuple[str, str]]:
    n = env.api.stored("nodes", name)
    return [(t.key, t.effect) for t in n.spec.taints]  # type: ignore[union-attr]


def test_pure_eviction_delay() -> None:
    taint = core_pb2.Taint(key=nl.UNREACHABLE, effect="NoExecute", time_added=format_time(T0))
    assert nl.eviction_delay(pod("a", "n", 300), [taint], T0 + 100) == 200
    assert nl.eviction_delay(pod("a", "n", None), [taint], T0) is None  # tolerated forever
    assert nl.eviction_delay(pod("a", "n", 0), [taint], T0) == 0
    other = core_pb2.Taint(key="dedicated", effect="NoExecute", time_added=format_time(T0))
    assert nl.eviction_delay(pod("a", "n", 300), [taint, other], T0 + 5) == -5  # untolerated: now
    assert nl.eviction_delay(pod("a", "n", 300), [], T0) is None
    assert nl.desired_taint("True") is None and nl.desired_taint("False") == nl.NOT_READY
    assert nl.desired_taint("Unknown") == nl.UNREACHABLE


def test_silent_node_becomes_unknown_tainted_and_its_pods_evicted_after_toleration() -> None:
    async def body(env: Env) -> None:
        env.seed(node("n1"), node("n2"), lease("n1", T0), lease("n2", T0),
                 pod("web", "n1", seconds=30), pod("forever", "n1", seconds=None), pod("other", "n2"))
        c = NodeLifecycleController(env.ctx, grace_period=GRACE)
        await env.start()
        await c.sync("n1")
        await c.sync("n2")
        assert env.writes() == []
        assert "n1" in c.queue.waiting()  # re-checked when the grace would run out
        env.advance(GRACE - 1)
        await renew(env, "n2")
        await c.sync("n1")
        assert env.writes("nodes") == []
        env.advance(2)
        await c.sync("n1")
        await c.sync("n2")
        assert [a[0] for a in env.writes("nodes")] == ["update_status", "update"]
        n1 = env.api.stored("nodes", "n1")
        assert nl.ready_status(n1) == "Unknown"  # type: ignore[arg-type]
        assert taints(env, "n1") == [(nl.UNREACHABLE, "NoExecute")] and taints(env, "n2") == []
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/web")
        await c.sync("default/forever")
        assert env.writes("pods") == []
        assert c.queue.waiting().get("default/web") is not None
        env.advance(30)
        await c.sync("default/web")
        await c.sync("default/forever")
        assert env.writes("pods") == [("delete", "pods", "default", "web")]
        web = env.api.stored("pods", "web", "default")
        assert web is not None and web.metadata.deletion_timestamp  # only marked: the agent is gone
    run(body)


def test_node_reporting_not_ready_gets_not_ready_taint_and_loses_it_when_ready() -> None:
    async def body(env: Env) -> None:
        env.seed(node("n1", ready="False"), node("n2"), lease("n1", T0), lease("n2", T0))
        c = NodeLifecycleController(env.ctx, grace_period=GRACE)
        await env.start()
        await c.sync("n1")
        assert taints(env, "n1") == [(nl.NOT_READY, "NoExecute")]
        n1 = copy_of(env.api.stored("nodes", "n1"))
        n1.status.conditions[0].status = "True"  # type: ignore[union-attr]
        await env.api.update_status(n1)
        await env.settle()
        await c.sync("n1")
        assert taints(env, "n1") == []
    run(body)


def test_node_coming_back_loses_the_unreachable_taint() -> None:
    async def body(env: Env) -> None:
        env.seed(node("n1"), node("n2"), lease("n1", T0), lease("n2", T0))
        c = NodeLifecycleController(env.ctx, grace_period=GRACE)
        await env.start()
        await c.sync("n1")
        await c.sync("n2")
        env.advance(GRACE + 1)
        await renew(env, "n2")
        await c.sync("n1")
        await c.sync("n2")
        assert taints(env, "n1") == [(nl.UNREACHABLE, "NoExecute")]
        await env.settle()
        # the agent returns: renews its lease and posts Ready=True
        await renew(env, "n1")
        n1 = copy_of(env.api.stored("nodes", "n1"))
        n1.status.conditions[0].status = "True"  # type: ignore[union-attr]
        n1.status.conditions[0].last_heartbeat_time = format_time(env.wall.now())  # type: ignore[union-attr]
        await env.api.update_status(n1)
        await env.settle()
        await c.sync("n1")
        assert taints(env, "n1") == []
    run(body)


def test_full_disruption_taints_nothing_and_evicts_nothing() -> None:
    async def body(env: Env) -> None:
        env.seed(node("n1"), node("n2"), lease("n1", T0), lease("n2", T0), pod("web", "n1", seconds=0))
        c = NodeLifecycleController(env.ctx, grace_period=GRACE)
        await env.start()
        await c.sync("n1")
        await c.sync("n2")
        env.advance(GRACE + 1)
        await c.sync("n1")
        await env.settle()
        await c.sync("n2")
        await env.settle()
        assert c.full_disruption
        await c.sync("n1")
        assert taints(env, "n1") == [] and taints(env, "n2") == []
        await c.sync("default/web")
        assert env.writes("pods") == []
        assert nl.ready_status(env.api.stored("nodes", "n1")) == "Unknown"  # type: ignore[arg-type]
    run(body)


def test_deleted_node_has_its_pods_force_deleted() -> None:
    async def body(env: Env) -> None:
        env.seed(node("n1"), node("n2"), pod("db-0", "n1"), pod("x", "n2"))
        c = NodeLifecycleController(env.ctx, grace_period=GRACE)
        await env.start()
        await env.api.delete("pods", "db-0", "default")  # marked for deletion, never finished
        await env.api.delete("nodes", "n1")
        await env.settle()
        env.api.clear_actions()
        await c.sync("n1")
        assert env.writes("pods") == [("delete", "pods", "default", "db-0")]
        assert env.api.stored("pods", "db-0", "default") is None
        assert env.api.stored("pods", "x", "default") is not None
    run(body)
