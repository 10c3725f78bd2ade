"""What every controller shares: its context, its work queue and worker loop, and events.

A controller is level-triggered (DESIGN.md): informer handlers only enqueue keys
(`namespace/name`); `sync(key)` reads the informer caches, compares desired with actual, and acts
through the API. A sync that raises is retried with the queue's per-key backoff; one that returns
is forgotten (its backoff reset). One key is never synced by two workers at once (the queue's
contract). Objects from caches are never mutated: copy before changing.

Controller tests build a `ControllerContext` over `controlplane.client.fake.FakeApi`, fill the
caches, call `sync(key)` and check `fake.actions`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from google.protobuf.message import Message

from controlplane.client.informer import InformerFactory, SharedInformer, object_key
from controlplane.client.timeutil import SystemClock, WallClock, format_micro_time, format_time
from controlplane.client.workqueue import WorkQueue, default_controller_rate_limiter
from kvstore.clock import Clock, MonotonicClock
from protos.skiff.api.v1 import core_pb2

log = logging.getLogger(__name__)


@dataclass
class ControllerContext:
    """What a controller is given: the API (ApiClient or FakeApi), shared informers, clocks."""

    client: Any
    informers: InformerFactory
    clock: Clock = field(default_factory=MonotonicClock)
    wall: WallClock = field(default_factory=SystemClock)
    component: str = "controller-manager"

    def events(self) -> "EventRecorder":
        return EventRecorder(self.client, self.component, self.wall)


@dataclass
class ControllerMetrics:
    syncs: int = 0
    errors: int = 0
    sync_seconds: float = 0.0


class Controller:
    """Base: a named work queue, `workers` coroutines calling `sync`, and enqueue helpers.
    Subclasses set `name`, register informer handlers in `__init__` and implement `sync`."""

    name = "controller"

    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.queue = WorkQueue(ctx.clock, default_controller_rate_limiter(ctx.clock), name=self.name)
        self.metrics = ControllerMetrics()
        self.recorder = ctx.events()

    def informer(self, resource: str, **kw: Any) -> SharedInformer:
        return self.ctx.informers.informer(resource, **kw)

    def enqueue(self, obj: Message) -> None:
        self.queue.add(object_key(obj))

    def enqueue_key(self, key: str) -> None:
        self.queue.add(key)

    async def sync(self, key: str) -> None:
        raise NotImplementedError

    async def process_one(self) -> bool:
        """Take one key and sync it; False once the queue is shut down."""
        key = await self.queue.get()
        if key is None:
            return False
        started = time.monotonic()
        try:
            await self.sync(key)
            self.queue.forget(key)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # retried with backoff: a controller must not die of one object
            self.metrics.errors += 1
            log.info("%s: sync %s failed (retrying): %s", self.name, key, err)
            self.queue.add_rate_limited(key)
        finally:
            self.metrics.syncs += 1
            self.metrics.sync_seconds += time.monotonic() - started
            self.queue.done(key)
        return True

    async def run(self, workers: int = 2) -> None:
        async def worker() -> None:
            while await self.process_one():
                pass
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            self.queue.shut_down()


class EventRecorder:
    """Writes core/v1 Events about objects; a repeat of the same (object, reason, message)
    increments the existing event's count instead of adding another, as Kubernetes does."""

    def __init__(self, client: Any, component: str, wall: WallClock) -> None:
        self.client = client
        self.component = component
        self.wall = wall
        self._seen: dict[tuple[str, str, str, str], str] = {}
        self._counts: Counter[str] = Counter()

    async def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """Record an event; failures are logged, never raised (events are best effort)."""
        meta = obj.metadata  # type: ignore[attr-defined]
        key = (meta.uid, type_, reason, message)
        now = format_time(self.wall.now())
        try:
            name = self._seen.get(key)
            if name is not None:
                self._counts[name] += 1
                await self.client.patch("events", name, {"count": self._counts[name], "lastTimestamp": now},
                                        meta.namespace or "default")
                return
            ev = core_pb2.Event()
            ev.metadata.name = f"{meta.name}.{int(self.wall.now() * 1e9):x}"
            ev.metadata.namespace = meta.namespace or "default"
            ev.involved_object.kind = getattr(obj, "kind", "") or type(obj).__name__
            ev.involved_object.api_version = getattr(obj, "api_version", "")
            ev.involved_object.name, ev.involved_object.namespace = meta.name, meta.namespace
            ev.involved_object.uid, ev.involved_object.resource_version = meta.uid, meta.resource_version
            ev.type, ev.reason, ev.message = type_, reason, message
            ev.source.component = self.component
            ev.reporting_component = self.component
            ev.first_timestamp = ev.last_timestamp = now
            ev.event_time = format_micro_time(self.wall.now())
            ev.count = 1
            made = await self.client.create(ev, ev.metadata.namespace)
            self._seen[key] = made.metadata.name
            self._counts[made.metadata.name] = 1
        except Exception as err:
            log.debug("event %s/%s for %s not recorded: %s", reason, message, meta.name, err)


Handler = Callable[[Message], None]


def on_changes(informer: SharedInformer, enqueue: Handler,
               update: Callable[[Message, Message], None] | None = None) -> None:
    """Enqueue on add, update and delete (the common case)."""
    informer.add_handler(enqueue, update or (lambda old, new: enqueue(new)), enqueue)
