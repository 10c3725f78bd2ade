"""DaemonSet controller: node eligibility, creation per node, removal, rolling update, status."""
from __future__ import annotations

from controlplane.client.api import ConflictError
from controlplane.client.fake import copy_of
from controlplane.controllers import daemonset, podutil
from controlplane.controllers.daemonset import DaemonSetController, node_should_run
from protos.skiff.api.v1 import apps_pb2, core_pb2
from tests.ctrl_more_util import Env, mark_ready, node, run


def ds(name: str = "agent", image: str = "busybox:1", selector: dict[str, str] | None = None,
       max_unavailable: int | str | None = None, strategy: str = "RollingUpdate") -> apps_pb2.DaemonSet:
    d = apps_pb2.DaemonSet()
    d.metadata.name, d.metadata.namespace = name, "default"
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="c", image=image)
    d.spec.template.spec.node_selector.update(selector or {})
    d.spec.update_strategy.type = strategy
    if isinstance(max_unavailable, int):
        d.spec.update_strategy.rolling_update.max_unavailable.int_val = max_unavailable
    elif isinstance(max_unavailable, str):
        d.spec.update_strategy.rolling_update.max_unavailable.str_val = max_unavailable
    return d


def pods_of(env: Env) -> list[core_pb2.Pod]:
    return [p for p in env.api._objects.values() if isinstance(p, core_pb2.Pod)]  # type: ignore[misc]


def test_node_should_run_table() -> None:
    d = ds(selector={"role": "edge"})
    pod = daemonset.new_daemon_pod(d, "h")
    assert node_should_run(node("a", {"role": "edge"}), pod) == (True, True)
    assert node_should_run(node("b"), pod) == (False, False)
    assert node_should_run(node("c", {"role": "edge"}, [("dedicated", "NoSchedule")]), pod) == (False, True)
    assert node_should_run(node("d", {"role": "edge"}, [("dedicated", "NoExecute")]), pod) == (False, False)
    # tolerated by the daemon tolerations Kubernetes adds
    for key, effect in [("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/not-ready", "NoExecute"),
                        ("node.kubernetes.io/unschedulable", "NoSchedule"), ("node.kubernetes.io/disk-pressure", "NoSchedule")]:
        assert node_should_run(node("e", {"role": "edge"}, [(key, effect)]), pod) == (True, True), key
    assert node_should_run(node("f", {"role": "edge"}, [("x", "PreferNoSchedule")]), pod) == (True, True)


def test_node_affinity_match_fields() -> None:
    d = ds()
    term = d.spec.template.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms.add()
    term.match_fields.add(key="metadata.name", operator="In", values=["n2"])
    pod = daemonset.new_daemon_pod(d, "h")
    assert node_should_run(node("n1"), pod) == (False, False)
    assert node_should_run(node("n2"), pod) == (True, True)


def test_creates_one_pod_per_eligible_node_bound_by_node_name() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(selector={"role": "edge"}), node("n1", {"role": "edge"}), node("n2", {"role": "edge"}), node("n3"))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        assert env.writes("pods") == [("create", "pods", "default", ""), ("create", "pods", "default", "")]
        pods = pods_of(env)
        assert sorted(p.spec.node_name for p in pods) == ["n1", "n2"]
        for p in pods:
            assert p.metadata.owner_references[0].kind == "DaemonSet"
            assert p.metadata.labels[daemonset.REVISION_HASH_LABEL]
            assert any(t.key == "node.kubernetes.io/unreachable" and not t.HasField("toleration_seconds")
                       for t in p.spec.tolerations)
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")  # nothing more to do
        assert env.writes("pods") == []
        status = env.api.stored("daemonsets", "agent", "default").status  # type: ignore[union-attr]
        assert (status.desired_number_scheduled, status.current_number_scheduled, status.number_ready) == (2, 2, 0)
    run(body)


def test_expectations_hold_back_a_second_create_while_the_cache_lags() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(), node("n1"))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        try:
            await c.sync("default/agent")  # no settle: the cache has not seen the pod yet
        except ConflictError:
            pass  # its status write is stale too: retried with backoff by the worker loop
        assert len(env.writes("pods", "create")) == 1
    run(body)


def test_new_node_gets_a_pod_and_removed_or_relabelled_nodes_lose_it() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(selector={"role": "edge"}), node("n1", {"role": "edge"}))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        await env.api.create(node("n2", {"role": "edge"}))
        await env.settle()
        assert "default/agent" in c.queue._dirty  # a node event enqueues every DaemonSet
        env.api.clear_actions()
        await c.sync("default/agent")
        assert len(env.writes("pods", "create")) == 1
        await env.settle()
        n1 = env.api.stored("nodes", "n1")
        n1.metadata.labels["role"] = "core"  # type: ignore[union-attr]
        await env.api.update(n1)
        await env.api.delete("nodes", "n2")
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")
        assert sorted(a[0] for a in env.writes("pods")) == ["delete", "delete"]
        await env.settle()
        status = env.api.stored("daemonsets", "agent", "default").status  # type: ignore[union-attr]
        assert status.desired_number_scheduled == 0
    run(body)


def test_untolerated_no_execute_taint_evicts_but_no_schedule_does_not() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(), node("n1"), node("n2"))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        await env.settle()
        for name, effect in (("n1", "NoSchedule"), ("n2", "NoExecute")):
            n = env.api.stored("nodes", name)
            n.spec.taints.add(key="maintenance", effect=effect)  # type: ignore[union-attr]
            await env.api.update(n)
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")
        deleted = [a[3] for a in env.writes("pods", "delete")]
        assert len(deleted) == 1
        remaining = [p.spec.node_name for p in pods_of(env) if not p.metadata.deletion_timestamp]
        assert remaining == ["n1"]
        await env.settle()
        await c.sync("default/agent")
        # n1 keeps its pod but may not get a new one: counted misscheduled, as Kubernetes does
        status = env.api.stored("daemonsets", "agent", "default").status  # type: ignore[union-attr]
        assert status.number_misscheduled == 1 and status.desired_number_scheduled == 0
    run(body)


def test_failed_pod_is_replaced() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(), node("n1"))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        await env.settle()
        pod = pods_of(env)[0]
        pod = copy_of(pod)
        pod.status.phase = "Failed"
        await env.api.update_status(pod)
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")
        assert sorted(a[0] for a in env.writes("pods")) == ["create", "delete"]
    run(body)


async def _ready_all(env: Env) -> None:
    for p in pods_of(env):
        await env.api.update_status(mark_ready(copy_of(p)))
    await env.settle()


def test_rolling_update_respects_max_unavailable() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(max_unavailable=1), node("n1"), node("n2"), node("n3"))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        await env.settle()
        await _ready_all(env)
        d = env.api.stored("daemonsets", "agent", "default")
        d.spec.template.spec.containers[0].image = "busybox:2"  # type: ignore[union-attr]
        await env.api.update(d)
        await env.settle()
        new_hash = podutil.template_hash(d.spec.template)  # type: ignore[union-attr]
        env.api.clear_actions()
        await c.sync("default/agent")
        assert [a[0] for a in env.writes("pods")] == ["delete"]  # one at a time
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")  # the emptied node gets a new-template pod; nothing else goes
        assert [a[0] for a in env.writes("pods")] == ["create"]
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")  # the new pod is not ready yet: wait
        assert env.writes("pods") == []
        await _ready_all(env)
        env.api.clear_actions()
        await c.sync("default/agent")
        assert [a[0] for a in env.writes("pods")] == ["delete"]
        hashes = sorted(p.metadata.labels[daemonset.REVISION_HASH_LABEL] for p in pods_of(env))
        assert hashes.count(new_hash) == 1
    run(body)


def test_on_delete_strategy_leaves_old_pods() -> None:
    async def body(env: Env) -> None:
        env.seed(ds(strategy="OnDelete"), node("n1"))
        c = DaemonSetController(env.ctx)
        await env.start()
        await c.sync("default/agent")
        await env.settle()
        d = env.api.stored("daemonsets", "agent", "default")
        d.spec.template.spec.containers[0].image = "busybox:2"  # type: ignore[union-attr]
        await env.api.update(d)
        await env.settle()
        env.api.clear_actions()
        await c.sync("default/agent")
        assert env.writes("pods") == []
        status = env.api.stored("daemonsets", "agent", "default").status  # type: ignore[union-attr]
        assert status.updated_number_scheduled == 0 and status.observed_generation == 2
    run(body)


def test_max_unavailable_percentages() -> None:
    d = ds(max_unavailable="25%")
    assert daemonset.max_unavailable(d, 10) == 3  # rounded up
    assert daemonset.max_unavailable(ds(max_unavailable=0), 10) == 1
    assert daemonset.max_unavailable(ds(), 10) == 1
