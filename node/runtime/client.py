"""A CRI client: one grpc.aio channel to a runtime's unix socket and both ``runtime.v1`` stubs.

Works against skiff's runtime and against containerd's CRI plugin alike (same wire protocol)::

    async with CRIClient.connect("unix:///run/containerd/containerd.sock") as cri:
        version = await cri.runtime.Version(api_pb2.VersionRequest(), timeout=5)
        await cri.images.PullImage(...)

Endpoints: ``unix:///abs/path``, ``unix:/abs/path`` or a bare absolute path (the kubelet's
``--container-runtime-endpoint`` forms). Messages up to 16 MiB (ExecSync's cap) plus headroom
are accepted in both directions.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

import grpc

from protos.cri.runtime.v1 import api_pb2, api_pb2_grpc

MAX_MESSAGE = 40 << 20  # two 16 MiB ExecSync streams and headroom


def normalize_endpoint(endpoint: str) -> str:
    """The gRPC target for a runtime endpoint; ValueError for anything but a unix socket."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
    elif endpoint.startswith("unix:"):
        path = endpoint[len("unix:"):]
    elif endpoint.startswith("/"):
        path = endpoint
    else:
        raise ValueError(f"runtime endpoint {endpoint!r}: want unix:///path/to/socket or an absolute path")
    if not path.startswith("/"):
        raise ValueError(f"runtime endpoint {endpoint!r}: the socket path must be absolute")
    return f"unix://{path}"


@dataclass
class CRIClient:
    """The two CRI services on one channel; close it (or use ``async with``) when done."""

    channel: grpc.aio.Channel
    runtime: api_pb2_grpc.RuntimeServiceStub
    images: api_pb2_grpc.ImageServiceStub
    endpoint: str

    @classmethod
    def connect(cls, endpoint: str) -> CRIClient:
        """Open the channel (lazily: the first call connects). Call inside an event loop."""
        target = normalize_endpoint(endpoint)
        channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE)])
        return cls(channel, api_pb2_grpc.RuntimeServiceStub(channel),
                   api_pb2_grpc.ImageServiceStub(channel), target)

    async def wait_ready(self, timeout: float = 10.0) -> api_pb2.VersionResponse:
        """Wait until the runtime answers Version (it may still be starting); its answer."""
        response: api_pb2.VersionResponse = await self.runtime.Version(
            api_pb2.VersionRequest(version="v1"), timeout=timeout, wait_for_ready=True)
        return response

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> CRIClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
