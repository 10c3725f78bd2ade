"""Leader election over the fake API, in simulated time (FakeClock + FakeTimers)."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import grpc
import pytest

from controlplane.client import api
from controlplane.client.fake import FakeApi, FakeTimers
from controlplane.client.leaderelection import LeaderElector
from controlplane.client.timeutil import FakeWallClock, parse_time
from kvstore.clock import FakeClock

NS, NAME = "kube-system", "skiff-controller-manager"


class World:
    """One fake API, one simulated clock, and a log of what candidates were told."""

    def __init__(self, fake: FakeApi | None = None) -> None:
        self.clock = FakeClock(0.0)
        self.wall = FakeWallClock(1_800_000_000.0)
        self.fake = fake or FakeApi(self.wall)
        self.fake.clock = self.wall
        self.timers = FakeTimers(self.clock, self.wall)
        self.log: list[tuple[float, str, str]] = []

    def elector(self, identity: str, **kw: Any) -> LeaderElector:
        def note(what: str) -> Callable[[], None]:
            return lambda: self.log.append((self.clock.now(), identity, what))
        kw.setdefault("on_started_leading", note("started"))
        return LeaderElector(self.fake, NS, NAME, identity, 15, 10, 2, clock=self.clock, wall_clock=self.wall,
                             on_stopped_leading=note("stopped"),
                             on_new_leader=lambda who: self.log.append((self.clock.now(), identity, f"sees {who}")),
                             sleep=self.timers.sleep, jitter_factor=0.0, **kw)

    def lease(self) -> Any:
        return self.fake.stored("leases", NAME, NS)

    def events(self, what: str) -> list[tuple[float, str]]:
        return [(t, who) for t, who, w in self.log if w == what]


def simulate(body: Callable[[World], Awaitable[None]], fake: FakeApi | None = None) -> None:
    async def main() -> None:
        await body(World(fake))
    asyncio.run(main())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def test_acquires_a_missing_lease_and_renews_it() -> None:
    async def body(w: World) -> None:
        a = w.elector("a")
        task = asyncio.create_task(a.run())
        await w.timers.idle()
        assert a.is_leader and w.events("started") == [(0.0, "a")]
        lease = w.lease()
        assert lease.spec.holder_identity == "a" and lease.spec.lease_duration_seconds == 15
        assert lease.spec.lease_transitions == 0
        assert lease.spec.acquire_time == lease.spec.renew_time == "2027-01-15T08:00:00.000000Z"
        first_rv = lease.metadata.resource_version
        await w.timers.run_for(2.0)
        renewed = w.lease()
        assert parse_time(renewed.spec.renew_time) - parse_time(lease.spec.renew_time) == pytest.approx(2.0)
        assert renewed.spec.acquire_time == lease.spec.acquire_time
        assert renewed.metadata.resource_version != first_rv
        assert a.is_leader and a.leader == "a"
        await stop(task)
        assert not a.is_leader and w.events("stopped") == [(2.0, "a")]
        assert w.lease().spec.holder_identity == "a"  # no release asked for
    simulate(body)


def test_steps_down_when_it_cannot_renew_within_the_deadline() -> None:
    async def body(w: World) -> None:
        a = w.elector("a")
        task = asyncio.create_task(a.run())
        await w.timers.run_for(4.0)  # acquired at 0, renewed at 2 and 4
        w.fake.fail("update", times=None)  # the API refuses every write from now on
        await w.timers.run_for(30.0)
        assert task.done() and not a.is_leader
        ((stopped_at, _),) = w.events("stopped")
        # The first failed renewal was at 6: it gave up before 6 + renew_deadline, and well
        # before its last renewal (4) plus the lease duration, when others may take over.
        assert 6.0 < stopped_at < 6.0 + 10.0 < 4.0 + 15.0
        assert [a_[0] for a_ in w.fake.writes()].count("update") >= 5
    simulate(body)


def test_another_candidate_takes_over_only_after_the_lease_expires() -> None:
    async def body(w: World) -> None:
        a, b = w.elector("a"), w.elector("b")
        ta = asyncio.create_task(a.run())
        await w.timers.idle()
        tb = asyncio.create_task(b.run())
        await w.timers.run_for(60.0)
        assert a.is_leader and not b.is_leader and b.leader == "a"
        assert w.events("started") == [(0.0, "a")]
        await stop(ta)  # killed: no release, the lease just stops being renewed
        killed_at = w.clock.now()
        await w.timers.run_for(30.0)
        assert b.is_leader
        ((took_at, who),) = w.events("started")[1:]
        assert who == "b" and killed_at + 15.0 <= took_at <= killed_at + 15.0 + 2.0
        lease = w.lease()
        assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1
        assert [who for _, who in w.events("sees a")] == ["a", "b"]  # each noticed a lead
        assert w.events("sees b") == [(took_at, "b")]
        await stop(tb)
    simulate(body)


def test_release_on_cancel_lets_the_next_candidate_in_at_once() -> None:
    async def body(w: World) -> None:
        a, b = w.elector("a", release_on_cancel=True), w.elector("b")
        ta = asyncio.create_task(a.run())
        await w.timers.idle()
        tb = asyncio.create_task(b.run())
        await w.timers.run_for(10.0)
        await stop(ta)
        assert not w.lease().spec.HasField("holder_identity")
        assert w.lease().spec.lease_duration_seconds == 1
        released_at = w.clock.now()
        await w.timers.run_for(2.0)
        assert b.is_leader and w.events("started")[1] == (pytest.approx(released_at + 2.0, abs=0.01), "b")
        await stop(tb)
    simulate(body)


class YieldingApi(FakeApi):
    """Lets other tasks run between a read and the write that follows it: real races."""

    async def get(self, resource: Any, name: str, namespace: str = "") -> Any:
        try:
            return await super().get(resource, name, namespace)
        finally:
            await asyncio.sleep(0)


def test_two_candidates_racing_for_a_free_lease_one_wins_by_resource_version() -> None:
    async def body(w: World) -> None:
        a, b = w.elector("a"), w.elector("b")
        # The lease does not exist: both read NotFound, both create; one gets AlreadyExists.
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(results) == [False, True]
        winner = "a" if results[0] else "b"
        assert w.lease().spec.holder_identity == winner
        # A released lease: both read it free, both update from the same resourceVersion.
        lease = w.lease()
        lease.spec.ClearField("holder_identity")
        await w.fake.update(lease)
        results = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(results) == [False, True]
        assert w.lease().spec.holder_identity == ("a" if results[0] else "b")
        assert ("update", "leases", NS, NAME) in w.fake.writes()
    simulate(body, YieldingApi())


def test_a_conflict_is_a_lost_round_not_an_error() -> None:
    async def body(w: World) -> None:
        a = w.elector("a")
        assert await a.try_acquire_or_renew()
        w.fake.fail("update", error=api.ConflictError(grpc.StatusCode.ABORTED, "modified"))
        assert not await a.try_acquire_or_renew()
        assert await a.try_acquire_or_renew()
        w.fake.fail("get", times=1)
        assert not await a.try_acquire_or_renew()
    simulate(body)


def test_a_leader_that_reads_another_holder_steps_down_at_once() -> None:
    async def body(w: World) -> None:
        a = w.elector("a")
        task = asyncio.create_task(a.run())
        await w.timers.run_for(1.0)
        lease = w.lease()
        lease.spec.holder_identity = "intruder"  # e.g. a took too long and was replaced
        await w.fake.update(lease)
        await w.timers.run_for(1.0)
        assert task.done() and not a.is_leader and w.events("stopped") == [(2.0, "a")]
        assert a.leader == "intruder"
    simulate(body)


def test_leader_work_runs_as_a_task_and_is_cancelled_on_loss() -> None:
    async def body(w: World) -> None:
        state: list[str] = []

        async def lead() -> None:
            state.append("working")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                state.append("cancelled")
                raise

        a = w.elector("a", on_started_leading=lead)
        task = asyncio.create_task(a.run())
        await w.timers.idle()
        assert state == ["working"]
        w.fake.fail("get", times=None)
        await w.timers.run_for(20.0)
        assert task.done() and state == ["working", "cancelled"]
    simulate(body)


def test_durations_are_checked() -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        LeaderElector(FakeApi(), NS, NAME, "a", lease_duration=10, renew_deadline=10, retry_period=2)
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        LeaderElector(FakeApi(), NS, NAME, "a", lease_duration=15, renew_deadline=2, retry_period=2)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(FakeApi(), NS, NAME, "")
