"""The gRPC face of the API server: skiff.api.v1.Api over the registry, lister and watch caches.

Each call: authenticate (bearer token or client certificate; none -> UNAUTHENTICATED), resolve
the resource, authorize (PERMISSION_DENIED names what was refused), unpack and check the
object, then run the verb. Every failure a client can cause becomes one gRPC status with one
message (errors.ApiError); anything else is logged with its traceback and returned as INTERNAL
with a one-line message, so a malformed request never kills the server or leaks a stack trace.

Watches hold no thread: each is a coroutine reading its watch-cache queue. A client (by user
name) may hold at most `max_watches_per_user` watches at once.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from controlplane.apiserver import errors
from controlplane.apiserver.auth import authn, authz
from controlplane.apiserver.lister import Lister
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.watchcache import BOOKMARK, ResourceCache, TooOld
from controlplane.client import scheme, selectors
from controlplane.client.scheme import Kind
from protos.skiff.api.v1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)
R = TypeVar("R")
MAX_BATCH = 256  # events per watch message when a watcher has fallen behind
MAX_WATCH_PAUSE = 0.1  # the longest a watcher waits between two messages


@dataclass
class ServiceConfig:
    bookmark_interval: float = 10.0
    max_watches_per_user: int = 5000
    # Watch messages per second, per resource, that the server aims not to exceed: after a
    # message a watcher waits (watchers of the resource / this rate) seconds, at least
    # watch_flush_interval and at most 0.1 s, and events that arrive meanwhile go out together.
    # Each gRPC write costs tens of microseconds of Python, so with 100 watchers at 200 events/s
    # this turns 20,000 writes/s into about 2,000; at rest it delays nothing but an event that
    # follows another within the wait.
    watch_flush_interval: float = 0.01
    watch_message_rate: float = 2000.0


def guarded(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn ApiErrors into their status and unexpected exceptions into INTERNAL (logged)."""
    @functools.wraps(method)
    async def wrapper(self: "ApiService", request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except errors.ApiError as err:
            await context.abort(err.code, err.message)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the server must survive any request
            if isinstance(err, grpc.aio.AbortError):
                raise
            log.exception("internal error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")
        raise AssertionError("unreachable")
    return wrapper


class ApiService(api_pb2_grpc.ApiServicer):
    def __init__(self, registry: Registry, lister: Lister, caches: dict[str, ResourceCache],
                 authenticator: authn.Authenticator | None, config: ServiceConfig | None = None) -> None:
        self.registry = registry
        self.lister = lister
        self.caches = caches
        self.authenticator = authenticator
        self.config = config or ServiceConfig()
        self.watch_counts: Counter[str] = Counter()

    # ---- the checks every call makes -------------------------------------------------------

    async def _user(self, context: grpc.aio.ServicerContext) -> authn.UserInfo:
        if self.authenticator is None:  # --no-auth: every caller is an administrator
            return authn.UserInfo("system:admin", (authz.MASTERS_GROUP,))
        metadata, auth_context = authn.call_credentials(context)
        try:
            user = self.authenticator.authenticate(metadata, auth_context)
        except authn.AuthenticationError as err:
            raise errors.Unauthenticated(f"Unauthorized: {err}") from None
        if user is None:
            raise errors.Unauthenticated("Unauthorized: no credentials: present a bearer token or a client certificate")
        return user

    async def _allow(self, context: grpc.aio.ServicerContext, verb: str, kind: Kind, namespace: str,
                     name: str, subresource: str = "") -> authn.UserInfo:
        user = await self._user(context)
        if self.authenticator is None:
            return user
        pod_node: str | None = None
        if kind.resource == "pods" and any(g == authz.NODES_GROUP for g in user.groups) and name:
            cached = self.caches["pods"].objects.get(f"{namespace}/{name}")
            pod_node = cached.spec.node_name if cached is not None else ""  # type: ignore[attr-defined]
        attrs = authz.RequestAttributes(user, verb, kind.resource, namespace if kind.namespaced else "",
                                        name, subresource, pod_node)
        decision = authz.authorize(attrs)
        if not decision.allowed:
            raise errors.Forbidden(decision.reason)
        return user

    @staticmethod
    def _kind(resource: str) -> Kind:
        try:
            return scheme.by_resource(resource)
        except KeyError as err:
            raise errors.NotFound(str(err.args[0])) from None

    @staticmethod
    def _unpack(kind: Kind, value: any_pb2.Any) -> Message:
        try:
            obj = scheme.from_any(value)
        except (ValueError, KeyError, ProtobufDecodeError) as err:
            raise errors.BadRequest(f"{kind.group_resource}: the object cannot be decoded: {err}") from None
        if type(obj) is not kind.message:
            raise errors.BadRequest(f"{kind.group_resource}: the object is a {type(obj).__name__}, "
                                    f"not a {kind.kind}")
        return obj

    @staticmethod
    def _namespace(kind: Kind, namespace: str) -> str:
        return (namespace or "default") if kind.namespaced else ""

    # ---- verbs -----------------------------------------------------------------------------

    @guarded
    async def Create(self, request: api_pb2.CreateRequest, context: grpc.aio.ServicerContext) -> any_pb2.Any:
        kind = self._kind(request.resource)
        obj = self._unpack(kind, request.object)
        ns = self._namespace(kind, request.namespace or obj.metadata.namespace)  # type: ignore[attr-defined]
        await self._allow(context, "create", kind, ns, obj.metadata.name)  # type: ignore[attr-defined]
        return scheme.to_any(await self.registry.create(kind, ns, obj, request.dry_run))

    @guarded
    async def Get(self, request: api_pb2.GetRequest, context: grpc.aio.ServicerContext) -> any_pb2.Any:
        kind = self._kind(request.resource)
        ns = self._namespace(kind, request.namespace)
        await self._allow(context, "get", kind, ns, request.name)
        return scheme.to_any(await self.registry.read(kind, ns, request.name))

    @guarded
    async def List(self, request: api_pb2.ListRequest, context: grpc.aio.ServicerContext) -> api_pb2.ListResponse:
        kind = self._kind(request.resource)
        ns = request.namespace if kind.namespaced else ""
        await self._allow(context, "list", kind, ns, "")
        selected = _matcher(kind, request.label_selector, request.field_selector)
        result = await self.lister.list(kind, ns, selected.matches, selected.selective, request.limit,
                                        request.continue_token, request.resource_version)
        resp = api_pb2.ListResponse(resource_version=result.resource_version,
                                    continue_token=result.continue_token,
                                    items=[scheme.to_any(o) for o in result.items])
        if result.remaining is not None:
            resp.remaining_item_count = result.remaining
        return resp

    @guarded
    async def Update(self, request: api_pb2.UpdateRequest, context: grpc.aio.ServicerContext) -> any_pb2.Any:
        kind = self._kind(request.resource)
        obj = self._unpack(kind, request.object)
        ns = self._namespace(kind, request.namespace or obj.metadata.namespace)  # type: ignore[attr-defined]
        await self._allow(context, "update", kind, ns, obj.metadata.name)  # type: ignore[attr-defined]
        return scheme.to_any(await self.registry.update(kind, ns, obj, request.dry_run))

    @guarded
    async def UpdateStatus(self, request: api_pb2.UpdateRequest, context: grpc.aio.ServicerContext) -> any_pb2.Any:
        kind = self._kind(request.resource)
        obj = self._unpack(kind, request.object)
        ns = self._namespace(kind, request.namespace or obj.metadata.namespace)  # type: ignore[attr-defined]
        await self._allow(context, "update", kind, ns, obj.metadata.name, "status")  # type: ignore[attr-defined]
        return scheme.to_any(await self.registry.update_status(kind, ns, obj, request.dry_run))

    @guarded
    async def Patch(self, request: api_pb2.PatchRequest, context: grpc.aio.ServicerContext) -> any_pb2.Any:
        kind = self._kind(request.resource)
        ns = self._namespace(kind, request.namespace)
        if request.subresource not in ("", "status"):
            raise errors.NotFound(f'{kind.group_resource} has no subresource "{request.subresource}"')
        await self._allow(context, "patch", kind, ns, request.name, request.subresource)
        return scheme.to_any(await self.registry.patch(kind, ns, request.name, request.patch, request.patch_type,
                                                       request.subresource, request.dry_run))

    @guarded
    async def Delete(self, request: api_pb2.DeleteRequest, context: grpc.aio.ServicerContext) -> api_pb2.DeleteResponse:
        kind = self._kind(request.resource)
        ns = self._namespace(kind, request.namespace)
        await self._allow(context, "delete", kind, ns, request.name)
        grace = request.grace_period_seconds if request.HasField("grace_period_seconds") else None
        obj, removed = await self.registry.delete(
            kind, ns, request.name, grace, request.propagation_policy, request.preconditions.uid,
            request.preconditions.resource_version, request.dry_run)
        return api_pb2.DeleteResponse(object=scheme.to_any(obj), deleted=removed)

    @guarded
    async def Bind(self, request: api_pb2.BindRequest, context: grpc.aio.ServicerContext) -> any_pb2.Any:
        kind = scheme.by_resource("pods")
        ns = self._namespace(kind, request.namespace)
        await self._allow(context, "create", kind, ns, request.name, "binding")
        return scheme.to_any(await self.registry.bind(kind, ns, request.name, request.node_name, request.uid))

    @guarded
    async def WhoAmI(self, request: api_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext) -> api_pb2.WhoAmIResponse:
        user = await self._user(context)
        return api_pb2.WhoAmIResponse(username=user.name, groups=list(user.groups))

    # ---- watch -----------------------------------------------------------------------------

    async def Watch(self, request: api_pb2.WatchRequest,
                    context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            kind = self._kind(request.resource)
            ns = request.namespace if kind.namespaced else ""
            user = await self._allow(context, "watch", kind, ns, "")
            selected = _matcher(kind, request.label_selector, request.field_selector)
            from_rev = _watch_start(request.resource_version)
            if self.watch_counts[user.name] >= self.config.max_watches_per_user:
                raise errors.TooMany(f'user "{user.name}" has too many watches open '
                                     f"(limit {self.config.max_watches_per_user})")
            cache = self.caches[kind.resource]
            await asyncio.wait_for(cache.ready.wait(), 10.0)
            trigger = selected.fields.exact(cache.trigger_field) if cache.trigger_field is not None else None
            try:
                watcher = cache.watch(ns, selected.matches, from_rev, trigger)
            except TooOld as err:
                raise errors.Gone(str(err)) from None
        except errors.ApiError as err:
            await context.abort(err.code, err.message)
            return
        self.watch_counts[user.name] += 1
        try:
            async for event in self._events(kind, cache, watcher, request.allow_watch_bookmarks):
                yield event
        except errors.ApiError as err:
            await context.abort(err.code, err.message)
        finally:
            cache.unwatch(watcher)
            self.watch_counts[user.name] -= 1
            if self.watch_counts[user.name] <= 0:
                del self.watch_counts[user.name]

    async def _events(self, kind: Kind, cache: ResourceCache, watcher: Any,
                      bookmarks: bool) -> AsyncIterator[bytes]:
        """Encoded WatchResponses: whatever has queued for this watcher, up to MAX_BATCH events
        per message (one event when the server keeps up)."""
        timeout = self.config.bookmark_interval if bookmarks else None
        queue = watcher.queue
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                mark = kind.message()
                mark.metadata.resource_version = str(cache.rev)  # type: ignore[attr-defined]
                event = api_pb2.WatchEvent(type=BOOKMARK, object=scheme.to_any(mark))
                yield api_pb2.WatchResponse(events=[event]).SerializeToString()
                continue
            batch: list[bytes] = []
            while True:
                if isinstance(item, Exception):
                    if batch:
                        yield b"".join(batch)
                    if isinstance(item, TooOld):
                        raise errors.Gone(str(item))
                    raise errors.Unavailable(f"watch ended: {item}; watch again")
                batch.append(item.wire)
                if len(batch) >= MAX_BATCH or queue.empty():
                    break
                item = queue.get_nowait()
            yield b"".join(batch)
            pause = max(self.config.watch_flush_interval, len(cache.watchers) / self.config.watch_message_rate)
            if pause > 0:
                await asyncio.sleep(min(pause, MAX_WATCH_PAUSE))


def _watch_start(resource_version: str) -> int | None:
    if resource_version in ("", "0"):
        return None
    try:
        rev = int(resource_version)
    except ValueError:
        raise errors.BadRequest(f'resourceVersion "{resource_version}" is not a number') from None
    if rev < 0:
        raise errors.BadRequest(f'resourceVersion "{resource_version}" is negative')
    return rev


class Selected(NamedTuple):
    matches: Callable[[Message], bool]  # the selectors as a predicate
    selective: bool                     # whether they select at all (for remainingItemCount)
    fields: selectors.FieldSelector     # the parsed field selector (for indexed watches)


def _matcher(kind: Kind, label_selector: str, field_selector: str) -> Selected:
    """The request's label and field selectors, parsed and checked against the kind."""
    try:
        labels = selectors.parse_label_selector(label_selector)
        fields = selectors.parse_field_selector(field_selector)
        fields.validate(kind.message.DESCRIPTOR)
    except selectors.SelectorError as err:
        raise errors.BadRequest(f"{kind.group_resource}: {err}") from None
    if labels.empty and fields.empty:
        return Selected(lambda obj: True, False, fields)
    return Selected(lambda obj: labels.matches(obj.metadata.labels) and fields.matches(obj),  # type: ignore[attr-defined]
                    True, fields)
