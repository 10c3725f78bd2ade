"""Table tests of the node agent's pure planner: plan(desired, actual, now, backoff) -> actions."""
from __future__ import annotations

from dataclasses import replace

import pytest

from node.agent.plan import (
    CREATED, EXITED, RUNNING, BackoffPolicy, ContainerInfo, CrashLoopBackoff, CreateSandbox, Finalize,
    KillContainer, PodRuntimeState, PullFailure, PullImage, RemoveContainer, RemoveSandbox, SandboxInfo,
    StartContainer, StopSandbox, Wait, container_hash, plan, pod_finished, settled,
)
from controlplane.client.timeutil import format_time
from protos.skiff.api.v1 import core_pb2

NOW = 1_800_000_000.0
SB = SandboxInfo("sb1", 0, True, "10.244.0.5", NOW - 100)


def pod(containers: list[tuple[str, str]] = [("app", "busybox:1.0")], init: list[tuple[str, str]] = [],
        restart: str = "Always", pull: str = "IfNotPresent", **meta: object) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "web", "default", "uid-1"
    for key, value in meta.items():
        setattr(p.metadata, key, value)
    p.spec.restart_policy = restart
    p.spec.termination_grace_period_seconds = 30
    p.spec.node_name = "n1"
    for name, image in init:
        p.spec.init_containers.add(name=name, image=image, image_pull_policy=pull)
    for name, image in containers:
        p.spec.containers.add(name=name, image=image, image_pull_policy=pull)
    return p


def spec_of(p: core_pb2.Pod, name: str) -> core_pb2.Container:
    return next(c for c in list(p.spec.init_containers) + list(p.spec.containers) if c.name == name)


def ctr(p: core_pb2.Pod, name: str, state: str, attempt: int = 0, code: int = 0, cid: str | None = None,
        sandbox: str = "sb1", finished: float = 0.0, started: float = NOW - 50, **kw: object) -> ContainerInfo:
    return ContainerInfo(id=cid or f"{name}-{attempt}", name=name, sandbox_id=sandbox, attempt=attempt,
                         state=state, exit_code=code, started_at=started, finished_at=finished,
                         spec_hash=container_hash(spec_of(p, name)), image=spec_of(p, name).image,
                         init=any(c.name == name for c in p.spec.init_containers), **kw)  # type: ignore[arg-type]


def state(*containers: ContainerInfo, sandboxes: tuple[SandboxInfo, ...] = (SB,),
          images: frozenset[str] = frozenset({"busybox:1.0"}), **kw: object) -> PodRuntimeState:
    return PodRuntimeState(sandboxes=sandboxes, containers=tuple(containers), images=images, **kw)  # type: ignore[arg-type]


def run(p: core_pb2.Pod | None, actual: PodRuntimeState, backoff: CrashLoopBackoff | None = None,
        now: float = NOW) -> list[object]:
    return list(plan(p, actual, now, backoff or CrashLoopBackoff()))


P = pod()


@pytest.mark.parametrize("name,desired,actual,expected", [
    ("new pod: a sandbox first", P, state(sandboxes=()), [CreateSandbox(0)]),
    ("sandbox ready, image present: start", P, state(), [StartContainer("app", "sb1", 0)]),
    ("image absent: pull then start", P, state(images=frozenset()),
     [PullImage("app", "busybox:1.0"), StartContainer("app", "sb1", 0)]),
    ("running and unchanged: nothing", P, state(ctr(P, "app", RUNNING)), []),
    ("made but never started: remove, then make anew", P, state(ctr(P, "app", CREATED)),
     [RemoveContainer("app-0")]),
    ("sandbox died: kill what runs, stop it, make a new one", P,
     state(ctr(P, "app", RUNNING), sandboxes=(replace(SB, ready=False),)),
     [KillContainer("app-0", "app", 30, "the pod sandbox is gone"), StopSandbox("sb1"), CreateSandbox(1)]),
    ("an older sandbox is stopped and removed", P,
     state(ctr(P, "app", RUNNING, sandbox="sb2"), sandboxes=(SB, SandboxInfo("sb2", 1, True, "10.244.0.6", NOW))),
     [StopSandbox("sb1"), RemoveSandbox("sb1")]),
    ("liveness gave up: kill", P, state(ctr(P, "app", RUNNING), unhealthy={"app-0": "Liveness probe failed"}),
     [KillContainer("app-0", "app", 30, "Liveness probe failed")]),
    ("Always restarts a success at once the first time", P,
     state(ctr(P, "app", EXITED, code=0, finished=NOW - 1)),
     [StartContainer("app", "sb1", 1, restart_of=NOW - 1)]),
    ("OnFailure does not restart a success: pod done, sandbox stopped", pod(restart="OnFailure"),
     state(ctr(pod(restart="OnFailure"), "app", EXITED, code=0, finished=NOW - 1)), [StopSandbox("sb1")]),
    ("OnFailure restarts a failure", pod(restart="OnFailure"),
     state(ctr(pod(restart="OnFailure"), "app", EXITED, code=2, finished=NOW - 1)),
     [StartContainer("app", "sb1", 1, restart_of=NOW - 1)]),
    ("Never: a failure is final", pod(restart="Never"),
     state(ctr(pod(restart="Never"), "app", EXITED, code=2, finished=NOW - 1)), [StopSandbox("sb1")]),
])
def test_plan_table(name: str, desired: core_pb2.Pod, actual: PodRuntimeState, expected: list[object]) -> None:
    assert run(desired, actual) == expected, name


def test_pull_policies() -> None:
    always = pod(pull="Always")
    assert run(always, state()) == [PullImage("app", "busybox:1.0"), StartContainer("app", "sb1", 0)]
    never = pod(pull="Never")
    assert run(never, state()) == [StartContainer("app", "sb1", 0)]
    [wait] = run(never, state(images=frozenset()))
    assert isinstance(wait, Wait) and wait.reason == "ErrImageNeverPull" and wait.until is None
    # Always pulls only when a container starts, not on every sync.
    assert run(always, state(ctr(always, "app", RUNNING))) == []


def test_failed_pulls_back_off() -> None:
    failure = PullFailure(count=2, last_at=NOW - 5, message="connection refused")
    [wait] = run(P, state(images=frozenset(), pull_failures={"busybox:1.0": failure}))
    assert isinstance(wait, Wait) and wait.reason == "ImagePullBackOff" and wait.until == NOW - 5 + 20
    assert "connection refused" in wait.message
    assert run(P, state(images=frozenset(), pull_failures={"busybox:1.0": failure}), now=NOW + 15) == [
        PullImage("app", "busybox:1.0"), StartContainer("app", "sb1", 0)]


def test_init_containers_run_in_order_and_must_succeed() -> None:
    p = pod(init=[("first", "busybox:1.0"), ("second", "busybox:1.0")])
    assert run(p, state()) == [StartContainer("first", "sb1", 0, init=True)]
    assert run(p, state(ctr(p, "first", RUNNING))) == []
    first_ok = ctr(p, "first", EXITED, code=0, finished=NOW - 2)
    assert run(p, state(first_ok)) == [StartContainer("second", "sb1", 0, init=True)]
    second_ok = ctr(p, "second", EXITED, code=0, finished=NOW - 1)
    assert run(p, state(first_ok, second_ok)) == [StartContainer("app", "sb1", 0)]
    # A failed init container is restarted (Always), the next one waits.
    failed = ctr(p, "first", EXITED, code=1, finished=NOW - 1)
    assert run(p, state(failed)) == [StartContainer("first", "sb1", 1, init=True, restart_of=NOW - 1)]


def test_init_failure_under_never_fails_the_pod() -> None:
    p = pod(init=[("setup", "busybox:1.0")], restart="Never")
    failed = ctr(p, "setup", EXITED, code=1, finished=NOW - 1)
    assert pod_finished(p, state(failed)) == "Failed"
    assert run(p, state(failed)) == [StopSandbox("sb1")]


def test_crash_loop_waits_with_backoff() -> None:
    backoff = CrashLoopBackoff(BackoffPolicy())
    backoff.record_restart("app", NOW - 30)  # the first crash restarted at once
    crashed = ctr(P, "app", EXITED, attempt=1, code=1, finished=NOW - 2)
    [wait] = run(P, state(crashed), backoff)
    assert isinstance(wait, Wait) and wait.reason == "CrashLoopBackOff" and wait.until == NOW - 2 + 10
    assert "back-off 10s restarting failed container=app pod=web_default(uid-1)" == wait.message
    assert settled([wait])
    assert run(P, state(crashed), backoff, now=NOW + 8) == [StartContainer("app", "sb1", 2, restart_of=NOW - 2)]


def test_image_change_kills_and_restarts_without_backoff() -> None:
    old = pod()
    running = ctr(old, "app", RUNNING)
    new = pod(containers=[("app", "busybox:2.0")])
    [kill] = run(new, state(running, images=frozenset({"busybox:1.0", "busybox:2.0"})))
    assert isinstance(kill, KillContainer) and kill.container_id == "app-0" and "definition changed" in kill.reason
    backoff = CrashLoopBackoff()
    backoff.record_restart("app", NOW - 20)
    killed = replace(running, state=EXITED, exit_code=137, finished_at=NOW - 1)
    assert run(new, state(killed, images=frozenset({"busybox:2.0"})), backoff) == [StartContainer("app", "sb1", 1)]


def test_old_instances_are_removed_keeping_the_previous() -> None:
    instances = [ctr(P, "app", EXITED, attempt=i, code=1, finished=NOW - 100 + i) for i in range(3)]
    live = ctr(P, "app", RUNNING, attempt=3)
    assert run(P, state(*instances, live)) == [RemoveContainer("app-1"), RemoveContainer("app-0")]


def test_deletion_kills_with_grace_then_removes_then_finalizes() -> None:
    deleting = pod(deletion_timestamp="2027-01-15T08:00:30Z", deletion_grace_period_seconds=7)
    previous = ctr(deleting, "app", EXITED, attempt=0, cid="old")
    assert run(deleting, state(ctr(deleting, "app", RUNNING, attempt=1), previous)) == [
        KillContainer("app-1", "app", 7, "the pod is being deleted"), StopSandbox("sb1"), RemoveSandbox("sb1")]
    assert run(deleting, state(sandboxes=())) == [Finalize(delete_from_api=True)]
    # A pod gone from the API (force-deleted) is cleaned up too, quickly, and not deleted again.
    assert run(None, state(ctr(P, "app", RUNNING))) == [
        KillContainer("app-0", "app", 2, "the pod is being deleted"), StopSandbox("sb1"), RemoveSandbox("sb1")]
    assert run(None, state(sandboxes=())) == [Finalize(delete_from_api=False)]


def test_a_finished_pod_is_not_started_again() -> None:
    done = pod(restart="Never")
    done.status.phase = "Succeeded"
    assert run(done, state(sandboxes=())) == []
    assert run(done, state()) == [StopSandbox("sb1")]
    assert run(done, state(sandboxes=(replace(SB, ready=False),))) == []


def test_containers_not_in_the_spec_are_removed() -> None:
    other = ContainerInfo(id="x", name="stray", sandbox_id="sb1", attempt=0, state=RUNNING)
    assert run(P, state(ctr(P, "app", RUNNING), other)) == [
        KillContainer("x", "stray", 30, "not in the pod's spec"), RemoveContainer("x")]


def test_active_deadline_kills_the_pod_and_it_stays_finished() -> None:
    p = pod()
    p.spec.active_deadline_seconds = 60
    p.status.start_time = format_time(NOW - 61)
    running = state(ctr(p, "app", RUNNING))
    assert pod_finished(p, running, NOW) == "Failed" and pod_finished(p, running, NOW - 2) is None
    assert run(p, running) == [KillContainer("app-0", "app", 30, "the pod is finished"), StopSandbox("sb1")]
    assert run(p, running, now=NOW - 2) == []  # not yet
    stopped = state(ctr(p, "app", EXITED, code=137, finished=NOW), sandboxes=(replace(SB, ready=False),))
    assert run(p, stopped) == []  # nothing starts again
