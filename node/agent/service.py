"""The node service (`skiff.node.v1.NodeService`): container logs and exec, served by the agent.

- **Logs** finds the container by pod (namespace/name, through the agent's pod cache), container
  name (optional when the pod has one container) and instance (the latest, or with `previous`
  the one before it), then streams its CRI log file (`node.runtime.logs` format) as the bytes
  the container wrote: `tail_lines` keeps the last N lines, `timestamps` prefixes each line with
  its time, `follow` keeps reading until the container is no longer running and the file has
  been read to its end (or the caller goes away).
- **Exec** runs the command with CRI ExecSync in the latest running instance and returns its
  output and exit code (a command that runs past `timeout_seconds` is DEADLINE_EXCEEDED).

Authentication, the simplest honest design: the caller presents the bearer token it gives the
API server (`authorization: Bearer <token>`), and the agent asks the API server who that is
(`WhoAmI` with that token, over the agent's own TLS connection settings). Only users in
`system:masters` (administrators) are served; anyone else is PERMISSION_DENIED, a missing or
unknown token UNAUTHENTICATED. Verdicts are cached for `cache_seconds` per token (by its
SHA-256) so a follow or a burst of execs costs one API call. When the agent talks to the API
over plain text (a development cluster run with `--no-auth`), no token can be forwarded (skiff
never sends a credential without TLS), so the agent asks WhoAmI without one: against an API
server with authentication off that answers "administrator" and the node service is exactly as
open as the API; against one with authentication it is refused.

Errors are gRPC statuses with a message naming the pod and container: NOT_FOUND (no such pod on
this node, no such container, no previous instance), INVALID_ARGUMENT (a container must be
named), FAILED_PRECONDITION (the container is not running), UNAVAILABLE (the runtime failed).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import NoReturn

import grpc

from controlplane.client.api import ApiStatusError, UnauthenticatedError
from node.agent import plan as p
from node.runtime import logs
from node.runtime.logs import last_lines, parse_complete
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2
from protos.skiff.node.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

MASTERS = "system:masters"
PodLookup = Callable[[str, str], "core_pb2.Pod | None"]
WhoAmI = Callable[[str | None], Awaitable[tuple[str, tuple[str, ...]]]]


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


class TokenReviewer:
    """Who is calling, asked of the API server, cached per token (see the module docstring)."""

    def __init__(self, whoami: WhoAmI, cache_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.whoami = whoami
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, str, tuple[str, ...]]] = {}

    async def review(self, token: str | None) -> tuple[str, tuple[str, ...]]:
        key = hashlib.sha256((token or "").encode()).hexdigest()
        hit = self._cache.get(key)
        now = self.clock()
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1], hit[2]
        user, groups = await self.whoami(token)
        self._cache[key] = (now, user, groups)
        return user, groups


class NodeService(node_pb2_grpc.NodeServiceServicer):
    """Logs and Exec over a CRI runtime stub (see the module docstring)."""

    def __init__(self, runtime: object, pods: PodLookup, reviewer: TokenReviewer, poll: float = 0.2) -> None:
        self.runtime = runtime  # api_pb2_grpc.RuntimeServiceStub
        self.pods = pods
        self.reviewer = reviewer
        self.poll = poll

    def add_to_server(self, server: grpc.aio.Server) -> None:
        node_pb2_grpc.add_NodeServiceServicer_to_server(self, server)

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        token = bearer_token(context.invocation_metadata())  # type: ignore[arg-type]
        if token == "":
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "Unauthorized: the authorization metadata is not 'Bearer <token>'")
        try:
            user, groups = await self.reviewer.review(token)
        except UnauthenticatedError as err:
            await _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"Unauthorized: {err}")
        except ApiStatusError as err:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"cannot check the caller with the API server: {err}")
        if MASTERS not in groups:
            await _abort(context, grpc.StatusCode.PERMISSION_DENIED,
                         f'User "{user}" cannot use the node service (logs, exec): only group {MASTERS} may')

    async def _container(self, context: grpc.aio.ServicerContext, namespace: str, name: str, container: str,
                         previous: bool = False) -> tuple[cri.ContainerStatus, str]:
        pod = self.pods(namespace or "default", name)
        where = f"pod {namespace or 'default'}/{name}"
        if pod is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"{where} is not on this node")
        names = [c.name for c in list(pod.spec.init_containers) + list(pod.spec.containers)]
        if not container:
            if len(pod.spec.containers) != 1:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"a container name must be specified for {where}, choose one of: [{' '.join(names)}]")
            container = pod.spec.containers[0].name
        if container not in names:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"container {container!r} is not valid for {where}")
        listed = await self.runtime.ListContainers(cri.ListContainersRequest(filter=cri.ContainerFilter(  # type: ignore[attr-defined]
            label_selector={p.POD_UID_LABEL: pod.metadata.uid, p.CONTAINER_NAME_LABEL: container})), timeout=30)
        instances = sorted(listed.containers, key=lambda c: (c.metadata.attempt, c.created_at), reverse=True)
        index = 1 if previous else 0
        if len(instances) <= index:
            what = "previous terminated container" if previous else "container"
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"{what} {container!r} in {where} not found")
        status = (await self.runtime.ContainerStatus(cri.ContainerStatusRequest(  # type: ignore[attr-defined]
            container_id=instances[index].id), timeout=30)).status
        return status, f"container {container!r} in {where}"

    async def Exec(self, request: node_pb2.ExecRequest, context: grpc.aio.ServicerContext) -> node_pb2.ExecResponse:
        await self._authorize(context)
        if not request.command:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "exec: a command is required")
        status, where = await self._container(context, request.namespace, request.pod, request.container)
        if status.state != cri.CONTAINER_RUNNING:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"cannot exec in {where}: it is not running")
        try:
            resp = await self.runtime.ExecSync(cri.ExecSyncRequest(  # type: ignore[attr-defined]
                container_id=status.id, cmd=list(request.command), timeout=request.timeout_seconds),
                timeout=(request.timeout_seconds + 30) if request.timeout_seconds else None)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            if code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                code = grpc.StatusCode.UNAVAILABLE
            await _abort(context, code, f"exec in {where}: {err.details()}")
        return node_pb2.ExecResponse(stdout=resp.stdout, stderr=resp.stderr, exit_code=resp.exit_code)

    async def Logs(self, request: node_pb2.LogsRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[node_pb2.LogChunk]:
        await self._authorize(context)
        status, where = await self._container(context, request.namespace, request.pod, request.container,
                                              request.previous)
        path = Path(status.log_path)
        if not status.log_path or not path.exists():
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"{where} has no log file")
        tail = request.tail_lines if request.HasField("tail_lines") else None
        follow = request.follow and status.state == cri.CONTAINER_RUNNING
        async for data in self._read(path, tail, request.timestamps, follow, status.id):
            yield node_pb2.LogChunk(data=data)

    async def _still_running(self, container_id: str) -> bool:
        try:
            got = await self.runtime.ContainerStatus(cri.ContainerStatusRequest(container_id=container_id), timeout=30)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError:
            return False
        return bool(got.status.state == cri.CONTAINER_RUNNING)

    async def _read(self, path: Path, tail: int | None, timestamps: bool, follow: bool,
                    container_id: str) -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            data = await asyncio.to_thread(f.read)
            records, rest = parse_complete(data)
            if tail is not None:
                records = last_lines(records, tail)
            if records:
                yield render(records, timestamps)
            while follow:
                more = await asyncio.to_thread(f.read)
                if more:
                    records, rest = parse_complete(rest + more)
                    if records:
                        yield render(records, timestamps)
                    continue
                if not await self._still_running(container_id):
                    final = await asyncio.to_thread(f.read)  # what it wrote just before exiting
                    records, _ = parse_complete(rest + final)  # the writer appends whole records only
                    if records:
                        yield render(records, timestamps)
                    return
                await asyncio.sleep(self.poll)


def render(records: list[logs.LogRecord], timestamps: bool) -> bytes:
    out = []
    line_start = True
    for r in records:
        if timestamps and line_start:
            out.append(logs.format_timestamp(r.timestamp_ns).encode() + b" ")
        out.append(r.content if r.partial else r.content + b"\n")
        line_start = not r.partial
    return b"".join(out)


def make_server(service: NodeService, address: str, cert: Path | None = None,
                key: Path | None = None) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with the node service on `address` (TLS with cert and key); its port."""
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 40 << 20)])
    service.add_to_server(server)
    if cert is not None and key is not None:
        creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"the node service cannot listen on {address}")
    return server, port
