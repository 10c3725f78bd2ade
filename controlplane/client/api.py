"""A typed asyncio client of skiff's API (skiff.api.v1.Api): objects in, objects out.

Every component (scheduler, controllers, node agent, CLI, benchmarks) talks to the API server
through this. Objects are the generated messages (core_pb2.Pod, apps_pb2.Deployment); the
resource is found from the message (create/update) or named kubectl-style ("deploy", "pods").

Failures raise `ApiStatusError` (or one of its subclasses by gRPC code: NotFoundError,
AlreadyExistsError, ConflictError, InvalidError, GoneError, ForbiddenError,
UnauthenticatedError, UnavailableError), whose str() is the server's one-line message.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence, TypeVar

import grpc
from google.protobuf.message import Message

from controlplane.client import scheme
from controlplane.client.config import ClientConfig
from controlplane.client.scheme import Kind
from protos.skiff.api.v1 import api_pb2, api_pb2_grpc

M = TypeVar("M", bound=Message)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.max_send_message_length", 3 * 1024 * 1024),
]


class ApiStatusError(Exception):
    """A refused API call: `code` is the gRPC status, str() the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFoundError(ApiStatusError): ...
class AlreadyExistsError(ApiStatusError): ...
class ConflictError(ApiStatusError): ...
class InvalidError(ApiStatusError): ...
class GoneError(ApiStatusError): ...
class ForbiddenError(ApiStatusError): ...
class UnauthenticatedError(ApiStatusError): ...
class UnavailableError(ApiStatusError): ...


_BY_CODE: dict[grpc.StatusCode, type[ApiStatusError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.ABORTED: ConflictError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidError,
    grpc.StatusCode.OUT_OF_RANGE: GoneError,
    grpc.StatusCode.PERMISSION_DENIED: ForbiddenError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


def status_error(err: grpc.aio.AioRpcError) -> ApiStatusError:
    code = err.code()
    message = err.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and "connect" in message.lower():
        message = f"cannot reach the API server: {message}"
    return _BY_CODE.get(code, ApiStatusError)(code, message)


@dataclass
class ObjectList:
    items: list[Message]
    resource_version: str
    continue_token: str = ""
    remaining_item_count: int | None = None


@dataclass(frozen=True)
class WatchEvent:
    type: str          # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Message


def _kind(resource: str | Kind) -> Kind:
    return resource if isinstance(resource, Kind) else scheme.by_resource(resource)


class ApiClient:
    """Calls on one grpc.aio channel; `metadata` carries the bearer token when there is one."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]] = (),
                 timeout: float = 30.0) -> None:
        self.channel = channel
        self.stub = api_pb2_grpc.ApiStub(channel)
        self.metadata = tuple(metadata)
        self.timeout = timeout

    @classmethod
    def connect(cls, server: str, credentials: grpc.ChannelCredentials | None = None,
                token: str | None = None, timeout: float = 30.0) -> "ApiClient":
        """A client on a new channel (TLS when credentials are given); call inside a loop."""
        if credentials is None:
            channel = grpc.aio.insecure_channel(server, options=CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(server, credentials, options=CHANNEL_OPTIONS)
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return cls(channel, metadata, timeout)

    @classmethod
    def from_config(cls, config: "ClientConfig", timeout: float = 30.0) -> "ApiClient":
        """A client for a loaded client config (server, TLS, token); call inside a loop."""
        # On TLS the channel carries the token as call credentials; on plain text, metadata.
        metadata = config.metadata() if config.channel_credentials() is None else ()
        return cls(config.open_channel(CHANNEL_OPTIONS), metadata, timeout)

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            raise status_error(err) from None

    async def create(self, obj: M, namespace: str = "", dry_run: bool = False) -> M:
        kind = scheme.by_message(obj)
        req = api_pb2.CreateRequest(resource=kind.resource, namespace=namespace,
                                    object=scheme.to_any(obj), dry_run=dry_run)
        return scheme.from_any(await self._call(self.stub.Create, req))  # type: ignore[return-value]

    async def get(self, resource: str | Kind, name: str, namespace: str = "") -> Message:
        kind = _kind(resource)
        req = api_pb2.GetRequest(resource=kind.resource, namespace=namespace, name=name)
        return scheme.from_any(await self._call(self.stub.Get, req))

    async def list(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ObjectList:
        kind = _kind(resource)
        req = api_pb2.ListRequest(resource=kind.resource, namespace=namespace, label_selector=label_selector,
                                  field_selector=field_selector, limit=limit, continue_token=continue_token,
                                  resource_version=resource_version)
        resp = await self._call(self.stub.List, req)
        remaining = resp.remaining_item_count if resp.HasField("remaining_item_count") else None
        return ObjectList([scheme.from_any(a) for a in resp.items], resp.resource_version,
                          resp.continue_token, remaining)

    async def update(self, obj: M, dry_run: bool = False) -> M:
        kind = scheme.by_message(obj)
        req = api_pb2.UpdateRequest(resource=kind.resource, namespace=obj.metadata.namespace,  # type: ignore[attr-defined]
                                    object=scheme.to_any(obj), dry_run=dry_run)
        return scheme.from_any(await self._call(self.stub.Update, req))  # type: ignore[return-value]

    async def update_status(self, obj: M) -> M:
        kind = scheme.by_message(obj)
        req = api_pb2.UpdateRequest(resource=kind.resource, namespace=obj.metadata.namespace,  # type: ignore[attr-defined]
                                    object=scheme.to_any(obj))
        return scheme.from_any(await self._call(self.stub.UpdateStatus, req))  # type: ignore[return-value]

    async def patch(self, resource: str | Kind, name: str, patch: dict[str, Any], namespace: str = "",
                    subresource: str = "") -> Message:
        """A JSON merge patch (RFC 7386)."""
        kind = _kind(resource)
        req = api_pb2.PatchRequest(resource=kind.resource, namespace=namespace, name=name, patch_type="merge",
                                   patch=json.dumps(patch).encode(), subresource=subresource)
        return scheme.from_any(await self._call(self.stub.Patch, req))

    async def delete(self, resource: str | Kind, name: str, namespace: str = "",
                     grace_period_seconds: int | None = None, propagation_policy: str = "",
                     uid: str = "", resource_version: str = "") -> tuple[Message, bool]:
        """Delete; returns (the object, whether it is gone now rather than being finalized)."""
        kind = _kind(resource)
        req = api_pb2.DeleteRequest(resource=kind.resource, namespace=namespace, name=name,
                                    propagation_policy=propagation_policy,
                                    preconditions=api_pb2.Preconditions(uid=uid, resource_version=resource_version))
        if grace_period_seconds is not None:
            req.grace_period_seconds = grace_period_seconds
        resp = await self._call(self.stub.Delete, req)
        return scheme.from_any(resp.object), resp.deleted

    async def bind(self, namespace: str, name: str, node_name: str, uid: str = "") -> Message:
        req = api_pb2.BindRequest(namespace=namespace, name=name, node_name=node_name, uid=uid)
        return scheme.from_any(await self._call(self.stub.Bind, req))

    async def whoami(self) -> tuple[str, tuple[str, ...]]:
        resp = await self._call(self.stub.WhoAmI, api_pb2.WhoAmIRequest())
        return resp.username, tuple(resp.groups)

    async def watch(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
                    field_selector: str = "", resource_version: str = "",
                    bookmarks: bool = False) -> AsyncIterator[WatchEvent]:
        """Events after resource_version ("" = current objects as ADDED first). Ends by raising
        ApiStatusError (GoneError: relist) or when the caller stops iterating."""
        kind = _kind(resource)
        req = api_pb2.WatchRequest(resource=kind.resource, namespace=namespace, label_selector=label_selector,
                                   field_selector=field_selector, resource_version=resource_version,
                                   allow_watch_bookmarks=bookmarks)
        call = self.stub.Watch(req, metadata=self.metadata)
        try:
            async for response in call:
                for event in response.events:
                    yield WatchEvent(event.type, scheme.from_any(event.object))
        except grpc.aio.AioRpcError as err:
            raise status_error(err) from None
        finally:
            call.cancel()
