"""The scheduling queue: which pending pod to try next, and when to try a failed one again.

Three parts, as in Kubernetes:
- active: ready to try, ordered by priority (higher first), then by the time the pod entered
  the queue (FIFO), then by arrival order (a stepped clock gives equal times);
- backoff: failed pods waiting out their backoff, 1 s doubling per attempt up to 10 s
  (attempt 1 -> 1 s, 2 -> 2 s, 3 -> 4 s, 4 -> 8 s, 5+ -> 10 s), counted from the failure;
- unschedulable: pods no node fits. They wait for a cluster event that could change that
  (`move_all_to_active`: a node added or updated, a pod deleted, ...) or, at the latest,
  5 minutes. On a move a pod still inside its backoff goes to backoff, otherwise to active.

A popped pod is "in flight" until `done(key)`. If a move event arrives while it is in flight,
a failure (`add_unschedulable`) sends it to backoff rather than unschedulable: the event may
already have made it schedulable and would otherwise be missed. A pod deleted while in flight
is not re-queued; one updated while in flight is re-queued with the update. Errors (a failed
bind) always go to backoff.

Time comes from a `Clock`; `flush()` moves whatever is due (the driver calls it every second,
`pop` calls it too), so tests step a FakeClock and call `flush()`. `pop()` is a coroutine that
waits for work; the queue belongs to one event loop and is not thread-safe. Keys are
namespace/name; a key is in at most one of active, backoff, unschedulable, and in flight at
most once.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass

from controlplane.scheduler.framework import PodInfo
from kvstore.clock import Clock

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
UNSCHEDULABLE_TIMEOUT = 300.0

# Cluster events that may make an unschedulable pod fit (names as Kubernetes logs them).
NODE_ADD = "NodeAdd"
NODE_UPDATE = "NodeUpdate"
POD_DELETE = "AssignedPodDelete"
POD_ADD = "AssignedPodAdd"
UNSCHEDULABLE_TIMEOUT_EVENT = "UnschedulableTimeout"


@dataclass
class QueuedPodInfo:
    pod_info: PodInfo
    attempts: int = 0
    timestamp: float = 0.0  # entered its current queue; FIFO order and backoff start
    initial_attempt_timestamp: float | None = None
    cycle: int = 0  # the pop that handed it out

    @property
    def key(self) -> str:
        return self.pod_info.key


def backoff_duration(attempts: int, initial: float = INITIAL_BACKOFF,
                     maximum: float = MAX_BACKOFF) -> float:
    if attempts <= 0:
        return 0.0
    return min(initial * 2.0 ** min(attempts - 1, 62), maximum)


class SchedulingQueue:
    def __init__(self, clock: Clock, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF,
                 unschedulable_timeout: float = UNSCHEDULABLE_TIMEOUT,
                 poll_interval: float = 1.0) -> None:
        self._clock = clock
        self._initial = initial_backoff
        self._max = max_backoff
        self._timeout = unschedulable_timeout
        self._poll = poll_interval
        self._seq = itertools.count()
        self._active: dict[str, tuple[int, QueuedPodInfo]] = {}  # key -> (heap seq, item)
        self._active_heap: list[tuple[int, float, int, str]] = []
        self._backoff: dict[str, tuple[int, QueuedPodInfo]] = {}
        self._backoff_heap: list[tuple[float, int, str]] = []
        self._unschedulable: dict[str, QueuedPodInfo] = {}  # in order of timestamp
        self._in_flight: dict[str, QueuedPodInfo] = {}
        self._deleted_in_flight: set[str] = set()
        self._updated_in_flight: dict[str, PodInfo] = {}
        self._cycle = 0
        self._move_cycle = -1
        self._closed = False
        self._wakeup = asyncio.Event()
        self.events: dict[str, int] = {}  # move events seen, by name (for metrics)

    # --- placing --------------------------------------------------------------------------

    def _push_active(self, item: QueuedPodInfo) -> None:
        seq = next(self._seq)
        self._active[item.key] = (seq, item)
        heapq.heappush(self._active_heap, (-item.pod_info.priority, item.timestamp, seq, item.key))
        self._wakeup.set()

    def _backoff_expiry(self, item: QueuedPodInfo) -> float:
        return item.timestamp + backoff_duration(item.attempts, self._initial, self._max)

    def _push_backoff_or_active(self, item: QueuedPodInfo) -> None:
        expiry = self._backoff_expiry(item)
        if expiry <= self._clock.now():
            self._push_active(item)
            return
        seq = next(self._seq)
        self._backoff[item.key] = (seq, item)
        heapq.heappush(self._backoff_heap, (expiry, seq, item.key))

    def _take(self, key: str) -> QueuedPodInfo | None:
        """Remove key from whichever queue holds it (heap entries go stale)."""
        for part in (self._active, self._backoff):
            entry = part.pop(key, None)
            if entry is not None:
                return entry[1]
        return self._unschedulable.pop(key, None)

    # --- the driver's calls ---------------------------------------------------------------

    def add(self, pod_info: PodInfo) -> None:
        """A pending pod was created or updated."""
        key = pod_info.key
        if key in self._in_flight:
            self._updated_in_flight[key] = pod_info
            return
        if key in self._active:
            item = self._active.pop(key)[1]
            item.pod_info = pod_info
            self._push_active(item)  # its priority may have changed
        elif key in self._backoff:
            self._backoff[key][1].pod_info = pod_info
        elif key in self._unschedulable:
            # The update may be what makes it fit: no waiting for an event, but its backoff
            # still holds.
            item = self._unschedulable.pop(key)
            item.pod_info = pod_info
            self._push_backoff_or_active(item)
        else:
            self._push_active(QueuedPodInfo(pod_info, timestamp=self._clock.now()))

    def add_unschedulable(self, pod_info: PodInfo, attempts: int, *, error: bool = False) -> None:
        """The attempt failed: no node fits (or, with error=True, something broke, e.g. the
        bind). Where it goes is explained in the module docstring."""
        key = pod_info.key
        if key in self._active or key in self._backoff or key in self._unschedulable:
            return
        if key in self._deleted_in_flight:
            return
        flight = self._in_flight.get(key)
        updated = self._updated_in_flight.pop(key, None)
        item = QueuedPodInfo(updated or pod_info, attempts, self._clock.now(),
                             flight.initial_attempt_timestamp if flight else None)
        cycle = flight.cycle if flight else self._cycle
        if error or updated is not None or self._move_cycle >= cycle:
            self._push_backoff_or_active(item)
        else:
            self._unschedulable[key] = item

    def move_all_to_active(self, event: str) -> int:
        """A cluster event that may let unschedulable pods fit; returns how many moved."""
        self.events[event] = self.events.get(event, 0) + 1
        self._move_cycle = self._cycle
        moved = list(self._unschedulable.values())
        self._unschedulable.clear()
        for item in moved:
            self._push_backoff_or_active(item)
        return len(moved)

    def done(self, key: str) -> None:
        """The attempt for key is over (call it in a finally)."""
        self._in_flight.pop(key, None)
        self._deleted_in_flight.discard(key)
        self._updated_in_flight.pop(key, None)

    def delete(self, key: str) -> None:
        """The pod was deleted or bound by someone else: forget it."""
        self._take(key)
        if key in self._in_flight:
            self._deleted_in_flight.add(key)

    def flush(self) -> int:
        """Move pods whose backoff is over to active, and pods unschedulable for longer than
        the timeout out of unschedulable. Returns how many moved."""
        now = self._clock.now()
        moved = 0
        while self._backoff_heap and self._backoff_heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._backoff_heap)
            entry = self._backoff.get(key)
            if entry is not None and entry[0] == seq:
                del self._backoff[key]
                self._push_active(entry[1])
                moved += 1
        overdue = []
        for key, item in self._unschedulable.items():
            if now - item.timestamp < self._timeout:
                break  # kept in timestamp order: the rest are younger
            overdue.append(key)
        if overdue:
            self.events[UNSCHEDULABLE_TIMEOUT_EVENT] = (
                self.events.get(UNSCHEDULABLE_TIMEOUT_EVENT, 0) + 1)
        for key in overdue:
            self._push_backoff_or_active(self._unschedulable.pop(key))
            moved += 1
        return moved

    def pop_nowait(self) -> QueuedPodInfo | None:
        """The next pod to try, or None when none is ready."""
        self.flush()
        while self._active_heap:
            _, _, seq, key = heapq.heappop(self._active_heap)
            entry = self._active.get(key)
            if entry is None or entry[0] != seq:
                continue  # stale: removed or re-queued since
            del self._active[key]
            item = entry[1]
            item.attempts += 1
            self._cycle += 1
            item.cycle = self._cycle
            if item.initial_attempt_timestamp is None:
                item.initial_attempt_timestamp = self._clock.now()
            self._in_flight[key] = item
            return item
        return None

    async def pop(self) -> QueuedPodInfo | None:
        """Wait for the next pod to try; None once the queue is closed."""
        while not self._closed:
            item = self.pop_nowait()
            if item is not None:
                return item
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._wait_time())
            except asyncio.TimeoutError:
                pass
        return None

    def _wait_time(self) -> float:
        if not self._backoff_heap:
            return self._poll
        return max(0.0, min(self._poll, self._backoff_heap[0][0] - self._clock.now()))

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    # --- observing ------------------------------------------------------------------------

    def pending(self) -> dict[str, int]:
        """Queue depth by part (for metrics)."""
        return {"active": len(self._active), "backoff": len(self._backoff),
                "unschedulable": len(self._unschedulable)}

    def where(self, key: str) -> str | None:
        """"active", "backoff", "unschedulable", "in_flight" or None."""
        for name, part in (("active", self._active), ("backoff", self._backoff),
                           ("unschedulable", self._unschedulable),
                           ("in_flight", self._in_flight)):
            if key in part:
                return name
        return None

    def __len__(self) -> int:
        return len(self._active) + len(self._backoff) + len(self._unschedulable)
