"""The API server end to end: a real store (skiff's 3 replicas, and etcd 3.4) and `skiff
apiserver` processes on loopback, driven through the typed client."""
from __future__ import annotations

import asyncio
from typing import Iterator

import grpc
import pytest

from controlplane.client import api as apiclient
from controlplane.client.api import ApiClient
from protos.etcd.etcdserverpb import rpc_pb2
from protos.skiff.api.v1 import api_pb2, api_pb2_grpc, core_pb2
from kvstore.client import sync_stubs
from tests.apiutil import ApiEnv, backends, obj
from tests.manifests import KUBERNETES_DOCS, NGINX_DEPLOYMENT
from controlplane.client.manifests import load_manifests

DEPLOYMENT = NGINX_DEPLOYMENT


@pytest.fixture(scope="module", params=backends())
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    e = ApiEnv(tmp_path_factory.mktemp(f"api-{request.param}"), request.param,
               server_args=("--no-auth", "--watch-cache-size", "50", "--bookmark-interval", "0.3"), servers=2)
    e.start()
    yield e
    e.stop()


def pod(name: str, labels: dict[str, str] | None = None, node: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.labels.update(labels or {})
    p.spec.containers.add(name="c", image="busybox:1.36")
    p.spec.node_name = node
    return p


def namespace(env: ApiEnv, name: str) -> None:
    ns = core_pb2.Namespace()
    ns.metadata.name = name
    env.run(lambda c: c.create(ns))


def test_create_get_defaults_and_server_fields(env: ApiEnv) -> None:
    async def body(c: ApiClient) -> None:
        made = await c.create(obj(DEPLOYMENT), "default")
        assert made.metadata.uid and made.metadata.creation_timestamp.endswith("Z")
        assert made.metadata.generation == 1 and int(made.metadata.resource_version) > 0
        got = await c.get("deploy", "nginx-deployment", "default")
        assert got == made
        spec = got.spec
        assert spec.strategy.type == "RollingUpdate" and spec.revision_history_limit == 10
        assert spec.progress_deadline_seconds == 600
        assert spec.template.spec.restart_policy == "Always"
        assert spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
        with pytest.raises(apiclient.AlreadyExistsError, match='deployments.apps "nginx-deployment" already exists'):
            await c.create(obj(DEPLOYMENT), "default")
        with pytest.raises(apiclient.NotFoundError, match='deployments.apps "nope" not found'):
            await c.get("deployments", "nope", "default")
    env.run(body)


def test_manifests_from_kubernetes_docs_create(env: ApiEnv) -> None:
    """nginx Deployment, ReplicaSets (one with matchExpressions), a ReplicationController,
    Services (ClusterIP, headless, NodePort), a StatefulSet, a DaemonSet, Pods, a ConfigMap, a
    Secret and a Namespace, as Kubernetes' documentation publishes them."""
    manifests = load_manifests(KUBERNETES_DOCS, "kubernetes-docs.yaml")
    namespace(env, "docs")

    async def body(c: ApiClient) -> None:
        for m in manifests:
            kind = type(m.object).__name__
            namespace = m.object.metadata.namespace or ("" if kind == "Namespace" else "docs")
            made = await c.create(m.object, namespace)
            assert made.metadata.uid, f"{kind} {m.object.metadata.name}"
        rs = await c.get("rs", "redis-cache", "docs")
        assert rs.spec.selector.match_expressions or rs.spec.selector.match_labels
    env.run(body)


def test_update_conflict_generation_and_status(env: ApiEnv) -> None:
    async def body(c: ApiClient) -> None:
        made = await c.create(pod("gen-1"), "default")
        relabeled = type(made)()
        relabeled.CopyFrom(made)
        relabeled.metadata.labels["tier"] = "web"
        after = await c.update(relabeled)
        assert after.metadata.generation == 1  # metadata only: no new generation
        with pytest.raises(apiclient.ConflictError, match="the object has been modified; please apply your changes"):
            await c.update(relabeled)  # stale resourceVersion
        changed = type(after)()
        changed.CopyFrom(after)
        changed.spec.containers[0].image = "busybox:1.37"
        changed.status.phase = "Running"  # ignored by update: status is a subresource
        after2 = await c.update(changed)
        assert after2.metadata.generation == 2 and after2.status.phase == "Pending"
        after2.status.phase = "Running"
        after2.spec.containers[0].image = "ignored:1"  # ignored by update_status
        after3 = await c.update_status(after2)
        assert after3.status.phase == "Running" and after3.spec.containers[0].image == "busybox:1.37"
        assert after3.metadata.generation == 2
    env.run(body)


def test_merge_patch(env: ApiEnv) -> None:
    async def body(c: ApiClient) -> None:
        await c.create(pod("patch-1", {"a": "1", "b": "2"}), "default")
        got = await c.patch("pods", "patch-1", {"metadata": {"labels": {"a": None, "c": "3"}}}, "default")
        assert dict(got.metadata.labels) == {"b": "2", "c": "3"}
        got = await c.patch("pods", "patch-1", {"status": {"phase": "Running"}}, "default", subresource="status")
        assert got.status.phase == "Running"
        with pytest.raises(apiclient.InvalidError, match="spec.bogus"):
            await c.patch("pods", "patch-1", {"spec": {"bogus": 1}}, "default")
    env.run(body)


def test_validation_reports_every_error(env: ApiEnv) -> None:
    bad = obj(DEPLOYMENT)
    bad.spec.replicas = -1
    bad.spec.template.metadata.labels["app"] = "other"

    async def body(c: ApiClient) -> None:
        with pytest.raises(apiclient.InvalidError) as err:
            await c.create(bad, "default")
        text = str(err.value)
        assert text.startswith('Deployment.apps "nginx-deployment" is invalid: [')
        assert "spec.replicas: Invalid value: -1" in text
        assert "spec.template.metadata.labels: Invalid value" in text
    env.run(body)


def test_list_selectors_and_pages(env: ApiEnv) -> None:
    namespace(env, "pages")

    async def body(c: ApiClient) -> None:
        for i in range(25):
            await c.create(pod(f"p{i:02d}", {"app": "web" if i % 2 else "db", "i": str(i)}), "pages")
        everything = await c.list("pods", "pages")
        assert [p.metadata.name for p in everything.items] == [f"p{i:02d}" for i in range(25)]
        web = await c.list("pods", "pages", label_selector="app in (web),i notin (1,3)")
        assert len(web.items) == 10
        named = await c.list("pods", "pages", field_selector="metadata.name=p07")
        assert [p.metadata.name for p in named.items] == ["p07"]
        names: list[str] = []
        token = ""
        first = None
        while True:
            page = await c.list("pods", "pages", limit=10, continue_token=token)
            first = first or page
            names += [p.metadata.name for p in page.items]
            token = page.continue_token
            if not token:
                break
        assert names == [f"p{i:02d}" for i in range(25)]
        assert first is not None and first.remaining_item_count == 15
        with pytest.raises(apiclient.InvalidError, match="field label not supported"):
            await c.list("pods", "pages", field_selector="spec.nope=x")
        with pytest.raises(apiclient.InvalidError):
            await c.list("pods", "pages", label_selector="app in (web")
    env.run(body)


def test_list_is_consistent_across_api_servers(env: ApiEnv) -> None:
    """A write through one API server is in the very next list through another."""
    namespace(env, "twoservers")

    async def body() -> None:
        a, b = env.client(0), env.client(1)
        try:
            for i in range(20):
                await a.create(pod(f"x{i}"), "twoservers")
                seen = await b.list("pods", "twoservers")
                assert len(seen.items) == i + 1
        finally:
            await a.close()
            await b.close()
    asyncio.run(body())


def test_watch_from_resource_version_with_selector_transitions(env: ApiEnv) -> None:
    namespace(env, "watching")

    async def body(c: ApiClient) -> None:
        start = await c.create(pod("w0", {"app": "web"}), "watching")
        events: list[tuple[str, str, dict[str, str]]] = []

        async def collect() -> None:
            async for ev in c.watch("pods", "watching", label_selector="app=web",
                                    resource_version=start.metadata.resource_version):
                events.append((ev.type, ev.object.metadata.name, dict(ev.object.metadata.labels)))
                if len(events) == 4:
                    return
        task = asyncio.create_task(collect())
        p1 = await c.create(pod("w1", {"app": "web"}), "watching")
        await c.create(pod("w2", {"app": "db"}), "watching")  # never seen
        p1.metadata.labels["app"] = "db"
        await c.update(p1)                                     # leaves the selection: DELETED
        await c.patch("pods", "w2", {"metadata": {"labels": {"app": "web"}}}, "watching")  # enters: ADDED
        await c.delete("pods", "w0", "watching")
        await asyncio.wait_for(task, 10)
        assert [(t, n) for t, n, _ in events] == [("ADDED", "w1"), ("DELETED", "w1"), ("ADDED", "w2"), ("DELETED", "w0")]
    env.run(body)


def test_watch_initial_state_bookmarks_and_too_old(env: ApiEnv) -> None:
    namespace(env, "old")

    async def body(c: ApiClient) -> None:
        first = await c.create(pod("o0"), "old")
        await c.create(pod("o1"), "old")
        seen: list[str] = []
        async for ev in c.watch("pods", "old", bookmarks=True):
            seen.append(ev.type if ev.type == "BOOKMARK" else f"{ev.type}:{ev.object.metadata.name}")
            if ev.type == "BOOKMARK":
                assert int(ev.object.metadata.resource_version) >= int(first.metadata.resource_version)
                break
        assert seen == ["ADDED:o0", "ADDED:o1", "BOOKMARK"]
        for i in range(60):  # more than the server's 50-event window for pods
            await c.create(pod(f"filler{i}"), "old")
        with pytest.raises(apiclient.GoneError, match="too old resource version"):
            async for _ in c.watch("pods", "old", resource_version=first.metadata.resource_version):
                pass
    env.run(body)


def test_continue_token_too_old_after_compaction(env: ApiEnv) -> None:
    namespace(env, "compact")

    async def body(c: ApiClient) -> None:
        for i in range(4):
            await c.create(pod(f"c{i}"), "compact")
        page = await c.list("pods", "compact", limit=2)
        for i in range(3):
            await c.patch("pods", "c3", {"metadata": {"labels": {"n": str(i)}}}, "compact")
        head = await c.get("pods", "c3", "compact")
        kv = sync_stubs(env.store.endpoints[0])
        kv.kv.Compact(rpc_pb2.CompactionRequest(revision=int(head.metadata.resource_version), physical=True))
        kv.channel.close()
        with pytest.raises(apiclient.GoneError, match="continue parameter is too old"):
            await c.list("pods", "compact", limit=2, continue_token=page.continue_token)
    env.run(body)


def test_namespace_admission(env: ApiEnv) -> None:
    namespace(env, "doomed")

    async def body(c: ApiClient) -> None:
        with pytest.raises(apiclient.NotFoundError, match='namespaces "missing" not found'):
            await c.create(pod("p"), "missing")
        await c.create(pod("p"), "doomed")
        ns, removed = await c.delete("namespaces", "doomed")
        assert not removed and ns.status.phase == "Terminating" and ns.metadata.deletion_timestamp
        with pytest.raises(apiclient.ForbiddenError, match="because it is being terminated"):
            await c.create(pod("q"), "doomed")
    env.run(body)


def test_service_ip_and_node_port_allocation(env: ApiEnv) -> None:
    namespace(env, "svc")

    def service(name: str, type_: str = "ClusterIP", ip: str = "", node_port: int = 0) -> core_pb2.Service:
        s = core_pb2.Service()
        s.metadata.name = name
        s.spec.type = type_
        s.spec.cluster_ip = ip
        s.spec.selector["app"] = name
        s.spec.ports.add(port=80, node_port=node_port)
        return s

    async def body(c: ApiClient) -> None:
        made = [await c.create(service(f"s{i}"), "svc") for i in range(10)]
        ips = {s.spec.cluster_ip for s in made}
        assert len(ips) == 10 and all(ip.startswith("10.96.") for ip in ips)
        assert made[0].spec.ports[0].target_port.int_val == 80 and made[0].spec.ports[0].protocol == "TCP"
        np = await c.create(service("np", "NodePort"), "svc")
        port = np.spec.ports[0].node_port
        assert 30000 <= port <= 32767
        with pytest.raises(apiclient.InvalidError, match="provided port is already allocated"):
            await c.create(service("np2", "NodePort", node_port=port), "svc")
        with pytest.raises(apiclient.InvalidError, match="provided IP is already allocated"):
            await c.create(service("dup", ip=made[0].spec.cluster_ip), "svc")
        headless = await c.create(service("hl", ip="None"), "svc")
        assert headless.spec.cluster_ip == "None"
        await c.delete("services", "np", "svc")
        again = await c.create(service("np3", "NodePort", node_port=port), "svc")  # released on delete
        assert again.spec.ports[0].node_port == port
        await c.delete("services", "s0", "svc")
        reused = await c.create(service("s0b", ip=made[0].spec.cluster_ip), "svc")
        assert reused.spec.cluster_ip == made[0].spec.cluster_ip
        again_s1 = service("s1")
        again_s1.metadata.namespace = "svc"
        unchanged = await c.update(again_s1)  # an update without clusterIP keeps it
        assert unchanged.spec.cluster_ip == made[1].spec.cluster_ip
    env.run(body)


def test_delete_finalizers_propagation_and_grace(env: ApiEnv) -> None:
    namespace(env, "del")

    async def body(c: ApiClient) -> None:
        await c.create(pod("fg"), "del")
        gone, removed = await c.delete("pods", "fg", "del", propagation_policy="Foreground")
        assert not removed and list(gone.metadata.finalizers) == ["foregroundDeletion"]
        assert gone.metadata.deletion_timestamp
        gone.ClearField("metadata")  # the update below is a fresh read-modify-write
        current = await c.get("pods", "fg", "del")
        del current.metadata.finalizers[:]
        await c.update(current)  # the last finalizer removed: the object goes
        with pytest.raises(apiclient.NotFoundError):
            await c.get("pods", "fg", "del")
        await c.create(pod("orph"), "del")
        orphaning, _ = await c.delete("pods", "orph", "del", propagation_policy="Orphan")
        assert list(orphaning.metadata.finalizers) == ["orphan"]
        made = await c.create(pod("pre"), "del")
        with pytest.raises(apiclient.ConflictError, match="Precondition failed: UID"):
            await c.delete("pods", "pre", "del", uid="not-the-uid")
        _, removed = await c.delete("pods", "pre", "del", uid=made.metadata.uid)
        assert removed
        await c.create(pod("bound"), "del")
        bound = await c.bind("del", "bound", "node-1")
        assert bound.spec.node_name == "node-1"
        assert [(x.type, x.status) for x in bound.status.conditions] == [("PodScheduled", "True")]
        with pytest.raises(apiclient.ConflictError, match="already assigned to node"):
            await c.bind("del", "bound", "node-2")
        graceful, removed = await c.delete("pods", "bound", "del")
        assert not removed and graceful.metadata.deletion_grace_period_seconds == 30
        _, removed = await c.delete("pods", "bound", "del", grace_period_seconds=0)
        assert removed
    env.run(body)


def test_malformed_requests_get_invalid_argument_and_the_server_lives(env: ApiEnv) -> None:
    async def body() -> None:
        async with grpc.aio.insecure_channel(env.address) as channel:
            stub = api_pb2_grpc.ApiStub(channel)
            bad = api_pb2.CreateRequest(resource="pods", namespace="default")
            bad.object.type_url = "type.googleapis.com/skiff.api.v1.Pod"
            bad.object.value = b"\xff\xff\xff garbage"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Create(bad)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            wrong = api_pb2.CreateRequest(resource="services", namespace="default")
            wrong.object.Pack(pod("x"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Create(wrong)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a Service" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Get(api_pb2.GetRequest(resource="widgets", name="x"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "widgets" in (err.value.details() or "")
            huge = api_pb2.CreateRequest(resource="configmaps", namespace="default")
            huge.object.value = b"x" * (4 * 1024 * 1024)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Create(huge)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await stub.Get(api_pb2.GetRequest(resource="namespaces", name="default"))  # still serving
    asyncio.run(body())


def test_a_thousand_watchers_get_one_event(env: ApiEnv) -> None:
    namespace(env, "fanout")

    async def body(c: ApiClient) -> None:
        ready = 0
        got = 0
        opened = asyncio.Event()

        async def one() -> None:
            nonlocal ready, got
            stream = c.watch("configmaps", "fanout", resource_version="")
            agen = stream.__aiter__()
            ready += 1
            if ready == 1000:
                opened.set()
            ev = await agen.__anext__()
            assert ev.type == "ADDED" and ev.object.metadata.name == "hello"
            got += 1
            await agen.aclose()
        tasks = [asyncio.create_task(one()) for _ in range(1000)]
        await asyncio.wait_for(opened.wait(), 30)
        await asyncio.sleep(1.0)  # let every stream reach the server
        cm = core_pb2.ConfigMap()
        cm.metadata.name = "hello"
        cm.data["k"] = "v"
        await c.create(cm, "fanout")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert got == 1000
    env.run(body)
