"""The leader's lease countdowns, on a stepped clock (no sleeping, no threads)."""
from __future__ import annotations

import pytest

from kvstore.clock import FakeClock
from kvstore.lessor import MIN_TTL, Lessor, effective_ttl


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lessor(clock: FakeClock) -> Lessor:
    return Lessor(clock)


def test_countdown_expires_at_the_deadline(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(1, 10)
    clock.advance(9.75)
    assert lessor.expired() == []
    clock.advance(0.25)
    assert lessor.expired() == [1]


@pytest.mark.parametrize("elapsed, remaining", [
    (0.0, 10), (0.125, 9), (0.5, 9), (1.0, 9), (9.5, 0), (10.0, 0),
    # Overdue but not yet revoked: etcd's int64(Remaining().Seconds()) goes negative after a second.
    (10.5, 0), (11.5, -1),
])
def test_remaining_truncates_like_etcd(lessor: Lessor, clock: FakeClock, elapsed: float, remaining: int) -> None:
    lessor.granted(1, 10)
    clock.advance(elapsed)
    assert lessor.remaining(1) == remaining


def test_remaining_of_unknown_lease(lessor: Lessor) -> None:
    assert lessor.remaining(42) is None


def test_renew_restarts_the_countdown(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(1, 10)
    clock.advance(7)
    assert lessor.renew(1) == 10
    assert lessor.remaining(1) == 10
    clock.advance(9.5)
    assert lessor.expired() == []
    clock.advance(0.5)
    assert lessor.expired() == [1]


def test_renew_of_unknown_lease(lessor: Lessor) -> None:
    assert lessor.renew(42) is None


def test_expired_lease_is_not_renewed(lessor: Lessor, clock: FakeClock) -> None:
    # etcd refuses to renew a lease past its deadline even before the revoke is proposed, and
    # answers the keep-alive as for a missing lease (TTL 0).
    lessor.granted(1, 10)
    clock.advance(10)
    assert lessor.renew(1) == 0
    assert lessor.expired() == [1]
    assert lessor.renew(1) == 0  # being revoked


def test_expired_marks_revoking_once(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(3, 5)
    lessor.granted(1, 5)
    lessor.granted(2, 50)
    clock.advance(5)
    assert lessor.expired() == [1, 3]
    assert lessor.revoking == {1, 3}
    assert lessor.expired() == []
    clock.advance(100)
    assert lessor.expired() == [2]


def test_failed_revoke_is_retried(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(1, 5)
    clock.advance(6)
    assert lessor.expired() == [1]
    lessor.revoke_failed(1)
    assert lessor.expired() == [1]
    lessor.forget(1)
    assert lessor.expired() == [] and lessor.remaining(1) is None and lessor.renew(1) is None


def test_promote_restarts_every_countdown_from_full_ttl(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(1, 10)
    clock.advance(9)
    lessor.promote({1: 10, 2: 30})
    assert lessor.remaining(1) == 10 and lessor.remaining(2) == 30
    clock.advance(9.5)
    assert lessor.expired() == []
    clock.advance(0.5)
    assert lessor.expired() == [1]


def test_promote_clears_revoking(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(1, 10)
    clock.advance(10)
    assert lessor.expired() == [1]
    lessor.promote({1: 10})
    assert lessor.revoking == set()
    assert lessor.renew(1) == 10


def test_demote_clears_everything(lessor: Lessor, clock: FakeClock) -> None:
    lessor.granted(1, 10)
    lessor.granted(2, 1)
    clock.advance(1)
    assert lessor.expired() == [2]
    lessor.demote()
    assert lessor.deadlines == {} and lessor.ttls == {} and lessor.revoking == set()
    clock.advance(100)
    assert lessor.expired() == []
    assert lessor.remaining(1) is None and lessor.renew(1) is None


@pytest.mark.parametrize("requested, ttl", [(-5, MIN_TTL), (0, MIN_TTL), (1, MIN_TTL), (2, 2), (3, 3), (60, 60)])
def test_effective_ttl_minimum(requested: int, ttl: int) -> None:
    assert MIN_TTL == 2
    assert effective_ttl(requested) == ttl
