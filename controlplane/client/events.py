"""Events (core/v1 Event) written in the background, aggregated like Kubernetes' event logger.

`EventRecorder(client, component).record(obj, type, reason, message)` returns at once: a few
worker tasks write Events from a bounded queue (when it is full the event is dropped and
counted, as client-go's broadcaster drops), so events never slow the caller's real work.
Repeats of the same event (same object, type, reason, message) are aggregated: the existing
Event's count goes up and lastTimestamp moves (one patch); repeats that arrive while a write for
that key is queued or running coalesce into one write. Used by the scheduler and controllers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf.message import Message

from controlplane.client.api import ApiStatusError, NotFoundError
from controlplane.client.scheme import by_message
from controlplane.client.timeutil import SystemClock, WallClock, format_time
from protos.skiff.api.v1 import core_pb2, meta_pb2

log = logging.getLogger(__name__)

EVENT_QUEUE_SIZE = 1000     # client-go's broadcaster keeps 1000 events before dropping
EVENT_WORKERS = 4
EVENT_CACHE_SIZE = 4096     # keys remembered for aggregation (client-go's LRU is 4096 too)


def object_reference(obj: Message) -> meta_pb2.ObjectReference:
    """The Event's involvedObject for a served object."""
    kind = by_message(obj)
    m = obj.metadata  # type: ignore[attr-defined]
    return meta_pb2.ObjectReference(kind=kind.kind, api_version=kind.api_version,
                                    namespace=m.namespace or ("default" if kind.namespaced else ""),
                                    name=m.name, uid=m.uid, resource_version=m.resource_version)


@dataclass
class _EventState:
    name: str
    namespace: str
    count: int
    first: str
    last: str
    template: core_pb2.Event
    created: bool = False
    queued: bool = False
    writing: bool = False
    dirty: bool = False


EventKey = tuple[str, str, str, str, str, str]


class EventRecorder:
    """Writes core/v1 Events in the background (see the module docstring)."""

    def __init__(self, client: Any, component: str, instance: str = "",
                 wall_clock: WallClock | None = None, on_drop: Callable[[], None] | None = None,
                 workers: int = EVENT_WORKERS, queue_size: int = EVENT_QUEUE_SIZE) -> None:
        self.client = client
        self.component, self.instance = component, instance
        self.wall_clock: WallClock = wall_clock or SystemClock()
        self.on_drop = on_drop
        self.dropped = 0
        self._states: OrderedDict[EventKey, _EventState] = OrderedDict()
        self._queue: asyncio.Queue[EventKey] = asyncio.Queue(queue_size)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []

    async def event(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """`record`, for callers that await (controllers)."""
        self.record(obj, type_, reason, message)

    def start(self) -> None:
        """Start the writers (record does it too, from inside a running loop)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"events-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def flush(self) -> None:
        """Wait until every queued event is written (tests)."""
        await self._queue.join()

    def record(self, obj: Message, type_: str, reason: str, message: str) -> None:
        """Queue an event about obj; never blocks, never raises (events are best effort)."""
        self.start()
        ref = object_reference(obj)
        key: EventKey = (ref.namespace, ref.name, ref.uid, type_, reason, message)
        now = format_time(self.wall_clock.now())
        state = self._states.get(key)
        if state is None:
            name = f"{ref.name}.{time.time_ns():x}"
            template = core_pb2.Event(involved_object=ref, reason=reason, message=message, type=type_,
                                      source=core_pb2.EventSource(component=self.component),
                                      reporting_component=self.component, reporting_instance=self.instance)
            namespace = ref.namespace or "default"  # events about cluster-scoped objects live in default
            template.metadata.name, template.metadata.namespace = name, namespace
            state = self._states[key] = _EventState(name, namespace, 1, now, now, template)
            while len(self._states) > EVENT_CACHE_SIZE:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
            state.count += 1
            state.last = now
        self._enqueue(key, state)

    def _enqueue(self, key: EventKey, state: _EventState) -> None:
        if state.writing:
            state.dirty = True
        elif not state.queued:
            try:
                self._queue.put_nowait(key)
                state.queued = True
            except asyncio.QueueFull:
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            try:
                state = self._states.get(key)
                if state is not None:
                    state.queued, state.writing = False, True
                    try:
                        await self._write(state)
                    finally:
                        state.writing = False
                    if state.dirty:
                        state.dirty = False
                        self._enqueue(key, state)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing an event failed")
            finally:
                self._queue.task_done()

    async def _write(self, state: _EventState) -> None:
        try:
            if state.created:
                await self.client.patch("events", state.name, {"count": state.count, "lastTimestamp": state.last},
                                        state.namespace)
                return
        except NotFoundError:
            state.name = f"{state.template.involved_object.name}.{time.time_ns():x}"  # it expired: anew
        ev = core_pb2.Event()
        ev.CopyFrom(state.template)
        ev.metadata.name = state.name
        ev.count, ev.first_timestamp, ev.last_timestamp = state.count, state.first, state.last
        try:
            await self.client.create(ev, state.namespace)
            state.created = True
        except ApiStatusError as err:
            log.info("cannot write event %s/%s (%s): %s", state.namespace, state.name, ev.reason, err)
