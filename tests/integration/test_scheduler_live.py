"""`skiff scheduler` processes against a real store and API server on loopback.

Each test gets a fresh store and API server (nodes are cluster-wide, and the unschedulable
message counts every node, so tests must not see each other's nodes).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest

from controlplane.client.api import ApiClient
from controlplane.client.quantity import parse_cpu_millis
from deploy.bench.scheduler import SchedulerProcess
from tests.apiutil import ApiEnv
from tests.schedutil import node, pod

HANG = 60.0  # hang guard for waits that take a second or two


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ApiEnv]:
    e = ApiEnv(tmp_path, "skiff")
    e.start()
    yield e
    e.stop()


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[list[SchedulerProcess]]:
    started: list[SchedulerProcess] = []
    yield started
    for s in started:
        s.stop()


def start_scheduler(env: ApiEnv, started: list[SchedulerProcess], *args: str, wait_ready: bool = True,
                    name: str = "scheduler") -> SchedulerProcess:
    s = SchedulerProcess(env.base / "sched", env.address, ["--seed", "1", *args], name=name)
    started.append(s)
    s.start(timeout=HANG, wait_ready=wait_ready)
    return s


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = HANG) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def condition(p: Any) -> Any:
    return next((c for c in p.status.conditions if c.type == "PodScheduled"), None)


async def get_pod(client: ApiClient, name: str) -> Any:
    return await client.get("pods", name, "default")


async def node_of(client: ApiClient, name: str) -> str:
    return str((await get_pod(client, name)).spec.node_name)


def bound_to(client: ApiClient, name: str) -> Callable[[], Awaitable[str]]:
    return lambda: node_of(client, name)


def test_bare_pods_are_bound_and_a_pending_pod_waits_for_a_node(env: ApiEnv,
                                                                 schedulers: list[SchedulerProcess]) -> None:
    async def body(client: ApiClient) -> None:
        await client.create(node("n1", cpu="1"))
        for i in range(3):
            await client.create(pod(f"small-{i}", cpu="100m"))
        start_scheduler(env, schedulers)
        for name in ("small-0", "small-1", "small-2"):
            assert await until(bound_to(client, name), f"{name} bound") == "n1"

        await client.create(pod("big", cpu="2"))
        want = "0/1 nodes are available: 1 Insufficient cpu."

        async def unschedulable() -> Any:
            c = condition(await get_pod(client, "big"))
            return c is not None and c.status == "False" and c

        cond = await until(unschedulable, "PodScheduled=False on big")
        assert (cond.reason, cond.message) == ("Unschedulable", want)

        async def failed_event() -> Any:
            evs = (await client.list("events", "default")).items
            return [e for e in evs if e.reason == "FailedScheduling" and e.involved_object.name == "big"]

        ev = (await until(failed_event, "the FailedScheduling event"))[0]
        assert (ev.type, ev.message, ev.source.component) == ("Warning", want, "default-scheduler")
        assert ev.count >= 1

        await client.create(node("n2", cpu="4"))
        assert await until(lambda: node_of(client, "big"), "big bound after n2 arrived") == "n2"
        bound = await get_pod(client, "big")
        assert condition(bound).status == "True"

        async def scheduled_events() -> Any:
            evs = (await client.list("events", "default")).items
            return [e for e in evs if e.reason == "Scheduled" and e.involved_object.name == "big"]

        ok = (await until(scheduled_events, "the Scheduled event"))[0]
        assert (ok.type, ok.message) == ("Normal", "Successfully assigned default/big to n2")
    env.run(body)


def test_200_pods_at_once_onto_room_for_exactly_200(env: ApiEnv, schedulers: list[SchedulerProcess]) -> None:
    nodes, per_node = 20, 10

    async def body(client: ApiClient) -> None:
        for i in range(nodes):
            await client.create(node(f"n{i:02d}", cpu="1", pods="110"))
        sched = start_scheduler(env, schedulers)
        await asyncio.gather(*(client.create(pod(f"p{i:03d}", cpu="100m"))
                               for i in range(nodes * per_node)))

        async def all_bound() -> Any:
            items = (await client.list("pods", "default")).items
            return len(items) == nodes * per_node and all(p.spec.node_name for p in items) and items

        items = await until(all_bound, "every pod bound")
        cpu: dict[str, int] = {}
        for p in items:
            millis = sum(parse_cpu_millis(c.resources.requests["cpu"]) for c in p.spec.containers)
            cpu[p.spec.node_name] = cpu.get(p.spec.node_name, 0) + millis
        assert all(v <= 1000 for v in cpu.values()), cpu
        assert cpu == {f"n{i:02d}": 1000 for i in range(nodes)}
        # One more does not fit anywhere, and says so.
        await client.create(pod("extra", cpu="100m"))

        async def extra_pending() -> Any:
            c = condition(await get_pod(client, "extra"))
            return c is not None and c.status == "False" and c.message

        assert await until(extra_pending, "extra unschedulable") == (
            f"0/{nodes} nodes are available: {nodes} Insufficient cpu.")
        m = sched.metrics()
        assert m['scheduler_schedule_attempts_total{result="scheduled"}'] == nodes * per_node
    env.run(body)


def test_the_other_scheduler_takes_over_when_the_leader_is_killed(env: ApiEnv,
                                                                  schedulers: list[SchedulerProcess]) -> None:
    lease, renew, retry = 3.0, 2.0, 0.5
    args = ("--leader-elect", "--lease-duration", str(lease), "--lease-renew-deadline", str(renew),
            "--lease-retry-period", str(retry))

    async def body(client: ApiClient) -> None:
        await client.create(node("n1", cpu="4"))
        a = start_scheduler(env, schedulers, *args, "--identity", "sched-a", wait_ready=False, name="a")
        b = start_scheduler(env, schedulers, *args, "--identity", "sched-b", wait_ready=False, name="b")

        async def leader() -> Any:
            ready = [s for s in (a, b) if s.ready]
            return ready[0] if len(ready) == 1 else None

        first = await until(leader, "one leader")
        other = b if first is a else a
        await client.create(pod("before", cpu="100m"))
        assert await until(lambda: node_of(client, "before"), "before bound") == "n1"
        held = await client.get("leases", "kube-scheduler", "kube-system")
        assert held.spec.holder_identity == ("sched-a" if first is a else "sched-b")

        first.kill()
        killed_at = time.monotonic()
        await client.create(pod("after", cpu="100m"))

        async def took_over() -> bool:
            return other.ready

        await until(took_over, "the other scheduler leading", timeout=HANG)
        took = time.monotonic() - killed_at
        # It may take over only once the lease it observed has expired, and must soon after:
        # the lease, plus one jittered retry period, plus time to notice.
        assert lease - retry - 0.5 <= took <= lease + retry * 2.2 + 2.0, took
        assert await until(lambda: node_of(client, "after"), "after bound by the new leader") == "n1"
        now_held = await client.get("leases", "kube-scheduler", "kube-system")
        assert now_held.spec.holder_identity == ("sched-b" if first is a else "sched-a")
        assert now_held.spec.lease_transitions >= 1
    env.run(body)
