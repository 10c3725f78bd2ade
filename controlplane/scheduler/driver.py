"""The scheduler's driver: informers in, Bind calls, status and Events out, around the pure core.

`Scheduler(client, config)` wires the pieces of this package to the API:
- informers (one shared watch each) for nodes, pods and namespaces. Every pod is watched: bound
  ones feed the cache (and confirm what it assumed), pending ones whose schedulerName is this
  scheduler's feed the queue; namespaces' labels feed the cache (namespaceSelector terms). A
  node added or changed in a way that matters, or a bound pod deleted, moves every
  unschedulable pod back to the queue (`move_all_to_active`). Updates that touch only a
  pending pod's status (our own PodScheduled=False) are ignored, or they would retry it at once.
- the loop (`run`): pop -> take the pod's latest state from the informer -> snapshot ->
  `schedule` -> `assume` -> Bind in a task, so the next pod is scheduled while this one binds
  (at most `bind_concurrency` binds in flight). The bind task first `recheck`s the node against
  the cache as it is then (watch events may have arrived since the choice); a failed recheck or
  Bind `forget`s the pod and sends it back to the queue with backoff.
- when nothing fits: the pod's condition PodScheduled=False, reason Unschedulable, with the
  counted message (UpdateStatus, only when it differs), and a Warning Event FailedScheduling;
  on success a Normal Event Scheduled ("Successfully assigned ns/pod to node").
- Events go through `controlplane.client.events.EventRecorder` (written in the background, so
  they never slow binding; repeats aggregated).

Invariants: a key is in flight in the queue from pop until its outcome is decided (the bind
returned or failed), and `queue.done` is called exactly once, in a finally; the cache counts a
pod on at most one node (assumed or confirmed); objects from informers are never mutated.
Leader election and the metrics endpoint are composed around this by `skiff scheduler`.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, TypeVar

from google.protobuf.message import Message

from controlplane.client.api import ApiStatusError, ConflictError
from controlplane.client.events import EventRecorder
from controlplane.client.informer import InformerFactory, ListerWatcher
from controlplane.client.scheme import Kind
from controlplane.client.timeutil import SystemClock, WallClock, format_time
from controlplane.scheduler import queue as q
from controlplane.scheduler.algorithm import recheck, schedule
from controlplane.scheduler.cache import TERMINAL_PHASES, SchedulerCache, pod_key
from controlplane.scheduler.framework import DEFAULT_SCHEDULER_NAME, PodInfo, SchedulerConfig
from controlplane.scheduler.metrics import SchedulerMetrics
from controlplane.scheduler.plugins import default_plugins
from kvstore.clock import Clock, MonotonicClock
from protos.skiff.api.v1 import core_pb2, meta_pb2

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
DEFAULT_BIND_CONCURRENCY = 64


class SchedulerApi(ListerWatcher, Protocol):
    """The ApiClient calls the scheduler makes (ApiClient and FakeApi both have them)."""

    async def create(self, obj: M, namespace: str = "", dry_run: bool = False) -> M: ...

    async def get(self, resource: Any, name: str, namespace: str = "") -> Message: ...

    async def update_status(self, obj: M) -> M: ...

    async def patch(self, resource: str | Kind, name: str, patch: dict[str, Any], namespace: str = "",
                    subresource: str = "") -> Message: ...

    async def bind(self, namespace: str, name: str, node_name: str, uid: str = "") -> Message: ...


# --- pure helpers -------------------------------------------------------------------------

def copy_of(obj: M) -> M:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


def is_pending_for(pod: core_pb2.Pod, scheduler_name: str) -> bool:
    """Whether this scheduler should place `pod`: unbound, not being deleted, not finished,
    and asking for this scheduler ("" counts as the default, before the API server defaults)."""
    if pod.spec.node_name or pod.metadata.deletion_timestamp or pod.status.phase in TERMINAL_PHASES:
        return False
    return (pod.spec.scheduler_name or DEFAULT_SCHEDULER_NAME) == scheduler_name


def pod_spec_changed(old: core_pb2.Pod, new: core_pb2.Pod) -> bool:
    """Whether an update may change where a pending pod fits (not just its status or version)."""
    return (old.spec != new.spec or old.metadata.labels != new.metadata.labels
            or old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
            or old.metadata.uid != new.metadata.uid)


def _node_view(node: core_pb2.Node) -> tuple[Any, ...]:
    s = node.status
    return (node.spec.SerializeToString(deterministic=True), sorted(node.metadata.labels.items()),
            sorted(s.allocatable.items()), sorted(s.capacity.items()),
            sorted((c.type, c.status) for c in s.conditions),
            sorted((tuple(i.names), i.size_bytes) for i in s.images))


def node_changed(old: core_pb2.Node, new: core_pb2.Node) -> bool:
    """Whether a node update may make a pod fit (heartbeats alone do not)."""
    return _node_view(old) != _node_view(new)


def with_unschedulable_condition(pod: core_pb2.Pod, message: str, now: str) -> core_pb2.Pod | None:
    """A copy of `pod` with PodScheduled=False/Unschedulable/message, or None when it already
    says exactly that (so no write is needed)."""
    for cond in pod.status.conditions:
        if cond.type == "PodScheduled" and (cond.status, cond.reason, cond.message) == (
                "False", "Unschedulable", message):
            return None
    new = copy_of(pod)
    for cond in new.status.conditions:
        if cond.type == "PodScheduled":
            if cond.status != "False":
                cond.last_transition_time = now
            cond.status, cond.reason, cond.message = "False", "Unschedulable", message
            cond.last_probe_time = ""
            break
    else:
        new.status.conditions.add(type="PodScheduled", status="False", reason="Unschedulable",
                                  message=message, last_transition_time=now)
    new.status.phase = new.status.phase or "Pending"
    return new


def pod_reference(pod: core_pb2.Pod) -> meta_pb2.ObjectReference:
    m = pod.metadata
    return meta_pb2.ObjectReference(kind="Pod", api_version="v1", namespace=m.namespace or "default",
                                    name=m.name, uid=m.uid, resource_version=m.resource_version)


# --- the scheduler ------------------------------------------------------------------------

@dataclass
class SchedulerStats:
    scheduled: int = 0
    unschedulable: int = 0
    errors: int = 0
    bind_failures: int = 0
    recheck_failures: int = 0
    status_writes: int = 0


class Scheduler:
    def __init__(self, client: SchedulerApi, config: SchedulerConfig | None = None, *,
                 clock: Clock | None = None, wall_clock: WallClock | None = None,
                 rng: random.Random | None = None, plugins: Sequence[Any] | None = None,
                 queue: q.SchedulingQueue | None = None, cache: SchedulerCache | None = None,
                 informers: InformerFactory | None = None, metrics: SchedulerMetrics | None = None,
                 bind_concurrency: int = DEFAULT_BIND_CONCURRENCY, identity: str = "") -> None:
        self.client = client
        self.config = config or SchedulerConfig()
        self.clock: Clock = clock or MonotonicClock()
        self.wall_clock: WallClock = wall_clock or SystemClock()
        self.rng = rng or random.Random()
        self.plugins = list(plugins) if plugins is not None else default_plugins()
        # `is None`, not `or`: an empty queue is falsy (it has __len__).
        self.queue = queue if queue is not None else q.SchedulingQueue(self.clock)
        self.cache = cache if cache is not None else SchedulerCache(self.clock)
        self.factory = informers if informers is not None else InformerFactory(client, clock=self.clock)
        self.metrics = metrics if metrics is not None else SchedulerMetrics()
        self.metrics.pending = self.queue.pending
        self.events = EventRecorder(client, self.config.scheduler_name, identity, self.wall_clock,
                                    on_drop=self.metrics.count_dropped_event)
        self.stats = SchedulerStats()
        self._bind_slots = asyncio.Semaphore(bind_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_index = 0
        # Bumped by every watch event that may make a chosen node unfit (not by our own
        # assumes, which were each chosen with the earlier ones counted): a bind rechecks
        # only when it moved since the choice, and otherwise the recheck could not fail.
        self.changes = 0
        self.nodes = self.factory.informer("nodes")
        self.pods = self.factory.informer("pods")
        self.namespaces = self.factory.informer("namespaces")
        self.nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)
        self.namespaces.add_handler(self._ns_changed, lambda _old, new: self._ns_changed(new),
                                    self._ns_deleted)

    # --- informer handlers (they only update the cache and the queue) -----------------------

    def _node_added(self, node: Any) -> None:
        self.changes += 1
        self.cache.add_node(node)
        self.queue.move_all_to_active(q.NODE_ADD)

    def _node_updated(self, old: Any, new: Any) -> None:
        self.cache.update_node(new)
        if node_changed(old, new):
            self.changes += 1
            self.queue.move_all_to_active(q.NODE_UPDATE)

    def _node_deleted(self, node: Any) -> None:
        self.changes += 1
        self.cache.remove_node(node.metadata.name)

    def _pod_added(self, pod: Any) -> None:
        if pod.spec.node_name:
            self._bound_pod(pod)
        elif is_pending_for(pod, self.config.scheduler_name):
            self.queue.add(PodInfo(pod))

    def _pod_updated(self, old: Any, new: Any) -> None:
        key = pod_key(new)
        if new.spec.node_name:
            self._bound_pod(new)
            if not old.spec.node_name:
                self.queue.delete(key)  # bound (by us or anyone): nothing left to do
        elif is_pending_for(new, self.config.scheduler_name):
            if pod_spec_changed(old, new):
                self.queue.add(PodInfo(new))
        else:
            self.queue.delete(key)  # being deleted, finished, or handed to another scheduler

    def _bound_pod(self, pod: Any) -> None:
        key = pod_key(pod)
        if self.cache.is_assumed(key) and self.cache.node_of(key) == pod.spec.node_name:
            # Our own bind landing: the PodInfo the cache holds is already right (it differs
            # only in the proto's spec.nodeName), so keep it rather than parse the pod again.
            self.cache.confirm(key)
            return
        self.changes += 1
        self.cache.update_pod(pod)

    def _pod_deleted(self, pod: Any) -> None:
        self.changes += 1
        key = pod_key(pod)
        self.queue.delete(key)
        was_placed = self.cache.node_of(key) is not None
        self.cache.remove_pod(key)
        if pod.spec.node_name or was_placed:
            self.queue.move_all_to_active(q.POD_DELETE)

    def _ns_changed(self, ns: Any) -> None:
        self.changes += 1
        self.cache.set_namespace_labels(ns.metadata.name, dict(ns.metadata.labels))

    def _ns_deleted(self, ns: Any) -> None:
        self.changes += 1
        self.cache.set_namespace_labels(ns.metadata.name, None)

    # --- running ----------------------------------------------------------------------------

    def start_informers(self) -> None:
        self.factory.start()

    @property
    def synced(self) -> bool:
        return all(i.has_synced for i in (self.nodes, self.pods, self.namespaces))

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        return await self.factory.wait_for_sync(timeout)

    async def run(self) -> None:
        """Schedule until cancelled (informers started and synced first, if they were not)."""
        self.start_informers()
        await self.wait_for_sync()
        self.events.start()
        ticker = asyncio.create_task(self._flush_every_second())
        try:
            while True:
                item = await self.queue.pop()
                if item is None:
                    return
                await self.schedule_one(item)
                await asyncio.sleep(0)  # let binds and watch events run between cycles
        finally:
            ticker.cancel()
            await self._drain()

    async def stop(self) -> None:
        self.queue.close()
        await self._drain()
        await self.events.stop()
        await self.factory.stop()

    async def _drain(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.queue.flush()
            self.cache.cleanup_expired()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one cycle --------------------------------------------------------------------------

    async def schedule_one(self, item: q.QueuedPodInfo) -> None:
        """One scheduling cycle for a popped pod; its bind, if any, continues in a task.
        A bind slot is taken first, so the choice is made on the cache as it is just before
        the pod is assumed."""
        await self._bind_slots.acquire()
        started = self.clock.now()
        key = item.key
        handed_off = False
        try:
            current: Any = self.pods.get(key)
            if current is None or not is_pending_for(current, self.config.scheduler_name):
                return  # deleted or bound meanwhile
            info = item.pod_info
            if info.pod.metadata.resource_version != current.metadata.resource_version:
                info = PodInfo(current)
            result = schedule(info, self.cache.snapshot(), self.plugins, self.config, self.rng,
                              start_index=self._start_index)
            self._start_index = result.next_start_index
            if result.node_name is None:
                self.queue.add_unschedulable(info, item.attempts)
                self._observe("unschedulable", started)
                self._spawn(self._record_failure(info.pod, result.message))
                return
            try:
                assumed = self.cache.assume(info, result.node_name)
            except ValueError as err:  # the watch says it is bound already
                log.info("%s", err)
                return
            self._spawn(self._bind(item, assumed, result.node_name, started, self.changes))
            handed_off = True
        except Exception:
            log.exception("scheduling %s failed", key)
            self.queue.add_unschedulable(item.pod_info, item.attempts, error=True)
            self._observe("error", started)
        finally:
            if not handed_off:
                self._bind_slots.release()
                self.queue.done(key)

    async def _bind(self, item: q.QueuedPodInfo, info: PodInfo, node: str, started: float,
                    changes_at_choice: int) -> None:
        key = info.key
        try:
            reasons = []
            if self.changes != changes_at_choice:
                reasons = recheck(info, node, self.cache.snapshot())
            if reasons:
                self.stats.recheck_failures += 1
                self._failed(item, info, f"node {node} no longer fits: {'; '.join(reasons)}", started)
                return
            try:
                await self.client.bind(info.namespace, info.name, node, info.uid)
            except ApiStatusError as err:
                self.stats.bind_failures += 1
                self._failed(item, info, f"binding to {node} failed: {err}", started)
                return
            self.cache.finish_binding(key)
            self.stats.scheduled += 1
            self._observe("scheduled", started)
            self.events.record(info.pod, "Normal", "Scheduled",
                               f"Successfully assigned {key} to {node}")
        except Exception:
            log.exception("binding %s to %s failed", key, node)
            self._failed(item, info, f"binding to {node} failed unexpectedly", started)
        finally:
            self._bind_slots.release()
            self.queue.done(key)

    def _failed(self, item: q.QueuedPodInfo, info: PodInfo, why: str, started: float) -> None:
        """A recheck or Bind failed: the pod counts nowhere and is retried after a backoff."""
        log.info("%s: %s", info.key, why)
        self.cache.forget(info.key)
        self.queue.add_unschedulable(item.pod_info, item.attempts, error=True)
        self._observe("error", started)

    def _observe(self, result: str, started: float) -> None:
        if result == "unschedulable":
            self.stats.unschedulable += 1
        elif result == "error":
            self.stats.errors += 1
        self.metrics.observe_attempt(result, max(0.0, self.clock.now() - started))

    async def _record_failure(self, pod: core_pb2.Pod, message: str) -> None:
        """PodScheduled=False with the message (only when it changed), and a Warning Event."""
        self.events.record(pod, "Warning", "FailedScheduling", message)
        for attempt in range(2):
            current: Any = self.pods.get(pod_key(pod)) if attempt == 0 else await self._get_pod(pod)
            if current is None or not is_pending_for(current, self.config.scheduler_name):
                return
            new = with_unschedulable_condition(current, message, format_time(self.wall_clock.now()))
            if new is None:
                return
            try:
                await self.client.update_status(new)
                self.stats.status_writes += 1
                return
            except ConflictError:
                continue  # the cache was behind: read the pod and try once more
            except ApiStatusError as err:
                log.info("cannot set PodScheduled=False on %s: %s", pod_key(pod), err)
                return

    async def _get_pod(self, pod: core_pb2.Pod) -> Any:
        try:
            return await self.client.get("pods", pod.metadata.name, pod.metadata.namespace)
        except ApiStatusError:
            return None


