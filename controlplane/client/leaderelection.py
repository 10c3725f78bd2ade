"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection package.

Several candidates (controller managers, schedulers) run a `LeaderElector` on the same Lease;
at most one leads at a time, as long as their clocks run at about the same rate (they never
compare wall clocks). The rules:

- **Acquire** when the Lease does not exist (create it), names no holder, names this identity,
  or has not changed for `leaseDurationSeconds` *as observed by this candidate*: the candidate
  remembers when it last saw the Lease's spec change (its own monotonic Clock), not the
  renewTime written in it. Every write is an update with the resourceVersion read, so of two
  candidates racing for a free Lease one gets a ConflictError and loses ("someone else won").
- **Renew** every `retry_period` seconds. A leader that cannot renew within `renew_deadline`
  (errors, conflicts, timeouts) steps down: it stops its work and calls `on_stopped_leading`.
  It also steps down at once when it reads the Lease held by another identity. Since
  renew_deadline < lease_duration, a leader that is cut off stops before others may take over.
- **Release** (`release_on_cancel=True`): a leader cancelled gracefully clears holderIdentity
  (and sets leaseDurationSeconds 1), so another candidate takes over at its next retry instead
  of waiting for the lease to expire.
- `run()` acquires (retrying every retry_period, with client-go's jitter), calls
  `on_started_leading()` - a coroutine it returns runs as a task, cancelled when leadership
  ends - then renews until leadership is lost or run() is cancelled, calls
  `on_stopped_leading()` (only if it led) and returns. Like client-go's, it does not contend
  again; the caller decides (a controller manager usually exits).
- `on_new_leader(identity)` is called whenever the observed holder changes.

Field facts: leaseDurationSeconds is whole seconds (this writes ceil(lease_duration)); renewTime
and acquireTime are MicroTime strings from the wall clock (informational only); leaseTransitions
counts changes of holder. Requires lease_duration > renew_deadline > retry_period * 1.2, as
client-go does.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from google.protobuf.message import Message

from controlplane.client.api import AlreadyExistsError, ApiStatusError, ConflictError, NotFoundError
from controlplane.client.timeutil import SystemClock, WallClock, format_micro_time
from kvstore.clock import Clock, MonotonicClock
from protos.skiff.api.v1 import coordination_pb2

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2  # client-go's leaderelection JitterFactor
M = TypeVar("M", bound=Message)
Sleep = Callable[[float], Awaitable[None]]


class LeaseApi(Protocol):
    """The ApiClient calls leader election needs (ApiClient and FakeApi both have them)."""

    async def get(self, resource: Any, name: str, namespace: str = "") -> Message: ...

    async def create(self, obj: M, namespace: str = "", dry_run: bool = False) -> M: ...

    async def update(self, obj: M, dry_run: bool = False) -> M: ...


class LeaderElector:
    def __init__(self, client: LeaseApi, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Clock | None = None,
                 on_started_leading: Callable[[], Awaitable[None] | None] | None = None,
                 on_stopped_leading: Callable[[], None] | None = None,
                 on_new_leader: Callable[[str], None] | None = None,
                 release_on_cancel: bool = False, wall_clock: WallClock | None = None,
                 sleep: Sleep = asyncio.sleep, jitter_factor: float = JITTER_FACTOR,
                 rng: random.Random | None = None) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not lease_duration > renew_deadline > retry_period * JITTER_FACTOR > 0:
            raise ValueError(f"need lease_duration > renew_deadline > retry_period * {JITTER_FACTOR} > 0, got "
                             f"{lease_duration}, {renew_deadline}, {retry_period}")
        self.client = client
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock: Clock = clock or MonotonicClock()
        self.wall_clock: WallClock = wall_clock or SystemClock()
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        self.release_on_cancel = release_on_cancel
        self.sleep = sleep
        self.jitter_factor = jitter_factor
        self.rng = rng or random.Random()
        self.observed: coordination_pb2.LeaseSpec | None = None
        self.observed_time = 0.0
        self._leading = False

    def __repr__(self) -> str:
        return f"<LeaderElector {self.identity} on {self.namespace}/{self.name} leading={self._leading}>"

    @property
    def is_leader(self) -> bool:
        """True from on_started_leading until leadership is lost or given up."""
        return self._leading

    @property
    def leader(self) -> str:
        """The holder this candidate last observed ("" when none)."""
        return _holder(self.observed) if self.observed is not None else ""

    # ---- one attempt -----------------------------------------------------------------------

    def _observe(self, spec: coordination_pb2.LeaseSpec) -> None:
        """Remember spec, restarting the expiry countdown only when it changed."""
        if self.observed is not None and self.observed == spec:
            return
        before = self.leader
        self.observed = coordination_pb2.LeaseSpec()
        self.observed.CopyFrom(spec)
        self.observed_time = self.clock.now()
        if self.leader != before and self.on_new_leader is not None and self.leader:
            try:
                self.on_new_leader(self.leader)
            except Exception:
                log.exception("%s: on_new_leader failed", self.identity)

    def _record(self, acquire_time: str, transitions: int) -> coordination_pb2.LeaseSpec:
        now = format_micro_time(self.wall_clock.now())
        return coordination_pb2.LeaseSpec(holder_identity=self.identity,
                                          lease_duration_seconds=max(1, math.ceil(self.lease_duration)),
                                          acquire_time=acquire_time or now, renew_time=now,
                                          lease_transitions=transitions)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the lease; True when this identity holds it now."""
        try:
            lease: Any = await self.client.get("leases", self.name, self.namespace)
        except NotFoundError:
            return await self._create()
        except ApiStatusError as err:
            log.info("%s: cannot read lease %s/%s: %s", self.identity, self.namespace, self.name, err)
            return False
        self._observe(lease.spec)
        holder = _holder(lease.spec)
        duration = lease.spec.lease_duration_seconds or self.lease_duration
        if holder and holder != self.identity and self.observed_time + duration > self.clock.now():
            return False  # held by another and, as far as we have seen, still renewed
        new = coordination_pb2.Lease()
        new.CopyFrom(lease)
        if holder == self.identity:
            new.spec.CopyFrom(self._record(lease.spec.acquire_time, lease.spec.lease_transitions))
        else:
            new.spec.CopyFrom(self._record("", lease.spec.lease_transitions + 1))
        try:
            updated = await self.client.update(new)
        except ConflictError:
            return False  # somebody wrote it since we read it: they won this round
        except ApiStatusError as err:
            log.info("%s: cannot update lease %s/%s: %s", self.identity, self.namespace, self.name, err)
            return False
        self._observe(updated.spec)
        return True

    async def _create(self) -> bool:
        lease = coordination_pb2.Lease(spec=self._record("", 0))
        lease.metadata.name, lease.metadata.namespace = self.name, self.namespace
        try:
            created = await self.client.create(lease, self.namespace)
        except (AlreadyExistsError, ConflictError):
            return False
        except ApiStatusError as err:
            log.info("%s: cannot create lease %s/%s: %s", self.identity, self.namespace, self.name, err)
            return False
        self._observe(created.spec)
        return True

    async def release(self) -> bool:
        """Give the lease up (holder cleared) if this identity holds it; True when done."""
        try:
            lease: Any = await self.client.get("leases", self.name, self.namespace)
            if _holder(lease.spec) != self.identity:
                return False
            now = format_micro_time(self.wall_clock.now())
            lease.spec.ClearField("holder_identity")
            lease.spec.lease_duration_seconds = 1
            lease.spec.acquire_time = lease.spec.renew_time = now
            self._observe((await self.client.update(lease)).spec)
            return True
        except ApiStatusError as err:
            log.info("%s: cannot release lease %s/%s: %s", self.identity, self.namespace, self.name, err)
            return False

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, lead, renew; return once leadership is lost (see the module docstring)."""
        work: asyncio.Task[None] | None = None
        graceful = False
        try:
            await self._acquire()
            self._leading = True
            log.info("%s: became leader of %s/%s", self.identity, self.namespace, self.name)
            work = self._start_work()
            await self._renew()
            log.warning("%s: lost the lease %s/%s", self.identity, self.namespace, self.name)
        except asyncio.CancelledError:
            graceful = True
            raise
        finally:
            if self._leading:
                await self._stop_leading(work, graceful)

    def _start_work(self) -> asyncio.Task[None] | None:
        if self.on_started_leading is None:
            return None
        result = self.on_started_leading()
        if inspect.isawaitable(result):
            async def work() -> None:
                await result
            return asyncio.create_task(work(), name=f"leader-{self.identity}")
        return None

    async def _stop_leading(self, work: asyncio.Task[None] | None, graceful: bool) -> None:
        self._leading = False
        if work is not None and not work.done():
            work.cancel()
            await asyncio.wait([work], timeout=self.renew_deadline)
        if graceful and self.release_on_cancel:
            try:
                await asyncio.wait_for(self.release(), self.renew_deadline)
            except asyncio.TimeoutError:
                log.info("%s: releasing the lease timed out", self.identity)
        if self.on_stopped_leading is not None:
            try:
                self.on_stopped_leading()
            except Exception:
                log.exception("%s: on_stopped_leading failed", self.identity)

    def _jittered(self, period: float) -> float:
        return period + self.rng.random() * self.jitter_factor * period

    async def _acquire(self) -> None:
        while not await self._attempt(self.renew_deadline):
            await self.sleep(self._jittered(self.retry_period))

    async def _attempt(self, timeout: float) -> bool:
        """try_acquire_or_renew, but a call that hangs counts as a failure after timeout."""
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), max(timeout, 0.001))
        except asyncio.TimeoutError:
            return False

    async def _renew(self) -> None:
        """Renew every retry_period; return when a renewal cannot succeed within renew_deadline."""
        while True:
            await self.sleep(self.retry_period)
            deadline = self.clock.now() + self.renew_deadline
            while not await self._attempt(deadline - self.clock.now()):
                if self.leader and self.leader != self.identity:
                    return  # we read the lease held by someone else: we are not the leader
                if self.clock.now() + self.retry_period >= deadline:
                    return
                await self.sleep(self.retry_period)


def _holder(spec: coordination_pb2.LeaseSpec) -> str:
    return spec.holder_identity if spec.HasField("holder_identity") else ""
