"""The work queue: client-go's semantics, timed by a FakeClock (no real waiting)."""
from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from controlplane.client.workqueue import (BucketRateLimiter, ExponentialFailureRateLimiter,
                                           MaxOfRateLimiter, WorkQueue, default_controller_rate_limiter)
from kvstore.clock import FakeClock, MonotonicClock


def queue(clock: FakeClock | None = None) -> WorkQueue:
    return WorkQueue(clock or FakeClock())


def test_add_drops_duplicates_of_a_waiting_key() -> None:
    q = queue()
    for key in ["a", "b", "a", "a", "b", "c"]:
        q.add(key)
    assert len(q) == 3
    assert [q.get_nowait(), q.get_nowait(), q.get_nowait(), q.get_nowait()] == ["a", "b", "c", None]
    assert q.metrics.adds == 6


def test_a_key_in_process_is_not_handed_out_again_until_done() -> None:
    q = queue()
    q.add("a")
    assert q.get_nowait() == "a"
    q.add("a")  # changed while a worker has it
    q.add("a")
    assert len(q) == 0 and q.get_nowait() is None
    assert q.processing() == {"a"}
    q.done("a")
    assert len(q) == 1  # re-queued once, however many adds came meanwhile
    assert q.get_nowait() == "a"
    q.done("a")
    assert len(q) == 0 and q.get_nowait() is None


def test_done_without_a_new_add_does_not_requeue() -> None:
    q = queue()
    q.add("a")
    q.get_nowait()
    q.done("a")
    q.done("a")  # a second done is harmless
    assert len(q) == 0 and q.processing() == frozenset()


def test_fifo_order_and_requeued_key_goes_last() -> None:
    q = queue()
    q.add("a")
    assert q.get_nowait() == "a"
    q.add("a")
    q.add("b")
    q.done("a")
    assert [q.get_nowait(), q.get_nowait()] == ["b", "a"]


def test_exponential_backoff_sequence_and_cap() -> None:
    limiter = ExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("k") for _ in range(20)]
    assert delays[:5] == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert delays[17] == pytest.approx(0.005 * 2 ** 17)  # 655.36 s
    assert delays[18] == delays[19] == 1000.0
    assert limiter.num_requeues("k") == 20
    assert limiter.when("other") == 0.005  # per key
    limiter.forget("k")
    assert limiter.num_requeues("k") == 0 and limiter.when("k") == 0.005
    for _ in range(200):
        limiter.when("long")  # no overflow however many failures
    assert limiter.when("long") == 1000.0


def test_bucket_allows_a_burst_then_spaces_by_qps() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(clock, qps=10, burst=100)
    assert [bucket.when(f"k{i}") for i in range(100)] == [0.0] * 100
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.advance(10.0)  # refills, but never beyond the burst
    assert [bucket.when(f"z{i}") for i in range(98)] == [0.0] * 98
    assert bucket.when("over") > 0


def test_default_limiter_is_the_larger_of_both() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock, qps=1, burst=1)
    assert limiter.when("a") == 0.005        # a token is there; backoff wins
    assert limiter.when("b") == pytest.approx(1.0)  # no token: the bucket wins
    assert isinstance(limiter, MaxOfRateLimiter)
    assert limiter.num_requeues("a") == 1


def test_add_rate_limited_waits_out_the_backoff_on_the_clock() -> None:
    clock = FakeClock()
    q = queue(clock)
    q.add_rate_limited("a")
    assert len(q) == 0 and q.waiting() == {"a": clock.now() + 0.005}
    assert q.next_timer() == pytest.approx(clock.now() + 0.005)
    clock.advance(0.004)
    assert q.get_nowait() is None
    clock.advance(0.001)
    assert q.get_nowait() == "a"
    q.done("a")
    q.add_rate_limited("a")  # second failure: 10 ms
    clock.advance(0.009)
    assert q.tick() == 0
    clock.advance(0.001)
    assert q.tick() == 1 and len(q) == 1
    assert q.num_requeues("a") == 2 and q.metrics.retries == 2


def test_forget_resets_the_backoff() -> None:
    clock = FakeClock()
    q = queue(clock)
    for _ in range(5):
        q.add_rate_limited("a")
    q.forget("a")
    assert q.num_requeues("a") == 0
    clock.advance(1.0)
    assert q.get_nowait() == "a"
    q.done("a")
    q.add_rate_limited("a")
    assert q.waiting()["a"] == pytest.approx(clock.now() + 0.005)


def test_add_after_keeps_the_earliest_deadline() -> None:
    clock = FakeClock()
    q = queue(clock)
    q.add_after("a", 10)
    q.add_after("a", 2)
    q.add_after("a", 5)
    assert q.waiting() == {"a": clock.now() + 2}
    clock.advance(2)
    assert q.get_nowait() == "a"
    q.done("a")
    clock.advance(10)
    assert q.get_nowait() is None  # the superseded deadlines do not fire again
    q.add_after("b", 0)  # no delay: at once
    assert q.get_nowait() == "b"


def test_delayed_key_already_waiting_is_deduplicated() -> None:
    clock = FakeClock()
    q = queue(clock)
    q.add("a")
    q.add_after("a", 1)
    clock.advance(1)
    assert len(q) == 1


def test_shut_down_drains_then_returns_none() -> None:
    async def body() -> None:
        q = queue()
        q.add("a")
        q.add_after("later", 5)
        q.shut_down()
        q.add("b")  # ignored
        assert await q.get() == "a"
        assert await q.get() is None
        assert q.waiting() == {}
    asyncio.run(body())


def test_get_waits_for_an_add_and_shut_down_wakes_waiters() -> None:
    async def body() -> None:
        q = queue()
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        assert not getter.done()
        q.add("a")
        assert await asyncio.wait_for(getter, 5) == "a"
        waiters = [asyncio.create_task(q.get()) for _ in range(3)]
        await asyncio.sleep(0)
        q.shut_down()
        assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [None, None, None]
    asyncio.run(body())


def test_get_wakes_when_a_delayed_key_is_due_on_a_real_clock() -> None:
    async def body() -> None:
        q = WorkQueue(MonotonicClock())
        q.add_after("a", 0.02)
        assert await asyncio.wait_for(q.get(), 5) == "a"
    asyncio.run(body())


def test_workers_never_share_a_key_and_every_change_is_processed() -> None:
    """Four workers, keys added while in process: at most one worker per key, and the last
    add of every key is followed by a pass over that key."""
    async def body() -> None:
        q = queue()
        active: Counter[str] = Counter()
        passes: Counter[str] = Counter()
        worst = 0

        async def worker() -> None:
            nonlocal worst
            while (key := await q.get()) is not None:
                try:
                    active[key] += 1
                    worst = max(worst, active[key])
                    await asyncio.sleep(0)
                    if passes[key] < 3:
                        q.add(key)  # a change arrives while this worker holds the key
                    await asyncio.sleep(0)
                    passes[key] += 1
                finally:
                    active[key] -= 1
                    q.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for i in range(20):
            q.add(f"k{i % 5}")
            await asyncio.sleep(0)
        for _ in range(200):
            await asyncio.sleep(0)
        q.shut_down()
        await asyncio.wait_for(asyncio.gather(*workers), 5)
        assert worst == 1
        assert set(passes) == {f"k{i}" for i in range(5)}
        assert all(n >= 4 for n in passes.values())
    asyncio.run(body())


def test_metrics_measure_queue_wait_and_work_time() -> None:
    clock = FakeClock()
    q = queue(clock)
    q.add("a")
    clock.advance(2)
    assert q.depth == 1
    q.get_nowait()
    clock.advance(3)
    q.done("a")
    assert q.metrics.queue_seconds_total == 2 and q.metrics.queue_count == 1
    assert q.metrics.work_seconds_total == 3 and q.metrics.work_count == 1


def test_limiter_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="base_delay"):
        ExponentialFailureRateLimiter(0, 1)
    with pytest.raises(ValueError, match="qps"):
        BucketRateLimiter(FakeClock(), qps=0)
