"""What every controller shares: its context, its work queue and worker loop, and events.

A controller is level-triggered (DESIGN.md): informer handlers only enqueue keys
(`namespace/name`); `sync(key)` reads the informer caches, compares desired with actual, and acts
through the API; events go through the shared background EventRecorder. A sync that raises is retried with the queue's per-key backoff; one that returns
is forgotten (its backoff reset). One key is never synced by two workers at once (the queue's
contract). Objects from caches are never mutated: copy before changing.

Controller tests build a `ControllerContext` over `controlplane.client.fake.FakeApi`, fill the
caches, call `sync(key)` and check `fake.actions`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from google.protobuf.message import Message

from controlplane.client.events import EventRecorder
from controlplane.client.informer import InformerFactory, SharedInformer, object_key
from controlplane.client.timeutil import SystemClock, WallClock
from controlplane.client.workqueue import WorkQueue, default_controller_rate_limiter
from kvstore.clock import Clock, MonotonicClock

log = logging.getLogger(__name__)


@dataclass
class ControllerContext:
    """What a controller is given: the API (ApiClient or FakeApi), shared informers, clocks."""

    client: Any
    informers: InformerFactory
    clock: Clock = field(default_factory=MonotonicClock)
    wall: WallClock = field(default_factory=SystemClock)
    component: str = "controller-manager"

    def events(self) -> EventRecorder:
        return EventRecorder(self.client, self.component, wall_clock=self.wall)


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


Handler = Callable[[Message], None]


def on_changes(informer: SharedInformer, enqueue: Handler,
               update: Callable[[Message, Message], None] | None = None) -> None:
    """Enqueue on add, update and delete (the common case)."""
    informer.add_handler(enqueue, update or (lambda old, new: enqueue(new)), enqueue)
