"""The watch cache: one store watch per resource, fanned out to every client watch.

For each resource the API server lists `/registry/<resource>/` once, then watches the prefix
from the next revision. The cache holds every object (decoded, with metadata.resourceVersion
set) and a window of recent events, so that
- a client watch costs a queue, not a store watch or a thread (thousands can be open);
- a watch from resourceVersion N replays the window's events after N, or fails with `TooOld`
  when N is older than the window (the client relists, as client-go does on 410 Gone);
- a list can be served from memory. `wait_fresh(rev)` makes that consistent: the caller reads
  the store's current revision (a linearizable read) and waits until the cache has seen it,
  asking the store for a progress notification when the resource is idle.

Indexed triggers (Kubernetes' watch cache does the same for pods): a watcher whose field selector
requires `spec.nodeName=N` (each node agent's) is filed under N, and an event is offered only to
the watchers filed under the node of the object before or after the change, plus every watcher
without a trigger. Each watcher still applies its whole filter; the index only spares the cost of
asking a hundred node agents about every pod.

Invariants: `rev` only grows; every event in `history` has rev <= `rev`; history holds every
event with rev > `history_start`. Objects in the cache are shared and never mutated: callers copy
before changing one. When the store compacts past the cache's revision (it was cut off for long),
the cache relists and ends every open watch with `TooOld`, so clients relist too.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.apiserver.storage import StoreClient, StoreCompacted, StoreUnavailable, prefix_end
from controlplane.client import selectors
from controlplane.client.scheme import Kind, to_any
from protos.etcd.mvccpb import kv_pb2
from protos.skiff.api.v1 import api_pb2

log = logging.getLogger(__name__)

ADDED, MODIFIED, DELETED, BOOKMARK = "ADDED", "MODIFIED", "DELETED", "BOOKMARK"
LIST_PAGE = 1000
TRIGGER_FIELDS = {"pods": "spec.nodeName"}  # resource -> the field watchers are indexed by


class TooOld(Exception):
    """A watch asked for events the cache no longer holds."""

    def __init__(self, asked: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {asked} ({oldest})")


@dataclass(frozen=True)
class CacheEvent:
    type: str
    rev: int
    key: str
    obj: Message                # the object after the change; for DELETED its last state
    prev: Message | None        # the object before the change (None for ADDED)

    @functools.cached_property
    def packed(self) -> any_pb2.Any:
        """The object as an Any, packed once however many watchers send it."""
        return to_any(self.obj)

    @functools.cached_property
    def wire(self) -> bytes:
        """This event encoded as a one-event api.v1.WatchResponse, shared by every watcher.
        Encodings of one-event responses concatenate into a valid many-event response."""
        event = api_pb2.WatchEvent(type=self.type, object=self.packed)
        return api_pb2.WatchResponse(events=[event]).SerializeToString()


Matcher = Callable[[Message], bool]


@dataclass(eq=False)
class CacheWatcher:
    """One client watch: events that concern it, in order, on a bounded queue."""

    namespace: str
    matches: Matcher
    capacity: int
    queue: asyncio.Queue[CacheEvent | Exception] = field(default_factory=asyncio.Queue)
    closed: bool = False
    trigger: str | None = None  # the indexed field's value this watcher requires (None: any)

    def offer(self, event: CacheEvent) -> None:
        """Queue the event as this watcher sees it (selectors turn MODIFIED into ADDED/DELETED)."""
        if self.closed or (self.namespace and event.obj.metadata.namespace != self.namespace):  # type: ignore[attr-defined]
            return
        now = self.matches(event.obj)
        before = event.prev is not None and self.matches(event.prev)
        if event.type == DELETED:
            seen = event if (now or before) else None
        elif now and (before or event.type == ADDED):
            seen = event  # the shared event, so its encoding is shared too
        elif now:
            seen = CacheEvent(ADDED, event.rev, event.key, event.obj, None)
        elif before:
            assert event.prev is not None
            seen = CacheEvent(DELETED, event.rev, event.key, with_rv(event.prev, event.rev), event.prev)
        else:
            seen = None
        if seen is None:
            return
        if self.queue.qsize() >= self.capacity:
            self.close(TooOld(event.rev, event.rev))  # too slow: it must relist, as Kubernetes does
            return
        self.queue.put_nowait(seen)

    def close(self, reason: Exception) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(reason)


def with_rv(obj: Message, rev: int) -> Message:
    """A copy of obj whose metadata.resourceVersion is rev."""
    copy = type(obj)()
    copy.CopyFrom(obj)
    copy.metadata.resource_version = str(rev)  # type: ignore[attr-defined]
    return copy


class ResourceCache:
    """Objects and recent events of one resource, kept current by one store watch."""

    def __init__(self, kind: Kind, store: StoreClient, history_size: int = 10_000,
                 watcher_capacity: int = 10_000) -> None:
        self.kind = kind
        self.store = store
        self.prefix = f"/registry/{kind.resource}/".encode()
        self.objects: dict[str, Message] = {}
        self.rev = 0
        self.history: deque[CacheEvent] = deque(maxlen=history_size)
        self.history_start = 0
        self.watchers: set[CacheWatcher] = set()
        self.trigger_field = TRIGGER_FIELDS.get(kind.resource)
        self._untriggered: set[CacheWatcher] = set()
        self._triggered: dict[str, set[CacheWatcher]] = {}
        self.watcher_capacity = watcher_capacity
        self.ready = asyncio.Event()
        self._fresh = asyncio.Condition()
        self._progress: asyncio.Queue[None] = asyncio.Queue()
        self._progress_pending = False
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"watchcache-{self.kind.resource}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for w in list(self.watchers):
            w.close(ConnectionAbortedError("the API server is shutting down"))
        self._forget_all()

    async def _run(self) -> None:
        need_list = True
        delay = 0.05
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for resp in self.store.watch(self.prefix, prefix_end(self.prefix), self.rev + 1,
                                                   self._progress):
                    delay = 0.05
                    await self._absorb(resp.events, resp.header.revision, resp.created)
            except StoreCompacted:
                log.warning("%s: store compacted past the cache; relisting", self.kind.resource)
                need_list = True
            except StoreUnavailable as err:
                log.info("%s: %s; retrying", self.kind.resource, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _relist(self) -> None:
        """Load every object at one revision; end open watches (they may have missed events)."""
        objects: dict[str, Message] = {}
        start, end, rev = self.prefix, prefix_end(self.prefix), 0
        while True:
            resp = await self.store.range(start, end, limit=LIST_PAGE, revision=rev)
            rev = rev or resp.header.revision
            for kv in resp.kvs:
                obj = self.decode(kv.value, kv.mod_revision)
                objects[self.key_of(obj)] = obj
            if not resp.more or not resp.kvs:
                break
            start = resp.kvs[-1].key + b"\0"
        had_state = self.ready.is_set()
        self.objects = objects
        self.history.clear()
        self.rev = self.history_start = rev
        for w in list(self.watchers):
            w.close(TooOld(rev, rev))
        self._forget_all()
        if had_state:
            log.info("%s: relisted %d objects at revision %d", self.kind.resource, len(objects), rev)
        self.ready.set()
        await self._notify_fresh()

    async def _absorb(self, events: Iterable[kv_pb2.Event], header_rev: int, created: bool) -> None:
        any_event = False
        for ev in events:
            any_event = True
            self._apply(ev)
        if not any_event and not created and header_rev > self.rev:
            self.rev = header_rev  # a progress notification: nothing more up to header_rev
            self._progress_pending = False
        if any_event or not created:
            await self._notify_fresh()

    def _apply(self, ev: kv_pb2.Event) -> None:
        rev = ev.kv.mod_revision
        if ev.type == kv_pb2.Event.DELETE:
            prev = self.decode(ev.prev_kv.value, ev.prev_kv.mod_revision) if ev.HasField("prev_kv") else None
            key = self._key_from_store_key(ev.kv.key)
            prev = prev or self.objects.get(key)
            self.objects.pop(key, None)
            if prev is None:
                return
            event = CacheEvent(DELETED, rev, key, with_rv(prev, rev), prev)
        else:
            obj = self.decode(ev.kv.value, rev)
            key = self.key_of(obj)
            prev = self.objects.get(key)
            self.objects[key] = obj
            kind = ADDED if ev.kv.create_revision == rev or prev is None else MODIFIED
            event = CacheEvent(kind, rev, key, obj, prev)
        if len(self.history) == self.history.maxlen:
            self.history_start = self.history[0].rev
        self.history.append(event)
        self.rev = max(self.rev, rev)
        for w in self._interested(event):
            w.offer(event)
            if w.closed:
                self._forget(w)

    def _interested(self, event: CacheEvent) -> list[CacheWatcher]:
        """The watchers an event may concern: those without a trigger, and those filed under the
        trigger value of the object after or before the change."""
        if self.trigger_field is None or not self._triggered:
            return list(self.watchers)
        out = list(self._untriggered)
        values = {selectors.field_value(event.obj, self.trigger_field)}
        if event.prev is not None:
            values.add(selectors.field_value(event.prev, self.trigger_field))
        for value in values:
            out += self._triggered.get(value, ())
        return out

    def _file(self, w: CacheWatcher) -> None:
        self.watchers.add(w)
        if w.trigger is None:
            self._untriggered.add(w)
        else:
            self._triggered.setdefault(w.trigger, set()).add(w)

    def _forget(self, w: CacheWatcher) -> None:
        self.watchers.discard(w)
        self._untriggered.discard(w)
        if w.trigger is not None:
            filed = self._triggered.get(w.trigger)
            if filed is not None:
                filed.discard(w)
                if not filed:
                    del self._triggered[w.trigger]

    def _forget_all(self) -> None:
        self.watchers.clear()
        self._untriggered.clear()
        self._triggered.clear()

    # ---- reading ---------------------------------------------------------------------------

    def decode(self, value: bytes, rev: int) -> Message:
        obj = self.kind.message()
        obj.ParseFromString(value)
        obj.metadata.resource_version = str(rev)  # type: ignore[attr-defined]
        return obj

    def key_of(self, obj: Message) -> str:
        meta = obj.metadata  # type: ignore[attr-defined]
        return f"{meta.namespace}/{meta.name}" if self.kind.namespaced else meta.name

    def _key_from_store_key(self, key: bytes) -> str:
        return key[len(self.prefix):].decode()

    def snapshot(self, namespace: str = "") -> list[Message]:
        """Every object (in `namespace` when given), sorted by key like the store's range."""
        if namespace:
            lead = namespace + "/"
            items = [(k, o) for k, o in self.objects.items() if k.startswith(lead)]
        else:
            items = list(self.objects.items())
        items.sort(key=lambda kv: kv[0])
        return [o for _, o in items]

    async def wait_fresh(self, rev: int, timeout: float) -> bool:
        """Wait until the cache has seen revision `rev`; False on timeout."""
        await asyncio.wait_for(self.ready.wait(), timeout)
        if self.rev >= rev:
            return True
        async with self._fresh:
            if not self._progress_pending:
                self._progress_pending = True
                self._progress.put_nowait(None)
            try:
                await asyncio.wait_for(self._fresh.wait_for(lambda: self.rev >= rev), timeout)
            except asyncio.TimeoutError:
                self._progress_pending = False
                return False
        return True

    async def _notify_fresh(self) -> None:
        async with self._fresh:
            self._fresh.notify_all()

    def watch(self, namespace: str, matches: Matcher, from_rev: int | None,
              trigger: str | None = None) -> CacheWatcher:
        """A new watcher. from_rev None: the current objects as ADDED first, then changes.
        Otherwise every change after from_rev (TooOld when the window does not reach back).
        `trigger`: the value of `trigger_field` that `matches` requires (an exact-match term of
        its field selector), so that only events about such objects are offered to it."""
        w = CacheWatcher(namespace, matches, self.watcher_capacity,
                         trigger=trigger if self.trigger_field is not None else None)
        if from_rev is None:
            for obj in self.snapshot(namespace):
                w.offer(CacheEvent(ADDED, self.rev, self.key_of(obj), obj, None))
        elif from_rev < self.rev:
            if from_rev < self.history_start:
                raise TooOld(from_rev, self.history_start)
            for event in self.history:
                if event.rev > from_rev:
                    w.offer(event)
        self._file(w)
        return w

    def unwatch(self, w: CacheWatcher) -> None:
        w.closed = True
        self._forget(w)
