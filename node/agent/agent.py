"""The node agent (skiff's kubelet): wires the runtime, the API, pod workers, probes, the node
service and the heartbeats together.

`Agent(config).run(stop)`:

1. connects to the CRI runtime (waiting for it), reads its Version (the node's
   containerRuntimeVersion; `containerd://` container ids against containerd, else `skiff://`);
2. starts the node service (logs, exec) so its port can be published in the Node;
3. registers the Node and keeps its status and Lease fresh (`node.NodeReporter`);
4. watches only the pods bound to it (an informer with field selector `spec.nodeName=<node>`)
   and hands each pod to its worker (`podworker.PodWorkers`); a pod that leaves the watch (it
   was deleted, force-deleted, or vanished during a relist) gets `None`: its worker cleans up;
5. every `status_interval` seconds, once the informer has listed at least once, sweeps the
   runtime: a sandbox carrying the pod-uid label of a pod the API no longer has gets a worker
   that removes it, and volume directories of unknown pods are removed.

Adoption after a restart is not a special case: workers observe the runtime by the pod-uid
labels, and `plan` finds the running containers already matching the spec (same hash), so it
does nothing to them: same container ids, no restart. Only crash-loop backoff timers start over.

When the API server is unreachable, the informer keeps its last cache (it relists with backoff)
and the workers keep their last desired state: containers keep running and restarting by their
policy; status writes are retried on every pass and catch up once the API is back. The sweep
never runs on a cache that was not listed, so a restarted agent with the API away removes
nothing. Stopping the agent stops nothing in the runtime: pods keep running for the next agent.

API channels are opened with short reconnect backoff (1 s to 5 s) so an API server that comes
back is noticed within seconds rather than gRPC's default two minutes.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from google.protobuf.message import Message

from controlplane.client.api import CHANNEL_OPTIONS, ApiClient, NotFoundError, UnauthenticatedError
from controlplane.client.config import ClientConfig
from controlplane.client.informer import SharedInformer
from node.agent.node import NodeConfig, NodeReporter, allocatable
from node.agent.plan import POD_UID_LABEL, BackoffPolicy
from node.agent.podworker import CRIRuntime, PodWorkers, WorkerDeps
from node.agent.probes import CRIChecker, ProbeManager
from node.agent.service import NodeService, TokenReviewer, make_server
from node.agent.volumes import VolumeManager
from node.runtime.client import CRIClient
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2

log = logging.getLogger(__name__)

RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 1000), ("grpc.min_reconnect_backoff_ms", 1000),
                     ("grpc.max_reconnect_backoff_ms", 5000)]


@dataclass(frozen=True)
class AgentConfig:
    node: NodeConfig
    client: ClientConfig
    runtime_endpoint: str
    root: Path
    listen_node_service: str = ""          # HOST:PORT; "" = <node ip>:10250
    node_service_cert: Path | None = None
    node_service_key: Path | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    sync_interval: float = 1.0


def default_node_ip(server: str) -> str:
    """The local address that routes to the API server (no packet is sent), else 127.0.0.1."""
    host = server.rpartition(":")[0].strip("[]") or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def open_api(config: ClientConfig, timeout: float = 30.0) -> ApiClient:
    """An API client for the agent: the config's TLS and token, short reconnect backoff."""
    metadata = config.metadata() if config.channel_credentials() is None else ()
    return ApiClient(config.open_channel(CHANNEL_OPTIONS + RECONNECT_OPTIONS), metadata, timeout)


class Agent:
    """See the module docstring."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.node_config = config.node
        self.cri: CRIClient | None = None
        self.api: ApiClient | None = None
        self.workers: PodWorkers | None = None
        self.informer: SharedInformer | None = None
        self.reporter: NodeReporter | None = None
        self.node_service_port = 0
        self.ready = asyncio.Event()

    async def _connect_runtime(self) -> tuple[CRIClient, cri.VersionResponse]:
        client = CRIClient.connect(self.config.runtime_endpoint)
        delay = 0.5
        while True:
            try:
                return client, await client.wait_ready(timeout=10)
            except Exception as err:
                log.warning("the container runtime at %s does not answer (%s); retrying", self.config.runtime_endpoint, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _lookup(self, resource: str, namespace: str, name: str) -> Message | None:
        assert self.api is not None
        try:
            return await self.api.get(resource, name, namespace)
        except NotFoundError:
            return None

    def _pod(self, namespace: str, name: str) -> core_pb2.Pod | None:
        if self.informer is None:
            return None
        return self.informer.get(f"{namespace}/{name}")  # type: ignore[return-value]

    async def _whoami(self, token: str | None) -> tuple[str, tuple[str, ...]]:
        tls = self.config.client.certificate_authority is not None
        if tls and not token:
            raise UnauthenticatedError(grpc.StatusCode.UNAUTHENTICATED,
                                       "no bearer token: present the token you use with the API server")
        own = replace(self.config.client, token=None)  # the caller's token, never the agent's own
        client = ApiClient(own.open_channel(CHANNEL_OPTIONS), (("authorization", f"Bearer {token}"),) if tls and token else (),
                           timeout=10)
        try:
            return await client.whoami()
        finally:
            await client.close()

    async def run(self, stop: asyncio.Event) -> None:
        runtime_client, version = await self._connect_runtime()
        self.cri = runtime_client
        runtime_version = f"{version.runtime_name}://{version.runtime_version}"
        id_scheme = "containerd" if version.runtime_name == "containerd" else "skiff"
        self.api = api = open_api(self.config.client)
        node = self.node_config
        service = NodeService(runtime_client.runtime, self._pod, TokenReviewer(self._whoami))
        listen = self.config.listen_node_service or f"{node.node_ip}:10250"
        server, port = make_server(service, listen, self.config.node_service_cert, self.config.node_service_key)
        await server.start()
        self.node_service_port = port
        node = replace(node, node_service_port=port)
        self.node_config = node
        log.info("node service on %s (port %d); runtime %s", listen, port, runtime_version)
        self.reporter = NodeReporter(api, runtime_client, node, runtime_version)
        probes = ProbeManager(CRIChecker(runtime_client.runtime), lambda uid: self._poke(uid))
        node_allocatable = allocatable(self.reporter.capacity, node.reserved)
        volumes = VolumeManager(self.config.root, allocatable=node_allocatable)
        deps = WorkerDeps(runtime=CRIRuntime(runtime_client, self.config.root / "logs"), api=api, volumes=volumes,
                          probes=probes, lookup=self._lookup, host_ip=node.node_ip, id_scheme=id_scheme,
                          backoff_policy=self.config.backoff, resync=self.config.sync_interval,
                          allocatable=node_allocatable)
        self.workers = workers = PodWorkers(deps)
        self.informer = informer = SharedInformer(api, "pods", field_selector=f"spec.nodeName={node.name}",
                                                  backoff_max=5.0)
        informer.add_handler(on_add=self._pod_changed, on_update=lambda _old, new: self._pod_changed(new),
                             on_delete=lambda pod: workers.update(pod.metadata.uid, None))  # type: ignore[attr-defined]
        tasks = [asyncio.create_task(self.reporter.run(), name="node-reporter"),
                 asyncio.create_task(self._sweep_loop(volumes), name="sweep")]
        informer.start()
        self.ready.set()
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await informer.stop()
            await workers.stop()
            await probes.stop()
            await server.stop(grace=1)
            await api.close()
            await runtime_client.close()

    def _poke(self, uid: str) -> None:
        if self.workers is not None:
            self.workers.poke(uid)

    def _pod_changed(self, pod: Message) -> None:
        assert self.workers is not None
        self.workers.update(pod.metadata.uid, pod)  # type: ignore[attr-defined, arg-type]

    async def sweep(self, volumes: VolumeManager) -> list[str]:
        """Hand sandboxes of pods the API does not have to workers that remove them; remove
        volume directories of unknown pods. Returns the uids swept."""
        assert self.cri is not None and self.informer is not None and self.workers is not None
        if not self.informer.has_synced:
            return []
        known = {p.metadata.uid for p in self.informer.list()}  # type: ignore[attr-defined]
        listed = await self.cri.runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=60)
        swept = []
        for sandbox in listed.items:
            uid = sandbox.labels.get(POD_UID_LABEL)
            if uid and uid not in known and uid not in self.workers.workers:
                log.info("removing sandbox %s of pod %s/%s (uid %s): no such pod on this node", sandbox.id[:12],
                         sandbox.metadata.namespace, sandbox.metadata.name, uid)
                self.workers.update(uid, None)
                swept.append(uid)
        for uid in volumes.pod_uids():
            if uid not in known and uid not in self.workers.workers:
                volumes.cleanup(uid)
        return swept

    async def _sweep_loop(self, volumes: VolumeManager) -> None:
        while True:
            await asyncio.sleep(self.node_config.status_interval)
            try:
                await self.sweep(volumes)
            except Exception as err:
                log.warning("sweeping the runtime failed: %s", err)
