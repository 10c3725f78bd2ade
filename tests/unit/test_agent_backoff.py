"""CrashLoopBackOff on a fake clock: 10, 20, 40, ... 300 s between restarts; reset after 10 min."""
from __future__ import annotations

from kvstore.clock import FakeClock
from node.agent.plan import (EXITED, BackoffPolicy, ContainerInfo, CrashLoopBackoff, PodRuntimeState, SandboxInfo,
                             StartContainer, Wait, container_hash, plan, pull_backoff)
from protos.skiff.api.v1 import core_pb2


def crash_pod() -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "crash", "default", "u"
    p.spec.restart_policy = "Always"
    p.spec.containers.add(name="app", image="img:1", image_pull_policy="IfNotPresent")
    return p


def simulate(clock: FakeClock, backoff: CrashLoopBackoff, crashes: int, runs_for: float) -> list[float]:
    """Run a container that exits `runs_for` seconds after each start; the waits between an
    exit and the next start, as the planner imposes them."""
    p = crash_pod()
    sandbox = SandboxInfo("sb", 0, True, "10.0.0.2")
    attempt, waits = 0, []
    for _ in range(crashes):
        started = clock.now()
        clock.advance(runs_for)
        exited = ContainerInfo(id=f"c{attempt}", name="app", sandbox_id="sb", attempt=attempt, state=EXITED,
                               exit_code=1, started_at=started, finished_at=clock.now(),
                               spec_hash=container_hash(p.spec.containers[0]))
        actual = PodRuntimeState(sandboxes=(sandbox,), containers=(exited,), images=frozenset({"img:1"}))
        finished = clock.now()
        while True:
            [action] = plan(p, actual, clock.now(), backoff)
            if isinstance(action, StartContainer):
                assert action.restart_of == finished and action.attempt == attempt + 1
                backoff.record_restart("app", finished)
                break
            assert isinstance(action, Wait) and action.reason == "CrashLoopBackOff"
            assert action.until is not None and action.until > clock.now()
            clock.advance(action.until - clock.now())  # the worker sleeps until then
        waits.append(clock.now() - finished)
        attempt += 1
    return waits


def test_restarts_back_off_10_20_40_up_to_300_seconds() -> None:
    clock = FakeClock(1_800_000_000.0)
    waits = simulate(clock, CrashLoopBackoff(), crashes=9, runs_for=1.0)
    assert waits == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]


def test_backoff_resets_after_ten_minutes_of_running() -> None:
    clock = FakeClock(1_800_000_000.0)
    backoff = CrashLoopBackoff()
    assert simulate(clock, backoff, crashes=4, runs_for=1.0) == [0.0, 10.0, 20.0, 40.0]
    # Ran for more than 10 minutes since the last restart: back to the start of the sequence.
    assert simulate(clock, backoff, crashes=3, runs_for=601.0) == [0.0, 0.0, 0.0]
    assert simulate(clock, backoff, crashes=3, runs_for=1.0) == [10.0, 20.0, 40.0]


def test_backoff_is_configurable() -> None:
    clock = FakeClock(0.0)
    backoff = CrashLoopBackoff(BackoffPolicy(initial=1.0, maximum=4.0, reset_after=60.0))
    assert simulate(clock, backoff, crashes=6, runs_for=0.5) == [0.0, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_pull_backoff_doubles_and_caps() -> None:
    policy = BackoffPolicy()
    assert [pull_backoff(n, policy) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
