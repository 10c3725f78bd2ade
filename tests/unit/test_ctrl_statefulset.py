"""StatefulSet controller: ordered creation, identity, storage, scale down, rolling update."""
from __future__ import annotations

from controlplane.client.fake import copy_of
from controlplane.controllers import statefulset
from controlplane.controllers.statefulset import StatefulSetController
from protos.skiff.api.v1 import apps_pb2, core_pb2
from tests.ctrl_more_util import Env, mark_ready, run

KEY = "default/db"


def sts(replicas: int = 3, policy: str = "", partition: int = 0, image: str = "busybox:1",
        strategy: str = "RollingUpdate") -> apps_pb2.StatefulSet:
    s = apps_pb2.StatefulSet()
    s.metadata.name, s.metadata.namespace = "db", "default"
    s.spec.replicas = replicas
    s.spec.service_name = "db-svc"
    s.spec.selector.match_labels["app"] = "db"
    s.spec.template.metadata.labels["app"] = "db"
    s.spec.template.spec.containers.add(name="c", image=image)
    s.spec.template.spec.volumes.add(name="data").empty_dir.medium = ""
    s.spec.pod_management_policy = policy
    s.spec.update_strategy.type = strategy
    s.spec.update_strategy.rolling_update.partition = partition
    claim = s.spec.volume_claim_templates.add()
    claim.metadata.name = "data"
    return s


def live_pods(env: Env) -> dict[str, core_pb2.Pod]:
    return {p.metadata.name: p for p in env.api._objects.values()  # type: ignore[misc]
            if isinstance(p, core_pb2.Pod) and not p.metadata.deletion_timestamp}


async def ready(env: Env, name: str) -> None:
    pod = env.api.stored("pods", name, "default")
    await env.api.update_status(mark_ready(copy_of(pod)))
    await env.settle()


async def step(env: Env, c: StatefulSetController) -> list[tuple[str, str]]:
    env.api.clear_actions()
    await c.sync(KEY)
    await env.settle()
    return [(a[0], a[3]) for a in env.writes("pods")]


async def bind_all(env: Env) -> None:
    """Pods need a node for graceful deletion to keep them around, as real ones do."""
    for name, pod in live_pods(env).items():
        if not pod.spec.node_name:
            await env.api.bind("default", name, "n1")
    await env.settle()


def test_ordered_ready_creates_one_at_a_time_with_identity_and_storage() -> None:
    async def body(env: Env) -> None:
        env.seed(sts())
        c = StatefulSetController(env.ctx)
        await env.start()
        assert await step(env, c) == [("create", "db-0")]
        assert await step(env, c) == []  # db-0 not Running+Ready yet
        pod = env.api.stored("pods", "db-0", "default")
        assert isinstance(pod, core_pb2.Pod)
        assert (pod.spec.hostname, pod.spec.subdomain) == ("db-0", "db-svc")
        assert pod.metadata.labels[statefulset.POD_NAME_LABEL] == "db-0"
        assert pod.metadata.labels[statefulset.POD_INDEX_LABEL] == "0"
        assert [v.name for v in pod.spec.volumes] == ["data"]
        assert pod.spec.volumes[0].host_path.path == "/var/lib/skiff/statefulsets/default/db-0/data"
        await ready(env, "db-0")
        assert await step(env, c) == [("create", "db-1")]
        await ready(env, "db-1")
        assert await step(env, c) == [("create", "db-2")]
        await ready(env, "db-2")
        assert await step(env, c) == []
        status = env.api.stored("statefulsets", "db", "default").status  # type: ignore[union-attr]
        assert (status.replicas, status.ready_replicas, status.updated_replicas, status.current_replicas) == (3, 3, 3, 3)
        assert status.current_revision == status.update_revision == statefulset.revision_name(sts())
    run(body)


def test_parallel_creates_all_at_once() -> None:
    async def body(env: Env) -> None:
        env.seed(sts(policy="Parallel"))
        c = StatefulSetController(env.ctx)
        await env.start()
        assert await step(env, c) == [("create", "db-0"), ("create", "db-1"), ("create", "db-2")]
    run(body)


async def _make_ready_set(env: Env, c: StatefulSetController, n: int) -> None:
    for i in range(n):
        await step(env, c)
        await ready(env, f"db-{i}")
    await bind_all(env)


def test_scale_down_in_reverse_one_at_a_time() -> None:
    async def body(env: Env) -> None:
        env.seed(sts())
        c = StatefulSetController(env.ctx)
        await env.start()
        await _make_ready_set(env, c, 3)
        s = env.api.stored("statefulsets", "db", "default")
        s.spec.replicas = 1  # type: ignore[union-attr]
        await env.api.update(s)
        await env.settle()
        assert await step(env, c) == [("delete", "db-2")]
        assert await step(env, c) == []  # db-2 is still terminating (graceful deletion)
        await env.api.delete("pods", "db-2", "default", grace_period_seconds=0)  # the agent finishes
        await env.settle()
        assert await step(env, c) == [("delete", "db-1")]
    run(body)


def test_a_pod_being_deleted_blocks_its_replacement() -> None:
    async def body(env: Env) -> None:
        env.seed(sts(replicas=2, policy="Parallel"))
        c = StatefulSetController(env.ctx)
        await env.start()
        await step(env, c)
        await bind_all(env)
        await env.api.delete("pods", "db-0", "default")  # graceful: stays with a deletionTimestamp
        await env.settle()
        assert await step(env, c) == []  # no second db-0 while the first exists
        await env.api.delete("pods", "db-0", "default", grace_period_seconds=0)
        await env.settle()
        assert await step(env, c) == [("create", "db-0")]
    run(body)


def test_rolling_update_from_the_top_down_to_the_partition() -> None:
    async def body(env: Env) -> None:
        env.seed(sts(partition=1))
        c = StatefulSetController(env.ctx)
        await env.start()
        await _make_ready_set(env, c, 3)
        await step(env, c)
        s = env.api.stored("statefulsets", "db", "default")
        s.spec.template.spec.containers[0].image = "busybox:2"  # type: ignore[union-attr]
        await env.api.update(s)
        await env.settle()
        assert await step(env, c) == [("delete", "db-2")]
        await env.api.delete("pods", "db-2", "default", grace_period_seconds=0)
        await env.settle()
        assert await step(env, c) == [("create", "db-2")]
        new_rev = statefulset.revision_name(s)  # type: ignore[arg-type]
        assert env.api.stored("pods", "db-2", "default").metadata.labels[statefulset.REVISION_HASH_LABEL] == new_rev  # type: ignore[union-attr]
        assert await step(env, c) == []  # waits for db-2 to be ready
        await ready(env, "db-2")
        await bind_all(env)
        assert await step(env, c) == [("delete", "db-1")]
        await env.api.delete("pods", "db-1", "default", grace_period_seconds=0)
        await env.settle()
        assert await step(env, c) == [("create", "db-1")]
        await ready(env, "db-1")
        assert await step(env, c) == []  # db-0 is below the partition: stays
        status = env.api.stored("statefulsets", "db", "default").status  # type: ignore[union-attr]
        assert status.updated_replicas == 2 and status.current_replicas == 1
        assert status.update_revision == new_rev != status.current_revision
    run(body)


def test_failed_pod_is_deleted_then_recreated() -> None:
    async def body(env: Env) -> None:
        env.seed(sts(replicas=1))
        c = StatefulSetController(env.ctx)
        await env.start()
        await step(env, c)
        pod = copy_of(env.api.stored("pods", "db-0", "default"))
        pod.status.phase = "Failed"  # type: ignore[union-attr]
        await env.api.update_status(pod)
        await env.settle()
        assert await step(env, c) == [("delete", "db-0")]  # unbound: gone at once
        assert await step(env, c) == [("create", "db-0")]
    run(body)


def test_plan_on_delete_strategy_does_not_update() -> None:
    s = sts(replicas=1, strategy="OnDelete")
    pod = mark_ready(statefulset.new_stateful_pod(s, 0, "db-old"))
    assert statefulset.plan(s, {0: pod}, statefulset.revision_name(s)).delete == []
    s.spec.update_strategy.type = "RollingUpdate"
    assert statefulset.plan(s, {0: pod}, statefulset.revision_name(s)).delete == [pod]


def test_ordinals_start() -> None:
    s = sts(replicas=2, policy="Parallel")
    s.spec.ordinals.start = 5
    assert statefulset.plan(s, {}, "r").create == [5, 6]
    assert statefulset.ordinal_of("db", "db-12") == 12 and statefulset.ordinal_of("db", "dbx-1") is None
