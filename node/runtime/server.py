"""skiff's CRI server: the ``runtime.v1`` RuntimeService on grpc.aio, over RuntimeClass handlers.

``RuntimeServicer`` implements every RPC of the RuntimeService in ``protos/cri``; ``make_server``
builds the image store, the ImageService (``images.service``), the handlers and one grpc.aio
server listening on a unix socket with both services.

Routing: RunPodSandbox picks a handler by ``runtime_handler`` ("" = the default, the first one
configured; an unknown name is INVALID_ARGUMENT naming it and the ones there are). Every later
call about a sandbox or one of its containers goes to the handler that owns the id (an
in-memory map rebuilt from the handlers' state at startup, so ids survive a restart).

Semantics, as containerd's CRI plugin answers:
- CreateContainer resolves ``config.image`` in the image store (a reference or an image ID;
  NOT_FOUND when absent: pull first), takes an image lease under the new container id before
  anything is mounted (released by RemoveContainer/RemovePodSandbox), and writes the log at
  ``sandbox_config.log_directory / config.log_path`` when both are given;
- Stop* and Remove* are idempotent; StopPodSandbox/StopContainer of an unknown id are NOT_FOUND,
  RemovePodSandbox/RemoveContainer of an unknown id succeed;
- ExecSync beyond its timeout is DEADLINE_EXCEEDED; output is capped at 16 MiB per stream;
- filters of ListPodSandbox/ListContainers are ANDed; an id filter matches an id prefix.

Errors: NOT_FOUND (unknown id, absent image), INVALID_ARGUMENT (a request that cannot run:
missing name or command, unknown handler or user), FAILED_PRECONDITION (a state that forbids
the call: sandbox not ready, container not running), INTERNAL (the runtime failed: runc's or
the kernel's words in the message). Handler calls that block (runc, process) run in worker
threads; the fake handler is called on the event loop.
"""
from __future__ import annotations

import asyncio
import builtins
import importlib.metadata
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import json_format

from node.network.bridge import BridgeConfig, BridgeNetwork
from node.runtime import oci
from node.runtime.containers import ContainerStatus
from node.runtime.handlers import RuncHandler, RuntimeHandler
from node.runtime.images.fake import FakeImageServicer, FakeImageStore
from node.runtime.images.pull import Puller
from node.runtime.images.registry import RegistryClient, RegistryConfig
from node.runtime.images.service import ImageServicer
from node.runtime.images.store import ImageRecord, ImageStore, StoreError
from node.runtime.sandbox import NotFound, Sandbox, SandboxConfig, SandboxError
from protos.cri.runtime.v1 import api_pb2 as pb
from protos.cri.runtime.v1 import api_pb2_grpc

__all__ = ["RuntimeServicer", "make_handlers", "make_server"]

T = TypeVar("T")
OUTPUT_CAP = 16 << 20
HANDLER_NAMES = ("runc", "process", "fake")


def _version() -> str:
    try:
        return importlib.metadata.version("skiff")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    """The CRI RuntimeService over ``handlers`` (the first is the default) and an image store."""

    def __init__(self, handlers: Sequence[RuntimeHandler], store: ImageStore,
                 clock: Callable[[], int] = time.time_ns) -> None:
        if not handlers:
            raise ValueError("the runtime needs at least one handler")
        self.handlers = {h.name: h for h in handlers}
        self.default = handlers[0]
        self.store = store
        self.clock = clock
        self._owners: dict[str, RuntimeHandler] = {}

    def add_to_server(self, server: grpc.aio.Server) -> None:
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(self, server)

    def recover(self) -> builtins.list[str]:
        """Clean up half-made sandboxes and learn who owns what is on disk; call before serving."""
        removed: builtins.list[str] = []
        for handler in self.handlers.values():
            removed += handler.recover()
            for sandbox in handler.list_sandboxes():
                self._owners[sandbox.id] = handler
            for container in handler.list_containers():
                self._owners[container.id] = handler
        return removed

    # --- plumbing ----------------------------------------------------------------------------

    async def _call(self, context: grpc.aio.ServicerContext, handler: RuntimeHandler,
                    fn: Callable[..., T], *args: Any) -> T:
        """Run a handler call (in a thread if it blocks), its errors as gRPC statuses."""
        try:
            if handler.blocking:
                return await asyncio.to_thread(fn, *args)
            return fn(*args)
        except NotFound as err:
            await _abort(context, grpc.StatusCode.NOT_FOUND, str(err))
        except (oci.SpecError, ValueError) as err:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except SandboxError as err:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except Exception as err:  # the runtime failed; say how, in one line
            await _abort(context, grpc.StatusCode.INTERNAL, f"{handler.name}: {type(err).__name__}: {err}")

    def _owner(self, object_id: str, kind: str) -> RuntimeHandler | None:
        handler = self._owners.get(object_id)
        if handler is None:
            for candidate in self.handlers.values():
                has = candidate.has_sandbox if kind == "sandbox" else candidate.has_container
                if has(object_id):
                    handler = self._owners[object_id] = candidate
                    break
        return handler

    async def _owner_or_abort(self, object_id: str, kind: str,
                              context: grpc.aio.ServicerContext) -> RuntimeHandler:
        if not object_id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"the {kind} id is required")
        handler = self._owner(object_id, kind)
        if handler is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"{kind.replace('sandbox', 'pod sandbox')} {object_id} not found")
        return handler

    # --- runtime -----------------------------------------------------------------------------

    async def Version(self, request: pb.VersionRequest, context: grpc.aio.ServicerContext) -> pb.VersionResponse:
        return pb.VersionResponse(version="0.1.0", runtime_name="skiff", runtime_version=_version(),
                                  runtime_api_version="v1")

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        network_ok, why = self.default.network_status()
        conditions = [pb.RuntimeCondition(type="RuntimeReady", status=True),
                      pb.RuntimeCondition(type="NetworkReady", status=network_ok,
                                          reason="" if network_ok else "NetworkPluginNotReady",
                                          message=why)]
        handlers = [pb.RuntimeHandler(name="")] + [pb.RuntimeHandler(name=n) for n in self.handlers]
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions), runtime_handlers=handlers)

    # --- sandboxes ---------------------------------------------------------------------------

    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest,
                            context: grpc.aio.ServicerContext) -> pb.RunPodSandboxResponse:
        name = request.runtime_handler
        handler = self.handlers.get(name) if name else self.default
        if handler is None:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"unknown runtime handler {name!r} (RuntimeClass handler): this runtime has "
                         f"{', '.join(self.handlers)}")
        if not request.config.metadata.name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "RunPodSandbox: config.metadata.name is required")
        sandbox = await self._call(context, handler, handler.run_sandbox, sandbox_config(request.config))
        self._owners[sandbox.id] = handler
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox.id)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest,
                             context: grpc.aio.ServicerContext) -> pb.StopPodSandboxResponse:
        handler = await self._owner_or_abort(request.pod_sandbox_id, "sandbox", context)
        await self._call(context, handler, handler.stop_sandbox, request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                               context: grpc.aio.ServicerContext) -> pb.RemovePodSandboxResponse:
        handler = self._owner(request.pod_sandbox_id, "sandbox")
        if handler is None:
            return pb.RemovePodSandboxResponse()
        removed = await self._call(context, handler, handler.remove_sandbox, request.pod_sandbox_id)
        for container_id in removed:
            self._owners.pop(container_id, None)
            await self._release(handler, container_id)
        self._owners.pop(request.pod_sandbox_id, None)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                               context: grpc.aio.ServicerContext) -> pb.PodSandboxStatusResponse:
        handler = await self._owner_or_abort(request.pod_sandbox_id, "sandbox", context)
        sandbox = await self._call(context, handler, handler.sandbox_status, request.pod_sandbox_id)
        return pb.PodSandboxStatusResponse(status=sandbox_status_message(sandbox, handler),
                                           timestamp=self.clock())

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListPodSandboxResponse:
        f = request.filter
        items = []
        for handler in self.handlers.values():
            for sandbox in await self._call(context, handler, handler.list_sandboxes):
                if f.id and not sandbox.id.startswith(f.id):
                    continue
                if f.HasField("state") and pb.PodSandboxState.Value(sandbox.state) != f.state.state:
                    continue
                if not _labels_match(sandbox.labels, f.label_selector):
                    continue
                items.append(sandbox_message(sandbox, handler))
        return pb.ListPodSandboxResponse(items=items)

    # --- containers --------------------------------------------------------------------------

    async def CreateContainer(self, request: pb.CreateContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateContainerResponse:
        handler = await self._owner_or_abort(request.pod_sandbox_id, "sandbox", context)
        config = request.config
        if not config.metadata.name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "CreateContainer: config.metadata.name is required")
        wanted = config.image.image
        record = await asyncio.to_thread(self.store.get, wanted) if wanted else None
        uses_layers = handler.name != "fake"
        if record is None and uses_layers:
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"container {config.metadata.name!r}: image {wanted!r} not found in the runtime's "
                         "store: pull it first (PullImage, or skiff image pull/import)")
        image, layers = oci.ImageConfig(), []
        if record is not None:
            image = oci.ImageConfig.from_oci((await asyncio.to_thread(self.store.config, record)).get("config") or {})
            layers = self.store.layer_paths(record)
        container_id = secrets.token_hex(32)
        log_path = None
        if request.sandbox_config.log_directory and config.log_path:
            log_path = Path(request.sandbox_config.log_directory) / config.log_path
        info = container_info(config, record)
        if record is not None and uses_layers:
            try:
                await asyncio.to_thread(self.store.lease, container_id, record)
            except StoreError as err:
                await _abort(context, grpc.StatusCode.NOT_FOUND, f"image {wanted!r}: {err}")
        try:
            await self._call(context, handler, handler.create_container, container_id,
                             request.pod_sandbox_id, container_request(config), image, layers,
                             config.metadata.attempt, log_path, info)
        except BaseException:
            if record is not None and uses_layers:
                await asyncio.to_thread(self.store.release, container_id)
            raise
        self._owners[container_id] = handler
        return pb.CreateContainerResponse(container_id=container_id)

    async def _release(self, handler: RuntimeHandler, container_id: str) -> None:
        if handler.name != "fake":
            await asyncio.to_thread(self.store.release, container_id)

    async def StartContainer(self, request: pb.StartContainerRequest,
                             context: grpc.aio.ServicerContext) -> pb.StartContainerResponse:
        handler = await self._owner_or_abort(request.container_id, "container", context)
        await self._call(context, handler, handler.start_container, request.container_id)
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest,
                            context: grpc.aio.ServicerContext) -> pb.StopContainerResponse:
        handler = await self._owner_or_abort(request.container_id, "container", context)
        await self._call(context, handler, handler.stop_container, request.container_id,
                         float(max(request.timeout, 0)))
        return pb.StopContainerResponse()

    async def RemoveContainer(self, request: pb.RemoveContainerRequest,
                              context: grpc.aio.ServicerContext) -> pb.RemoveContainerResponse:
        handler = self._owner(request.container_id, "container")
        if handler is None:
            return pb.RemoveContainerResponse()
        await self._call(context, handler, handler.remove_container, request.container_id)
        self._owners.pop(request.container_id, None)
        await self._release(handler, request.container_id)
        return pb.RemoveContainerResponse()

    async def ListContainers(self, request: pb.ListContainersRequest,
                             context: grpc.aio.ServicerContext) -> pb.ListContainersResponse:
        f = request.filter
        handlers: Iterable[RuntimeHandler] = self.handlers.values()
        if f.pod_sandbox_id:
            owner = self._owner(f.pod_sandbox_id, "sandbox")
            handlers = [owner] if owner is not None else []
        out = []
        for handler in handlers:
            listed = await self._call(context, handler, handler.list_containers, f.pod_sandbox_id or None)
            for status in listed:
                if f.id and not status.id.startswith(f.id):
                    continue
                if f.HasField("state") and pb.ContainerState.Value(status.state) != f.state.state:
                    continue
                if _labels_match(status.labels, f.label_selector):
                    out.append(container_message(status))
        return pb.ListContainersResponse(containers=out)

    async def ContainerStatus(self, request: pb.ContainerStatusRequest,
                              context: grpc.aio.ServicerContext) -> pb.ContainerStatusResponse:
        handler = await self._owner_or_abort(request.container_id, "container", context)
        status = await self._call(context, handler, handler.container_status, request.container_id)
        return pb.ContainerStatusResponse(status=container_status_message(status))

    async def UpdateContainerResources(self, request: pb.UpdateContainerResourcesRequest,
                                       context: grpc.aio.ServicerContext) -> pb.UpdateContainerResourcesResponse:
        handler = await self._owner_or_abort(request.container_id, "container", context)
        status = await self._call(context, handler, handler.container_status, request.container_id)
        info = dict(status.info)
        info["resources"] = json_format.MessageToDict(request.linux)
        await self._call(context, handler, handler.update_resources, request.container_id,
                         resources_from(request.linux), info)
        return pb.UpdateContainerResourcesResponse()

    async def ExecSync(self, request: pb.ExecSyncRequest, context: grpc.aio.ServicerContext) -> pb.ExecSyncResponse:
        handler = await self._owner_or_abort(request.container_id, "container", context)
        if not request.cmd:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ExecSync: cmd is required")
        timeout = float(request.timeout) if request.timeout > 0 else None
        result = await self._call(context, handler, handler.exec_sync, request.container_id,
                                  list(request.cmd), timeout)
        if result.timed_out:
            await _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"ExecSync {request.cmd[0]!r} in container {request.container_id}: "
                         f"timeout {request.timeout}s exceeded (the command was killed)")
        return pb.ExecSyncResponse(stdout=result.stdout[:OUTPUT_CAP], stderr=result.stderr[:OUTPUT_CAP],
                                   exit_code=result.exit_code)

    async def ContainerStats(self, request: pb.ContainerStatsRequest,
                             context: grpc.aio.ServicerContext) -> pb.ContainerStatsResponse:
        handler = await self._owner_or_abort(request.container_id, "container", context)
        status = await self._call(context, handler, handler.container_status, request.container_id)
        usage = await self._call(context, handler, handler.stats, request.container_id)
        now = self.clock()
        stats = pb.ContainerStats(attributes=pb.ContainerAttributes(
            id=status.id, metadata=pb.ContainerMetadata(name=status.name, attempt=status.attempt),
            labels=status.labels, annotations=status.annotations))
        if usage.cpu_ns is not None:
            stats.cpu.timestamp = now
            stats.cpu.usage_core_nano_seconds.value = usage.cpu_ns
        if usage.memory_usage_bytes is not None:
            stats.memory.timestamp = now
            stats.memory.usage_bytes.value = usage.memory_usage_bytes
            stats.memory.working_set_bytes.value = usage.memory_working_set_bytes or 0
        if usage.writable_layer_bytes is not None:
            stats.writable_layer.timestamp = now
            stats.writable_layer.fs_id.mountpoint = str(self.store.root)
            stats.writable_layer.used_bytes.value = usage.writable_layer_bytes
        return pb.ContainerStatsResponse(stats=stats)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")


def _labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- CRI messages <-> the handlers' values (pure) -----------------------------------------------


def sandbox_config(config: pb.PodSandboxConfig) -> SandboxConfig:
    meta, dns = config.metadata, config.dns_config
    return SandboxConfig(
        name=meta.name, namespace=meta.namespace or "default", uid=meta.uid, attempt=meta.attempt,
        hostname=config.hostname, dns_servers=tuple(dns.servers), dns_searches=tuple(dns.searches),
        dns_options=tuple(dns.options),
        share_process_namespace=config.linux.security_context.namespace_options.pid == pb.POD,
        host_network=config.linux.security_context.namespace_options.network == pb.NODE,
        cgroup_parent=config.linux.cgroup_parent, labels=dict(config.labels),
        annotations=dict(config.annotations))


def resources_from(r: pb.LinuxContainerResources) -> oci.Resources:
    return oci.Resources(cpu_shares=r.cpu_shares, cpu_quota=r.cpu_quota, cpu_period=r.cpu_period,
                         memory_limit_bytes=r.memory_limit_in_bytes, oom_score_adj=r.oom_score_adj)


def container_request(config: pb.ContainerConfig) -> oci.ContainerRequest:
    sc = config.linux.security_context
    return oci.ContainerRequest(
        name=config.metadata.name, command=tuple(config.command), args=tuple(config.args),
        env=tuple((kv.key, kv.value) for kv in config.envs), working_dir=config.working_dir,
        mounts=tuple(oci.Mount(m.container_path, m.host_path, m.readonly) for m in config.mounts),
        resources=resources_from(config.linux.resources),
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        supplemental_groups=tuple(sc.supplemental_groups), readonly_rootfs=sc.readonly_rootfs,
        allow_privilege_escalation=not sc.no_new_privs,
        add_capabilities=tuple(sc.capabilities.add_capabilities),
        drop_capabilities=tuple(sc.capabilities.drop_capabilities),
        labels=dict(config.labels), annotations=dict(config.annotations))


def container_info(config: pb.ContainerConfig, record: ImageRecord | None) -> dict[str, Any]:
    """What the server keeps with a container for its status (JSON-able)."""
    asked = config.image.image
    return {
        "image": (record.repo_tags[0] if record is not None and record.repo_tags else asked),
        "user_image": config.image.user_specified_image or asked,
        "image_id": record.id if record is not None else asked,
        "image_ref": (record.repo_digests[0] if record is not None and record.repo_digests
                      else (record.id if record is not None else asked)),
        "mounts": [json_format.MessageToDict(m) for m in config.mounts],
        "resources": json_format.MessageToDict(config.linux.resources),
    }


def _namespace_options(sandbox: Sandbox, handler: RuntimeHandler) -> pb.NamespaceOption:
    return pb.NamespaceOption(network=pb.NODE if sandbox.host_network else pb.POD,
                              pid=pb.POD if sandbox.share_process_namespace else pb.CONTAINER,
                              ipc=pb.POD)


def sandbox_message(sandbox: Sandbox, handler: RuntimeHandler) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=sandbox.id, metadata=pb.PodSandboxMetadata(name=sandbox.name, uid=sandbox.uid,
                                                      namespace=sandbox.namespace, attempt=sandbox.attempt),
        state=pb.PodSandboxState.Value(sandbox.state), created_at=sandbox.created_ns,
        labels=sandbox.labels, annotations=sandbox.annotations, runtime_handler=handler.name)


def sandbox_status_message(sandbox: Sandbox, handler: RuntimeHandler) -> pb.PodSandboxStatus:
    listed = sandbox_message(sandbox, handler)
    return pb.PodSandboxStatus(
        id=listed.id, metadata=listed.metadata, state=listed.state, created_at=listed.created_at,
        network=pb.PodSandboxNetworkStatus(ip="" if sandbox.stopped else sandbox.ip),
        linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=_namespace_options(sandbox, handler))),
        labels=sandbox.labels, annotations=sandbox.annotations, runtime_handler=handler.name)


def _image_spec(info: Mapping[str, Any]) -> pb.ImageSpec:
    return pb.ImageSpec(image=info.get("image", ""), user_specified_image=info.get("user_image", ""))


def container_message(status: ContainerStatus) -> pb.Container:
    info = status.info
    return pb.Container(
        id=status.id, pod_sandbox_id=status.sandbox_id,
        metadata=pb.ContainerMetadata(name=status.name, attempt=status.attempt),
        image=_image_spec(info), image_ref=info.get("image_ref", ""), image_id=info.get("image_id", ""),
        state=pb.ContainerState.Value(status.state), created_at=status.created_ns,
        labels=status.labels, annotations=status.annotations)


def container_status_message(status: ContainerStatus) -> pb.ContainerStatus:
    info = status.info
    message = pb.ContainerStatus(
        id=status.id, metadata=pb.ContainerMetadata(name=status.name, attempt=status.attempt),
        state=pb.ContainerState.Value(status.state), created_at=status.created_ns,
        started_at=status.started_ns, finished_at=status.finished_ns, exit_code=status.exit_code,
        image=_image_spec(info), image_ref=info.get("image_ref", ""), image_id=info.get("image_id", ""),
        reason=status.reason, message=status.message, labels=status.labels,
        annotations=status.annotations, log_path=status.log_path,
        mounts=[json_format.ParseDict(m, pb.Mount()) for m in info.get("mounts", [])])
    message.resources.linux.CopyFrom(json_format.ParseDict(info.get("resources", {}), pb.LinuxContainerResources()))
    return message


# --- assembly ---------------------------------------------------------------------------------


def make_handlers(root: Path, names: Sequence[str], network: BridgeNetwork | None,
                  cgroup_root: str = "/skiff", host_netns: str | None = None) -> builtins.list[RuntimeHandler]:
    """The named handlers on ``root``, in order (the first is the default); ``host_netns``: where
    hostNetwork pods run when it is not the runtime's own network namespace."""
    from node.runtime.fake import FakeHandler
    from node.runtime.process import ProcessHandler

    made: builtins.list[RuntimeHandler] = []
    for name in names:
        if name == "runc":
            made.append(RuncHandler(root, network, cgroup_root=cgroup_root, host_netns=host_netns))
        elif name == "process":
            made.append(ProcessHandler(root, network, host_netns=host_netns))
        elif name == "fake":
            made.append(FakeHandler(root, network.config.pod_cidr if network else None))
        else:
            raise ValueError(f"unknown runtime handler {name!r}: choose from {', '.join(HANDLER_NAMES)}")
    return made


def make_server(socket_path: Path, root: Path, *, pod_cidr: str | None = None,
                cluster_cidr: str | None = None, bridge: str = "skiff0", host_netns: str | None = None,
                insecure_registries: Iterable[str] = (), handlers: Sequence[str] = HANDLER_NAMES,
                cgroup_root: str = "/skiff", fake_images: bool = False) -> tuple[grpc.aio.Server, RuntimeServicer]:
    """A grpc.aio server (not started) on ``unix://socket_path`` with the RuntimeService and the
    ImageService over ``root`` (with ``fake_images``, images.fake's: pulls succeed without
    fetching — for runtimes that offer only the fake handler); half-made sandboxes are already
    cleaned up. ``host_netns``: build
    the pod bridge in that network namespace (a lab host's) instead of the runtime's own. Call it
    inside the event loop that will run the server."""
    root.mkdir(parents=True, exist_ok=True)
    network = None
    if pod_cidr:
        network = BridgeNetwork(BridgeConfig(pod_cidr=pod_cidr, state_dir=root / "network",
                                             bridge=bridge, cluster_cidr=cluster_cidr,
                                             host_netns=host_netns))
    fake = FakeImageServicer() if fake_images else None
    store = FakeImageStore(root, fake) if fake is not None else ImageStore(root)
    puller = Puller(store, RegistryClient(RegistryConfig(insecure_http=frozenset(insecure_registries))))
    runtime = RuntimeServicer(make_handlers(root, handlers, network, cgroup_root, host_netns), store)
    runtime.recover()
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 2 * OUTPUT_CAP + (1 << 20)),
                                      ("grpc.max_receive_message_length", 16 << 20)])
    runtime.add_to_server(server)
    if fake is not None:
        fake.add_to_server(server)
    else:
        ImageServicer(store, puller).add_to_server(server)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.is_socket():
        socket_path.unlink()  # a stale socket of a runtime that is gone
    server.add_insecure_port(f"unix://{socket_path}")
    return server, runtime
