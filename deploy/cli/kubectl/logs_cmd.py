"""`skiff logs POD [-c CONTAINER] [-f] [--previous] [--tail N] [--timestamps]`: a container's log.

The log is on the pod's node: the command reads the pod (its spec.nodeName), the Node (its
InternalIP and the node service's port, status.daemonEndpoints.kubeletEndpoint.Port) and calls
that node's NodeService.Logs with the caller's own credentials: over TLS (when the client
config has a certificate authority) with the config's bearer token, which the agent checks with
the API server; over plain text with none, as every skiff client does. `node_service(...)` is
shared with `skiff exec`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from controlplane.client import scheme
from controlplane.client.api import NotFoundError
from controlplane.client.config import ClientConfig
from deploy.cli.errors import CommandError
from deploy.cli.kubectl.common import Session, add_connection_arguments, run_session
from protos.skiff.node.v1 import node_pb2, node_pb2_grpc

T = TypeVar("T")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pod", metavar="POD", help="the pod's name (or pod/NAME)")
    p.add_argument("-c", "--container", default="", help="the container (optional when the pod has one)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing as the container writes")
    p.add_argument("-p", "--previous", action="store_true", help="the log of the previous instance (before a restart)")
    p.add_argument("--tail", type=int, default=-1, help="the last N lines only (default: all)")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its time")
    add_connection_arguments(p)


def pod_name(word: str) -> str:
    kind, sep, name = word.partition("/")
    if sep and kind not in ("pod", "pods", "po"):
        raise CommandError(f"{word!r}: only pods have logs and exec (use POD or pod/NAME)")
    return name if sep else word


async def node_service(session: Session, namespace: str, pod: str) -> tuple[str, str]:
    """(the node's name, HOST:PORT of its node service) for a pod; CommandError when it has none."""
    try:
        obj = await session.client.get("pods", pod, namespace)
    except NotFoundError:
        raise CommandError(f'pods "{pod}" not found') from None
    node_name = obj.spec.node_name  # type: ignore[attr-defined]
    if not node_name:
        raise CommandError(f"pod {namespace}/{pod} is not on a node yet")
    try:
        node = await session.client.get("nodes", node_name)
    except NotFoundError:
        raise CommandError(f"pod {namespace}/{pod} is on node {node_name}, which is not registered") from None
    port = node.status.daemon_endpoints.kubelet_endpoint.port  # type: ignore[attr-defined]
    addresses = {a.type: a.address for a in node.status.addresses}  # type: ignore[attr-defined]
    host = addresses.get("InternalIP") or addresses.get("Hostname")
    if not port or not host:
        raise CommandError(f"node {node_name} publishes no node service address (is its agent running?)")
    return node_name, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_node_channel(config: ClientConfig, address: str, node_name: str) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    """A channel to a node service with the config's TLS, and the call metadata (the token)."""
    creds = config.channel_credentials()
    if creds is None:
        return grpc.aio.insecure_channel(address), ()
    options = [("grpc.ssl_target_name_override", node_name)]
    return grpc.aio.secure_channel(address, creds, options=options), config.metadata()


async def call_node(session: Session, namespace: str, pod: str,
                    body: Callable[[node_pb2_grpc.NodeServiceStub, tuple[tuple[str, str], ...]], Awaitable[T]]) -> T:
    node_name, address = await node_service(session, namespace, pod)
    channel, metadata = open_node_channel(session.config, address, node_name)
    try:
        return await body(node_pb2_grpc.NodeServiceStub(channel), metadata)
    except grpc.aio.AioRpcError as err:
        detail = err.details() or err.code().name
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            detail = f"cannot reach the node service of {node_name} at {address}: {detail}"
        raise CommandError(" ".join(detail.split())) from None
    finally:
        await channel.close()


def run(args: argparse.Namespace) -> int:
    name = pod_name(args.pod)

    async def body(session: Session) -> int:
        namespace = session.namespace_for(scheme.by_resource("pods"))
        request = node_pb2.LogsRequest(namespace=namespace, pod=name, container=args.container, follow=args.follow,
                                       previous=args.previous, timestamps=args.timestamps)
        if args.tail >= 0:
            request.tail_lines = args.tail

        async def stream(stub: node_pb2_grpc.NodeServiceStub, metadata: tuple[tuple[str, str], ...]) -> int:
            out = sys.stdout.buffer
            async for chunk in stub.Logs(request, metadata=metadata):
                out.write(chunk.data)
                out.flush()
            return 0

        return await call_node(session, namespace, name, stream)

    return run_session(args, body)



if __name__ == "__main__":  # `python -m deploy.cli.kubectl.logs_cmd ...` is `skiff ...` for this command
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.cli.kubectl.logs_cmd"))
