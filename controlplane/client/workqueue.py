"""A rate-limited work queue of keys, with client-go's semantics, for asyncio controllers.

Controllers enqueue keys (`namespace/name`), never events; workers `get()` a key, reconcile it,
and call `done(key)` in a `finally`. The contract:

- **Dedupe.** `add(key)` of a key already waiting is a no-op: however many events arrive while a
  key waits, it is processed once.
- **One worker per key.** A key handed out by `get()` is *processing* until `done(key)`. Adding
  it meanwhile marks it dirty but does not queue it; `done(key)` queues it again, so the change
  is processed after the current pass, never concurrently with it.
- **Delays.** `add_after(key, delay)` queues the key once `delay` seconds have passed on the
  injected Clock (several pending delays of one key keep the earliest).
  `add_rate_limited(key)` is `add_after(key, rate_limiter.when(key))`; `forget(key)` clears the
  key's failure history (call it after a successful sync). The default limiter is client-go's:
  the larger of a per-key exponential backoff (5 ms doubling to 1000 s) and an overall token
  bucket (10 qps, burst 100).
- **Shutdown.** After `shut_down()`, adds are ignored, delayed keys are dropped, `get()` hands
  out the keys still queued and then returns None.

Time: every deadline is read from the injected `Clock`. Delayed keys move to the queue when
`tick()` runs; `get()`, `get_nowait()` and `len()` tick first, and a waiting `get()` sleeps (in
real time) until the next deadline. With a FakeClock, tests advance the clock and call `tick()`
(or `get_nowait()`), which makes timing tests deterministic and instant; `next_timer()` tells
them when the next delayed key is due.

Invariants: a key is in `_queue` at most once and then also in `_dirty`; a key in `_processing`
is never in `_queue`; everything runs on one event loop (no locks).
"""
from __future__ import annotations

import asyncio
import heapq
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from kvstore.clock import Clock, MonotonicClock


class RateLimiter(Protocol):
    def when(self, key: str) -> float:
        """Seconds to wait before the key's next retry; records one more failure."""
        ...

    def forget(self, key: str) -> None:
        """Clear the key's failure history."""
        ...

    def num_requeues(self, key: str) -> int:
        ...


class ExponentialFailureRateLimiter:
    """base * 2**failures seconds per key, capped at max_delay (client-go's item limiter)."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError(f"need 0 < base_delay <= max_delay, got {base_delay} and {max_delay}")
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        if failures >= 64:  # 2**64 * base overflows any sensible cap; skip the arithmetic
            return self.max_delay
        return min(self.base_delay * (2 ** failures), self.max_delay)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)


class BucketRateLimiter:
    """An overall token bucket: `qps` tokens a second, at most `burst` saved up.

    Each `when()` takes a token, borrowing from the future when none is left (like
    golang.org/x/time/rate's Reserve), so the returned delays space retries 1/qps apart."""

    def __init__(self, clock: Clock, qps: float = 10.0, burst: int = 100) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"need qps > 0 and burst >= 1, got qps={qps} burst={burst}")
        self.clock = clock
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = clock.now()

    def when(self, key: str) -> float:
        now = self.clock.now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, key: str) -> None:
        pass  # the bucket is shared by every key; nothing to forget per key

    def num_requeues(self, key: str) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay any of the limiters asks for (every limiter records the failure)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, key: str) -> float:
        return max([limiter.when(key) for limiter in self.limiters])

    def forget(self, key: str) -> None:
        for limiter in self.limiters:
            limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        return max(limiter.num_requeues(key) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock, base_delay: float = 0.005, max_delay: float = 1000.0,
                                    qps: float = 10.0, burst: int = 100) -> MaxOfRateLimiter:
    """client-go's DefaultControllerRateLimiter, with its numbers as defaults."""
    return MaxOfRateLimiter(ExponentialFailureRateLimiter(base_delay, max_delay),
                            BucketRateLimiter(clock, qps, burst))


@dataclass
class QueueMetrics:
    """Counters in the spirit of client-go's workqueue metrics (depth is `len(queue)`)."""

    adds: int = 0                   # add() calls accepted (duplicates included)
    retries: int = 0                # add_rate_limited() calls
    work_seconds_total: float = 0.0  # sum of get() -> done() times
    work_count: int = 0
    queue_seconds_total: float = 0.0  # sum of add() -> get() waits
    queue_count: int = 0


class WorkQueue:
    """Keys waiting for a worker; see the module docstring for the contract."""

    def __init__(self, clock: Clock | None = None, rate_limiter: RateLimiter | None = None,
                 name: str = "") -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter(self.clock)
        self.name = name
        self.metrics = QueueMetrics()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: dict[str, float] = {}   # key -> when a worker got it
        self._added_at: dict[str, float] = {}      # queued key -> when it was first added
        self._waiting: list[tuple[float, int, str]] = []  # heap of (ready_at, seq, key)
        self._ready_at: dict[str, float] = {}      # key -> its earliest pending deadline
        self._seq = 0
        self._shutting_down = False
        self._wakeup = asyncio.Event()

    # ---- adding ----------------------------------------------------------------------------

    def add(self, key: str) -> None:
        if self._shutting_down:
            return
        self.metrics.adds += 1
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._added_at.setdefault(key, self.clock.now())
        if key in self._processing:
            return  # queued again by done(): never two workers on one key
        self._queue.append(key)
        self._wakeup.set()

    def add_after(self, key: str, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        ready_at = self.clock.now() + delay
        known = self._ready_at.get(key)
        if known is not None and known <= ready_at:
            return
        self._ready_at[key] = ready_at
        self._seq += 1
        heapq.heappush(self._waiting, (ready_at, self._seq, key))
        self._wakeup.set()  # a sleeping get() may now have an earlier deadline

    def add_rate_limited(self, key: str) -> None:
        self.metrics.retries += 1
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: str) -> None:
        self.rate_limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        return self.rate_limiter.num_requeues(key)

    # ---- timers ----------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        """The Clock time at which the earliest delayed key is due, or None."""
        while self._waiting and self._ready_at.get(self._waiting[0][2]) != self._waiting[0][0]:
            heapq.heappop(self._waiting)  # superseded by an earlier deadline of the same key
        return self._waiting[0][0] if self._waiting else None

    def tick(self) -> int:
        """Queue every delayed key that is due now; returns how many were queued."""
        now = self.clock.now()
        moved = 0
        while (due := self.next_timer()) is not None and due <= now:
            _, _, key = heapq.heappop(self._waiting)
            del self._ready_at[key]
            self.add(key)
            moved += 1
        if moved:
            self._wakeup.set()
        return moved

    # ---- taking ----------------------------------------------------------------------------

    def get_nowait(self) -> str | None:
        """A queued key (now processing), or None when none is ready."""
        self.tick()
        if not self._queue:
            return None
        key = self._queue.popleft()
        now = self.clock.now()
        self._dirty.discard(key)
        self._processing[key] = now
        added = self._added_at.pop(key, now)
        self.metrics.queue_seconds_total += now - added
        self.metrics.queue_count += 1
        return key

    async def get(self) -> str | None:
        """Wait for a key (now processing); None once shut down and drained."""
        while True:
            key = self.get_nowait()
            if key is not None:
                return key
            if self._shutting_down:
                return None
            self._wakeup.clear()
            due = self.next_timer()
            timeout = None if due is None else max(due - self.clock.now(), 0.0)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass  # a delayed key may be due: tick on the next turn

    def done(self, key: str) -> None:
        """The worker has finished with key; if it was added meanwhile, queue it again."""
        started = self._processing.pop(key, None)
        if started is None:
            return
        self.metrics.work_seconds_total += self.clock.now() - started
        self.metrics.work_count += 1
        if key in self._dirty:
            self._queue.append(key)
            self._wakeup.set()

    # ---- lifecycle -------------------------------------------------------------------------

    def shut_down(self) -> None:
        self._shutting_down = True
        self._waiting.clear()
        self._ready_at.clear()
        self._wakeup.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready for a worker (the depth); delayed and processing keys are not counted."""
        self.tick()
        return len(self._queue)

    @property
    def depth(self) -> int:
        return len(self)

    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    def waiting(self) -> dict[str, float]:
        """Delayed keys and when each is due (Clock time)."""
        return dict(self._ready_at)
