"""Hollow nodes: many real node agents in one process, each over its own in-process fake runtime.

A hollow node is the real `node.agent.agent.Agent` - registration, Node status, the node Lease,
the pod informer, pod workers, status writes, deletion, the node service - with one thing
swapped: instead of dialing a CRI runtime over a unix socket it calls, in the same event loop,
skiff's own `RuntimeServicer` over a `FakeHandler` (sandboxes and containers that "run" without
processes) and a `FakeImageServicer` (node.runtime.images.fake) that "pulls" any image instantly (the servicer sees
`FakeImageStore`: records without layers for the images pulled, Cmd `/hollow`). So everything the
control plane sees of a hollow node comes from the same code as from a real one; only the
containers are not there. Kubernetes' kubemark does the same with the kubelet and a fake runtime.

Why in-process and not a CRI server per node: 100 gRPC servers and 100 unix-socket channels in
one process would spend the CPU on HTTP/2 framing of calls that cost a dict update. The adapter
keeps the CRI contract where it matters to the agent:

- `InProcessStub(servicer, service)`: one attribute per unary RPC of the service, called as a
  grpc.aio stub method is (`await stub.RunPodSandbox(request, timeout=...)`). The servicer
  method gets the request and an `InProcessContext`; `context.abort(code, message)` raises
  `grpc.aio.AioRpcError` with that code and message, as the agent would get over the wire (it
  checks NOT_FOUND and reads `details()`). An unimplemented method is UNIMPLEMENTED.
  Timeouts and metadata are accepted and ignored: the fake handler never blocks.
- Requests and responses are not serialized: the servicer builds fresh messages for every
  answer and copies what it keeps from a request, so no message is shared between the two sides.
- `HollowCRIClient` is a `node.runtime.client.CRIClient` whose two stubs are in-process, so the
  agent (which takes a CRIClient) runs unchanged. `HollowAgent` only overrides
  `Agent._connect_runtime` to hand it one; nothing under node/agent/ knows about hollow nodes.

`HollowNodes(configs).run(stop)` runs the agents side by side (starts staggered by
`start_spacing` so M registrations do not land at once) and sets `ready` once every Node is
registered. Each node has its own directory `<root>/<node>` (the fake runtime's journal, pod
volumes and logs), its own pod CIDR (`pod_cidrs(base, start, count)`: the start+i-th /24 of the
base), its own API channel and watch, and its node service on 127.0.0.1 (a free port).

Invariants: a node's runtime state is only ever touched by that node's agent; one process holds
each node (two processes with the same node name would fight over its Lease).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from node.agent.agent import Agent, AgentConfig
from node.runtime.client import CRIClient
from node.runtime.fake import FakeHandler
from node.runtime.images.fake import FakeImageServicer, FakeImageStore
from node.runtime.server import RuntimeServicer
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.cri.runtime.v1 import api_pb2_grpc

log = logging.getLogger(__name__)

RUNTIME_SERVICE = cri.DESCRIPTOR.services_by_name["RuntimeService"]
IMAGE_SERVICE = cri.DESCRIPTOR.services_by_name["ImageService"]


# --- calling a servicer as if over the wire ----------------------------------------------------


class InProcessContext:
    """The part of grpc.aio.ServicerContext that skiff's CRI servicers use."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: object = ()) -> NoReturn:
        raise rpc_error(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a grpc.aio stub raises for a call that ended with this status."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


UnaryCall = Callable[..., Awaitable[Message]]


class InProcessStub:
    """Every unary RPC of `service` as an attribute, calling `servicer` directly (see above)."""

    def __init__(self, servicer: object, service: ServiceDescriptor) -> None:
        self.service_name = service.full_name
        for method in service.methods:
            if not (method.client_streaming or method.server_streaming):
                setattr(self, method.name, self._bind(servicer, method.name))

    def _bind(self, servicer: object, name: str) -> UnaryCall:
        handler = getattr(servicer, name)
        full = f"/{self.service_name}/{name}"

        async def call(request: Message, timeout: float | None = None, **_: Any) -> Message:
            context = InProcessContext()
            try:
                result = handler(request, context)
                response = await result if asyncio.iscoroutine(result) else result
            except NotImplementedError:
                raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, f"{full} is not implemented") from None
            if context.code is not None and context.code != grpc.StatusCode.OK:
                raise rpc_error(context.code, context.details)
            return cast(Message, response)
        call.__name__ = name
        return call

    def __getattr__(self, name: str) -> Any:  # only reached for names the service does not have
        raise AttributeError(f"{self.service_name} has no unary method {name!r}")



# --- the hollow runtime and agent ---------------------------------------------------------------


class HollowCRIClient(CRIClient):
    """A CRIClient whose stubs call a fake runtime in this process (no channel)."""

    @classmethod
    def for_root(cls, root: Path, pod_cidr: str | None, name: str) -> HollowCRIClient:
        handler = FakeHandler(root, pod_cidr)
        hollow_images = FakeImageServicer()
        servicer = RuntimeServicer([handler], FakeImageStore(root / "images", hollow_images))
        servicer.recover()
        # The stubs are duck-typed: the same method names and call shape as the generated ones.
        runtime = cast(api_pb2_grpc.RuntimeServiceStub, InProcessStub(servicer, RUNTIME_SERVICE))
        images = cast(api_pb2_grpc.ImageServiceStub, InProcessStub(hollow_images, IMAGE_SERVICE))
        client = cls(cast(grpc.aio.Channel, None), runtime, images, f"inprocess://{name}")
        client.handler = handler
        return client

    handler: FakeHandler
    closed = False

    async def close(self) -> None:
        """Close the fake runtime's journal; safe twice (the agent closes it, and so do we)."""
        if not self.closed:
            self.closed = True
            self.handler.close()


class HollowAgent(Agent):
    """The real agent over an in-process fake runtime (see the module docstring)."""

    def __init__(self, config: AgentConfig) -> None:
        super().__init__(config)
        self.hollow_cri = HollowCRIClient.for_root(config.root / "runtime", config.node.pod_cidr or None,
                                                   config.node.name)

    async def _connect_runtime(self) -> tuple[CRIClient, cri.VersionResponse]:
        version = await self.hollow_cri.runtime.Version(cri.VersionRequest(version="v1"))
        return self.hollow_cri, version


# --- many of them -------------------------------------------------------------------------------


def node_names(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(start, start + count)]


def pod_cidrs(base: str, start: int, count: int, prefix_len: int = 24) -> list[str]:
    """The start-th .. (start+count-1)-th /prefix_len subnets of `base`; ValueError when it has too few."""
    network = ipaddress.IPv4Network(base)
    if prefix_len < network.prefixlen:
        raise ValueError(f"pod CIDR base {base}: cannot hold /{prefix_len} subnets")
    available = 2 ** (prefix_len - network.prefixlen)
    if start < 0 or start + count > available:
        raise ValueError(f"pod CIDR base {base} has {available} /{prefix_len} subnets: not enough for nodes "
                         f"{start}..{start + count - 1} (use a larger base, e.g. a /12)")
    size = 2 ** (32 - prefix_len)
    first = int(network.network_address)
    return [str(ipaddress.IPv4Network((first + (start + i) * size, prefix_len))) for i in range(count)]


@dataclass(frozen=True)
class HollowSpec:
    """What differs between the hollow nodes of one process; the rest comes from `template`."""
    prefix: str = "hollow-"
    start: int = 0
    count: int = 1
    pod_cidr_base: str = "10.200.0.0/16"


def hollow_configs(template: AgentConfig, spec: HollowSpec) -> list[AgentConfig]:
    """One AgentConfig per node: its name, pod CIDR, root directory; node service on a free port."""
    cidrs = pod_cidrs(spec.pod_cidr_base, spec.start, spec.count)
    out = []
    for name, cidr in zip(node_names(spec.prefix, spec.start, spec.count), cidrs):
        node = replace(template.node, name=name, pod_cidr=cidr)
        out.append(replace(template, node=node, root=template.root / name,
                           listen_node_service=f"{template.node.node_ip}:0"))
    return out


class HollowNodes:
    """Runs hollow agents side by side in this event loop (see the module docstring)."""

    def __init__(self, configs: Sequence[AgentConfig], start_spacing: float = 0.01) -> None:
        self.agents = [HollowAgent(c) for c in configs]
        self.start_spacing = start_spacing
        self.ready = asyncio.Event()
        self.started_at = 0.0
        self.registered_in = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Run every agent until `stop` is set; the first agent to fail ends the run with its error."""
        self.started_at = time.monotonic()
        tasks = []
        for agent in self.agents:
            tasks.append(asyncio.create_task(agent.run(stop), name=f"hollow-{agent.config.node.name}"))
            await asyncio.sleep(self.start_spacing)
        watcher = asyncio.create_task(self._wait_registered())
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    stop.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise cast(BaseException, task.exception())
        finally:
            watcher.cancel()
            for agent in self.agents:
                await agent.hollow_cri.close()

    async def _wait_registered(self) -> None:
        while not all(a.reporter is not None and a.reporter.registered.is_set() for a in self.agents):
            await asyncio.sleep(0.05)
        self.registered_in = time.monotonic() - self.started_at
        self.ready.set()
