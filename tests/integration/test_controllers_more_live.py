"""DaemonSet, StatefulSet, garbage collector, namespace, endpoints and node lifecycle controllers,
run in-process against a real store and API server on loopback (no scheduler, no node agents:
the tests play the agents' part - pod status, leases, finishing graceful deletions)."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from controlplane.client.api import ApiClient, NotFoundError
from controlplane.client.informer import InformerFactory
from controlplane.client.timeutil import format_micro_time, format_time
from controlplane.controllers import podutil
from controlplane.controllers.base import Controller, ControllerContext
from controlplane.controllers.daemonset import DaemonSetController
from controlplane.controllers.endpoints import EndpointsController
from controlplane.controllers.garbagecollector import GarbageCollector
from controlplane.controllers.namespace import NamespaceController
from controlplane.controllers.nodelifecycle import UNREACHABLE, NodeLifecycleController, ready_status
from controlplane.controllers.statefulset import StatefulSetController
from protos.skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2
from tests.apiutil import ApiEnv, obj

HANG = 30.0  # generous: bounds waits for things that take well under a second


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    e = ApiEnv(tmp_path_factory.mktemp("controllers-more"), "skiff")
    e.start()
    yield e
    e.stop()


@contextlib.asynccontextmanager
async def running(client: ApiClient, *makers: Callable[[ControllerContext], Controller]
                  ) -> AsyncIterator[list[Controller]]:
    ctx = ControllerContext(client, InformerFactory(client))
    controllers = [make(ctx) for make in makers]
    ctx.informers.start()
    assert await ctx.informers.wait_for_sync(HANG)
    tasks = [asyncio.create_task(c.run(workers=2)) for c in controllers]
    try:
        yield controllers
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ctx.informers.stop()


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = HANG) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def make_ns(client: ApiClient, name: str) -> None:
    await client.create(obj(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}"))


async def pods_in(client: ApiClient, ns: str) -> list[core_pb2.Pod]:
    return list((await client.list("pods", ns)).items)  # type: ignore[arg-type]


async def exists(client: ApiClient, resource: str, name: str, ns: str = "") -> bool:
    try:
        await client.get(resource, name, ns)
        return True
    except NotFoundError:
        return False


async def set_ready(client: ApiClient, pod: core_pb2.Pod, ready: bool = True, ip: str = "") -> None:
    """What a node agent reports: Running, the Ready condition, the pod IP."""
    fresh = await client.get("pods", pod.metadata.name, pod.metadata.namespace)
    assert isinstance(fresh, core_pb2.Pod)
    fresh.status.phase = "Running"
    del fresh.status.conditions[:]
    fresh.status.conditions.add(type="Ready", status="True" if ready else "False",
                                last_transition_time=format_time(time.time()))
    if ip:
        fresh.status.pod_ip = ip
    await client.update_status(fresh)


async def make_node(client: ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    node = core_pb2.Node()
    node.metadata.name = name
    node.metadata.labels.update(labels or {})
    made = await client.create(node)
    made.status.conditions.add(type="Ready", status="True", last_heartbeat_time=format_time(time.time()))
    await client.update_status(made)


def test_daemonset_follows_nodes_added_and_removed(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        await make_ns(client, "it-ds")
        await make_node(client, "ds-a", {"it": "ds"})
        ds = obj("""
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: it-ds}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {it: ds}
      containers: [{name: c, image: busybox:1.36}]
""")
        await client.create(ds)
        async with running(client, DaemonSetController):
            async def on_nodes() -> list[str]:
                return sorted(p.spec.node_name for p in await pods_in(client, "it-ds") if not p.metadata.deletion_timestamp)
            assert await eventually(lambda: _equals(on_nodes, ["ds-a"]), "a pod on ds-a")
            await make_node(client, "ds-b", {"it": "ds"})
            assert await eventually(lambda: _equals(on_nodes, ["ds-a", "ds-b"]), "a pod on the new node ds-b")
            await client.delete("nodes", "ds-b")
            assert await eventually(lambda: _equals(on_nodes, ["ds-a"]), "the pod of removed ds-b deleted")

            async def status_ok() -> bool:
                got = await client.get("daemonsets", "agent", "it-ds")
                assert isinstance(got, apps_pb2.DaemonSet)
                return got.status.desired_number_scheduled == 1 and got.status.current_number_scheduled == 1
            assert await eventually(status_ok, "DaemonSet status")
        await client.delete("nodes", "ds-a")
    env.run(body)


async def _equals(fn: Callable[[], Awaitable[Any]], want: Any) -> bool:
    return bool(await fn() == want)


def test_statefulset_creates_in_order_with_stable_identity(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        await make_ns(client, "it-sts")
        await client.create(obj("""
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: it-sts}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: busybox:1.36, volumeMounts: [{name: data, mountPath: /data}]}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""))
        async with running(client, StatefulSetController):
            async def names() -> list[str]:
                return sorted(p.metadata.name for p in await pods_in(client, "it-sts"))
            for i in range(3):
                assert await eventually(lambda: _equals(names, [f"db-{j}" for j in range(i + 1)]), f"db-{i} only")
                await asyncio.sleep(0.3)
                assert await names() == [f"db-{j}" for j in range(i + 1)], "made the next before this was Ready"
                pod = await client.get("pods", f"db-{i}", "it-sts")
                assert isinstance(pod, core_pb2.Pod)
                assert (pod.spec.hostname, pod.spec.subdomain) == (f"db-{i}", "db")
                assert pod.spec.volumes[0].host_path.path == f"/var/lib/skiff/statefulsets/it-sts/db-{i}/data"
                await set_ready(client, pod)
            # identity survives deletion: db-1 comes back as db-1
            old = await client.get("pods", "db-1", "it-sts")
            await client.delete("pods", "db-1", "it-sts")

            async def replaced() -> bool:
                try:
                    new = await client.get("pods", "db-1", "it-sts")
                except NotFoundError:
                    return False
                return new.metadata.uid != old.metadata.uid  # type: ignore[attr-defined]
            assert await eventually(replaced, "db-1 re-created under its name")
    env.run(body)


def _rs_yaml(name: str, ns: str) -> str:
    return f"""
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: c, image: busybox:1.36}}]}}
"""


async def _owner_with_pods(client: ApiClient, name: str, ns: str) -> apps_pb2.ReplicaSet:
    rs = await client.create(obj(_rs_yaml(name, ns)))
    assert isinstance(rs, apps_pb2.ReplicaSet)
    for i in range(2):
        await client.create(podutil.pod_from_template(rs.spec.template, rs, name=f"{name}-{i}"), ns)
    return rs


def test_cascading_deletion_background_foreground_orphan(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        ns = "it-gc"
        await make_ns(client, ns)
        async with running(client, GarbageCollector):
            async def names() -> list[str]:
                return sorted(p.metadata.name for p in await pods_in(client, ns))
            await _owner_with_pods(client, "bg", ns)
            await client.delete("replicasets", "bg", ns)
            assert await eventually(lambda: _equals(names, []), "background: dependents deleted")

            await _owner_with_pods(client, "fg", ns)
            _, gone = await client.delete("replicasets", "fg", ns, propagation_policy="Foreground")
            assert not gone  # kept until its dependents are gone

            async def owner_gone() -> bool:
                return not await exists(client, "replicasets", "fg", ns)
            assert await eventually(owner_gone, "foreground: owner deleted after its dependents")
            assert await names() == []

            await _owner_with_pods(client, "or", ns)
            await client.delete("replicasets", "or", ns, propagation_policy="Orphan")

            async def orphaned() -> bool:
                if await exists(client, "replicasets", "or", ns):
                    return False
                pods = await pods_in(client, ns)
                return len(pods) == 2 and all(not p.metadata.owner_references for p in pods)
            assert await eventually(orphaned, "orphan: owner gone, dependents kept without ownerReferences")
            await asyncio.sleep(0.5)
            assert await names() == ["or-0", "or-1"]
    env.run(body)


def test_namespace_deletion_empties_it_then_removes_it(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        await make_ns(client, "it-ns")
        await client.create(obj("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: it-ns}\ndata: {a: b}"))
        await client.create(obj("""
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: it-ns}
spec: {containers: [{name: c, image: busybox:1.36}]}
"""))
        async with running(client, lambda ctx: NamespaceController(ctx, recheck=0.2)):
            await client.delete("namespaces", "it-ns")
            ns = await client.get("namespaces", "it-ns")
            assert ns.status.phase == "Terminating"  # type: ignore[attr-defined]

            async def gone() -> bool:
                return not await exists(client, "namespaces", "it-ns")
            assert await eventually(gone, "namespace it-ns deleted")
            assert await pods_in(client, "it-ns") == []
            assert list((await client.list("configmaps", "it-ns")).items) == []
    env.run(body)


def test_endpoints_follow_pod_readiness(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        ns = "it-ep"
        await make_ns(client, ns)
        await client.create(obj(f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""))
        for i in range(2):
            await client.create(obj(f"""
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}, namespace: {ns}, labels: {{app: web}}}}
spec: {{containers: [{{name: c, image: busybox:1.36, ports: [{{name: http, containerPort: 808{i}}}]}}]}}
"""))
        async with running(client, EndpointsController):
            async def shape() -> tuple[list[tuple[str, int]], list[str]]:
                try:
                    ep = await client.get("endpoints", "web", ns)
                except NotFoundError:
                    return [], []
                assert isinstance(ep, core_pb2.Endpoints)
                ready = sorted((a.ip, s.ports[0].port) for s in ep.subsets for a in s.addresses)
                not_ready = sorted(a.ip for s in ep.subsets for a in s.not_ready_addresses)
                return ready, not_ready
            assert await eventually(lambda: _equals(shape, ([], [])), "empty endpoints")
            await set_ready(client, await client.get("pods", "web-0", ns), ip="10.9.0.1")  # type: ignore[arg-type]
            await set_ready(client, await client.get("pods", "web-1", ns), ready=False, ip="10.9.0.2")  # type: ignore[arg-type]
            assert await eventually(lambda: _equals(shape, ([("10.9.0.1", 8080)], ["10.9.0.2"])), "one ready, one not")
            await set_ready(client, await client.get("pods", "web-1", ns), ip="10.9.0.2")  # type: ignore[arg-type]
            assert await eventually(lambda: _equals(shape, ([("10.9.0.1", 8080), ("10.9.0.2", 8081)], [])),
                                    "both ready, named targetPort resolved per pod")
            await client.delete("services", "web", ns)
            assert await eventually(lambda: _not(exists(client, "endpoints", "web", ns)), "endpoints deleted")
    env.run(body)


async def _not(aw: Awaitable[bool]) -> bool:
    return not await aw


def test_node_lifecycle_taints_a_silent_node_and_evicts_after_toleration(env: ApiEnv) -> None:
    async def body(client: ApiClient) -> None:
        ns = "it-nl"
        await make_ns(client, ns)
        for name in ("nl-live", "nl-lost"):
            await make_node(client, name)
            lease = coordination_pb2.Lease()
            lease.metadata.name, lease.metadata.namespace = name, "kube-node-lease"
            lease.spec.holder_identity = name
            lease.spec.renew_time = format_micro_time(time.time())
            await client.create(lease)
        await client.create(obj(f"""
apiVersion: v1
kind: Pod
metadata: {{name: victim, namespace: {ns}}}
spec:
  nodeName: nl-lost
  containers: [{{name: c, image: busybox:1.36}}]
  tolerations:
  - {{key: {UNREACHABLE}, operator: Exists, effect: NoExecute, tolerationSeconds: 1}}
"""))

        async def keep_renewing() -> None:  # nl-live's agent; nl-lost's has died
            while True:
                lease = await client.get("leases", "nl-live", "kube-node-lease")
                lease.spec.renew_time = format_micro_time(time.time())  # type: ignore[attr-defined]
                await client.update(lease)
                await asyncio.sleep(0.2)
        renewer = asyncio.create_task(keep_renewing())
        started = time.monotonic()
        try:
            async with running(client, lambda ctx: NodeLifecycleController(ctx, grace_period=1.5)):
                async def tainted() -> bool:
                    node = await client.get("nodes", "nl-lost")
                    assert isinstance(node, core_pb2.Node)
                    return ready_status(node) == "Unknown" and any(
                        t.key == UNREACHABLE and t.effect == "NoExecute" for t in node.spec.taints)
                assert await eventually(tainted, "nl-lost Unknown and tainted unreachable")
                assert time.monotonic() - started >= 1.5

                async def evicted() -> bool:
                    pod = await client.get("pods", "victim", ns)
                    return bool(pod.metadata.deletion_timestamp)  # type: ignore[attr-defined]
                assert await eventually(evicted, "the pod marked for deletion after its toleration")
                live = await client.get("nodes", "nl-live")
                assert isinstance(live, core_pb2.Node)
                assert ready_status(live) == "True" and not live.spec.taints
                # the lost node is removed: its pod, whose agent will never finish it, is force-deleted
                await client.delete("nodes", "nl-lost")
                assert await eventually(lambda: _not(exists(client, "pods", "victim", ns)), "victim force-deleted")
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
            await client.delete("nodes", "nl-live")
    env.run(body)
