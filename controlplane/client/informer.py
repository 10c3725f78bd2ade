"""Shared informers: list then watch one resource into a local, indexed cache, and tell handlers.

`SharedInformer(client, resource, namespace, label_selector, field_selector, resync_period)`:

- **List, then watch** from the list's resourceVersion (with bookmarks, so an idle watch still
  advances its resourceVersion). A watch that ends cleanly is reopened from the last
  resourceVersion seen. A watch that ends with GoneError (the server no longer holds that
  history) or with any other error (a broken stream, an unreachable server) leads to a relist.
  Failures back off exponentially (`backoff_initial` doubling to `backoff_max`, sleeping through
  the injected `sleep`), except right after a healthy watch - one that delivered events or
  lasted `backoff_reset` seconds on the Clock - which relists at once and resets the backoff.
  A clean end of a watch that was not healthy also waits, so a server that keeps closing
  streams is not hammered. The informer never gives up; `await stop()` ends it.
- **A relist** replaces the cache: objects that appeared are delivered as adds, objects whose
  resourceVersion changed as updates, and objects that vanished meanwhile as deletes carrying
  the last state the cache held (Kubernetes' DeletedFinalStateUnknown, unwrapped).
- **Handlers** (`add_handler(on_add, on_update(old, new), on_delete)`) are plain callables run
  in order on the event loop, after the cache already reflects the change; a handler that
  raises is logged and does not stop the informer or other handlers. A handler added after
  the first list receives an add for every object already cached. Handlers are meant to
  enqueue keys, not to do work (DESIGN: keys in queues, not events).
- **Resync**: every `resync_period` seconds each cached object is re-delivered as
  `on_update(obj, obj)` (level-triggered controllers reconcile everything periodically);
  `resync()` does one now.
- **The cache** is keyed `namespace/name` (`name` for cluster-scoped kinds, as client-go's
  MetaNamespaceKeyFunc); `get(key)`, `list()`, `keys()`, and indexes: `add_index(name, fn)`
  with fn(obj) -> index values, `by_index(name, value)`. Built in: NAMESPACE_INDEX. Ready to
  add: `controller_owner_index` (the uid of the controller ownerReference) and `node_name_index`
  (spec.nodeName).
- `has_synced` is an asyncio.Event that is set once the first list is in the cache; it is also
  truthy exactly when set. `wait_for_sync(timeout)`.

Invariant: objects in the cache (and handed to handlers) are shared and never mutated - by the
informer or by its callers. A caller that wants to change one copies it first
(`new = type(obj)(); new.CopyFrom(obj)`).

`InformerFactory(client)` hands out one informer per (resource, namespace, label selector,
field selector) so that controllers watching the same thing share one watch and one cache.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Protocol

from google.protobuf.message import Message

from controlplane.client import scheme
from controlplane.client.api import ApiStatusError, GoneError, ObjectList, WatchEvent
from controlplane.client.scheme import Kind
from kvstore.clock import Clock, MonotonicClock

log = logging.getLogger(__name__)

NAMESPACE_INDEX = "namespace"
OWNER_INDEX = "controller-owner"
NODE_INDEX = "node-name"

IndexFunc = Callable[[Message], Iterable[str]]
Sleep = Callable[[float], Awaitable[None]]
Objects = list[Message]  # an alias: the classes below have methods named list
Keys = list[str]


class ListerWatcher(Protocol):
    """The two ApiClient calls an informer needs (ApiClient and FakeApi both have them)."""

    async def list(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_token: str = "",
                   resource_version: str = "") -> ObjectList: ...

    def watch(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
              field_selector: str = "", resource_version: str = "",
              bookmarks: bool = False) -> AsyncIterator[WatchEvent]: ...


def object_key(obj: Message) -> str:
    """`namespace/name`, or `name` for an object without a namespace."""
    m = obj.metadata  # type: ignore[attr-defined]
    return f"{m.namespace}/{m.name}" if m.namespace else m.name


def split_key(key: str) -> tuple[str, str]:
    """(namespace, name) of a cache key; namespace "" for cluster-scoped keys."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def namespace_index(obj: Message) -> list[str]:
    return [obj.metadata.namespace]  # type: ignore[attr-defined]


def controller_owner_index(obj: Message) -> list[str]:
    """The uid of the ownerReference with controller: true (at most one), as Kubernetes'."""
    refs = obj.metadata.owner_references  # type: ignore[attr-defined]
    return [ref.uid for ref in refs if ref.HasField("controller") and ref.controller][:1]


def node_name_index(obj: Message) -> list[str]:
    """spec.nodeName when the kind has one and it is set (pods bound to a node)."""
    spec = getattr(obj, "spec", None)
    node = getattr(spec, "node_name", "") if spec is not None else ""
    return [node] if node else []


class Indexer:
    """Objects by key, plus named indexes value -> keys; pure, no I/O."""

    def __init__(self) -> None:
        self._objects: dict[str, Message] = {}
        self._funcs: dict[str, IndexFunc] = {NAMESPACE_INDEX: namespace_index}
        self._indexes: dict[str, dict[str, set[str]]] = {NAMESPACE_INDEX: {}}

    def add_index(self, name: str, fn: IndexFunc) -> None:
        """Register an index (existing objects are indexed at once); a name is registered once."""
        if name in self._funcs:
            if self._funcs[name] is fn:
                return
            raise ValueError(f"index {name!r} is already registered with another function")
        self._funcs[name] = fn
        self._indexes[name] = {}
        for key, obj in self._objects.items():
            self._index_one(name, key, obj)

    def _index_one(self, name: str, key: str, obj: Message) -> None:
        for value in self._funcs[name](obj):
            self._indexes[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Message) -> None:
        for name, fn in self._funcs.items():
            index = self._indexes[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def upsert(self, key: str, obj: Message) -> Message | None:
        """Store obj under key; returns what was there."""
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        for name in self._funcs:
            self._index_one(name, key, obj)
        return old

    def delete(self, key: str) -> Message | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def get(self, key: str) -> Message | None:
        return self._objects.get(key)

    def keys(self) -> Keys:
        return list(self._objects)

    def list(self) -> Objects:
        return list(self._objects.values())

    def by_index(self, name: str, value: str) -> Objects:
        if name not in self._indexes:
            raise KeyError(f"no index named {name!r} (known: {', '.join(sorted(self._indexes))})")
        return [self._objects[k] for k in sorted(self._indexes[name].get(value, ()))]

    def index_keys(self, name: str, value: str) -> Keys:
        if name not in self._indexes:
            raise KeyError(f"no index named {name!r} (known: {', '.join(sorted(self._indexes))})")
        return sorted(self._indexes[name].get(value, ()))


class SyncedEvent(asyncio.Event):
    """An Event that is also truthy when set, so `if informer.has_synced:` reads right."""

    def __bool__(self) -> bool:
        return self.is_set()


@dataclass(frozen=True)
class Handler:
    on_add: Callable[[Message], Any] | None = None
    on_update: Callable[[Message, Message], Any] | None = None
    on_delete: Callable[[Message], Any] | None = None


class SharedInformer:
    """One resource's list+watch loop, cache, indexes and handlers (module docstring)."""

    def __init__(self, client: ListerWatcher, resource: str | Kind, namespace: str = "",
                 label_selector: str = "", field_selector: str = "", resync_period: float | None = None,
                 clock: Clock | None = None, sleep: Sleep = asyncio.sleep, backoff_initial: float = 0.1,
                 backoff_max: float = 30.0, backoff_reset: float = 10.0) -> None:
        self.client = client
        self.kind = resource if isinstance(resource, Kind) else scheme.by_resource(resource)
        self.namespace = namespace if self.kind.namespaced else ""
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.clock: Clock = clock or MonotonicClock()
        self.sleep = sleep
        self.backoff_initial, self.backoff_max, self.backoff_reset = backoff_initial, backoff_max, backoff_reset
        self.store = Indexer()
        self.handlers: list[Handler] = []
        self.has_synced = SyncedEvent()
        self.resource_version = ""
        self.lists = 0      # lists done (the first one and every relist)
        self.watches = 0    # watch streams opened
        self._task: asyncio.Task[None] | None = None
        self._watch_healthy = False

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<SharedInformer {self.kind.resource}{where} rv={self.resource_version or '-'}>"

    # ---- the cache -------------------------------------------------------------------------

    def get(self, key: str) -> Message | None:
        """The cached object (shared: do not mutate), or None."""
        return self.store.get(key)

    def list(self) -> Objects:
        return self.store.list()

    def keys(self) -> Keys:
        return self.store.keys()

    def add_index(self, name: str, fn: IndexFunc) -> None:
        self.store.add_index(name, fn)

    def by_index(self, name: str, value: str) -> Objects:
        return self.store.by_index(name, value)

    # ---- handlers --------------------------------------------------------------------------

    def add_handler(self, on_add: Callable[[Message], Any] | None = None,
                    on_update: Callable[[Message, Message], Any] | None = None,
                    on_delete: Callable[[Message], Any] | None = None) -> Handler:
        handler = Handler(on_add, on_update, on_delete)
        self.handlers.append(handler)
        if self.has_synced and on_add is not None:
            for obj in self.store.list():
                self._call(on_add, obj)
        return handler

    def _call(self, fn: Callable[..., Any] | None, *args: Message) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("%s: event handler %r failed", self.kind.resource, fn)

    def _added(self, obj: Message) -> None:
        for h in list(self.handlers):
            self._call(h.on_add, obj)

    def _updated(self, old: Message, new: Message) -> None:
        for h in list(self.handlers):
            self._call(h.on_update, old, new)

    def _deleted(self, obj: Message) -> None:
        for h in list(self.handlers):
            self._call(h.on_delete, obj)

    def resync(self) -> None:
        """Deliver on_update(obj, obj) for every cached object."""
        for obj in self.store.list():
            self._updated(obj, obj)

    # ---- applying what the server says -----------------------------------------------------

    def replace(self, items: Iterable[Message], resource_version: str) -> None:
        """Make the cache exactly `items` (a list's result) and tell handlers what changed."""
        fresh = {object_key(o): o for o in items}
        for key in [k for k in self.store.keys() if k not in fresh]:
            gone = self.store.delete(key)
            assert gone is not None
            self._deleted(gone)
        for key, obj in fresh.items():
            old = self.store.upsert(key, obj)
            if old is None:
                self._added(obj)
            elif old.metadata.resource_version != obj.metadata.resource_version:  # type: ignore[attr-defined]
                self._updated(old, obj)
        self.resource_version = resource_version
        self.has_synced.set()

    def apply(self, event: WatchEvent) -> None:
        """One watch event into the cache, then to handlers."""
        obj = event.object
        rv = obj.metadata.resource_version  # type: ignore[attr-defined]
        if event.type in ("ADDED", "MODIFIED"):
            old = self.store.upsert(object_key(obj), obj)
            if old is None:
                self._added(obj)
            else:
                self._updated(old, obj)
        elif event.type == "DELETED":
            if self.store.delete(object_key(obj)) is not None:
                self._deleted(obj)
        elif event.type != "BOOKMARK":
            log.warning("%s: ignoring a watch event of unknown type %r", self.kind.resource, event.type)
        if rv:
            self.resource_version = rv

    # ---- the loop --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.kind.resource}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.has_synced.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """List and watch until cancelled."""
        resync = asyncio.create_task(self._resync_loop()) if self.resync_period else None
        try:
            await self._list_and_watch()
        finally:
            if resync is not None:
                resync.cancel()

    async def _resync_loop(self) -> None:
        assert self.resync_period
        while True:
            await self.sleep(self.resync_period)
            if self.has_synced:
                self.resync()

    async def _list_and_watch(self) -> None:
        need_list, delay = True, self.backoff_initial
        while True:
            self._watch_healthy = False
            try:
                if need_list:
                    result = await self.client.list(self.kind, self.namespace, self.label_selector,
                                                    self.field_selector)
                    self.lists += 1
                    self.replace(result.items, result.resource_version)
                    need_list = False
                await self._watch()  # ended cleanly: watch again from the last resourceVersion
            except GoneError as err:
                need_list = True
                log.info("%s: watch from resourceVersion %s is too old (%s); relisting",
                         self.kind.resource, self.resource_version, err)
            except ApiStatusError as err:
                need_list = True
                log.info("%s: list/watch failed (%s); relisting", self.kind.resource, err)
            except Exception:
                need_list = True
                log.exception("%s: list/watch failed; relisting", self.kind.resource)
            if self._watch_healthy:
                delay = self.backoff_initial  # it worked for a while: try again at once
                continue
            await self.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _watch(self) -> None:
        """Follow one watch stream; `_watch_healthy` tells whether it delivered or lasted."""
        started, delivered = self.clock.now(), False
        self.watches += 1
        stream = self.client.watch(self.kind, self.namespace, self.label_selector, self.field_selector,
                                   resource_version=self.resource_version, bookmarks=True)
        try:
            async for event in stream:
                self.apply(event)
                delivered = True
        finally:
            self._watch_healthy = delivered or self.clock.now() - started >= self.backoff_reset
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


class InformerFactory:
    """One shared informer per (resource, namespace, label selector, field selector)."""

    def __init__(self, client: ListerWatcher, resync_period: float | None = None,
                 clock: Clock | None = None, sleep: Sleep = asyncio.sleep) -> None:
        self.client = client
        self.resync_period = resync_period
        self.clock = clock
        self.sleep = sleep
        self._informers: dict[tuple[str, str, str, str], SharedInformer] = {}

    def informer(self, resource: str | Kind, namespace: str = "", label_selector: str = "",
                 field_selector: str = "") -> SharedInformer:
        kind = resource if isinstance(resource, Kind) else scheme.by_resource(resource)
        key = (kind.resource, namespace if kind.namespaced else "", label_selector, field_selector)
        found = self._informers.get(key)
        if found is None:
            found = SharedInformer(self.client, kind, key[1], label_selector, field_selector,
                                   self.resync_period, self.clock, self.sleep)
            self._informers[key] = found
        return found

    @property
    def informers(self) -> list[SharedInformer]:
        return list(self._informers.values())

    def start(self) -> None:
        """Start every informer not yet running (call again after asking for more)."""
        for inf in self._informers.values():
            inf.start()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        """True once every informer has listed; False if that takes longer than timeout."""
        try:
            await asyncio.wait_for(asyncio.gather(*(i.has_synced.wait() for i in self.informers)), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self.informers))
