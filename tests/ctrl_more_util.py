"""Helpers for the controller unit tests of issue 7's second half (test_ctrl_*.py).

`Env` builds a ControllerContext over FakeApi with fake clocks; `run(body)` runs an async test
body in a fresh loop. `env.start()` starts the informers a controller asked for and waits for
their first list; `env.settle()` lets watch events reach the caches. Tests then call
`controller.sync(key)` themselves and look at `env.api.writes()`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from google.protobuf.message import Message

from controlplane.client.fake import FakeApi
from controlplane.client.informer import InformerFactory
from controlplane.client.timeutil import FakeWallClock, format_time
from controlplane.controllers.base import ControllerContext
from kvstore.clock import FakeClock
from protos.skiff.api.v1 import core_pb2

T0 = 1_800_000_000.0


class Env:
    def __init__(self) -> None:
        self.wall = FakeWallClock(T0)
        self.clock = FakeClock()
        self.api = FakeApi(clock=self.wall)
        self.informers = InformerFactory(self.api)
        self.ctx = ControllerContext(self.api, self.informers, clock=self.clock, wall=self.wall)

    def seed(self, *objs: Message) -> list[Message]:
        return self.api.seed(*objs)

    async def start(self) -> None:
        self.informers.start()
        assert await self.informers.wait_for_sync(5)
        await self.settle()

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.informers.stop()

    def writes(self, resource: str | None = None, verb: str | None = None) -> list[tuple[str, str, str, str]]:
        """Recorded writes, events left out unless asked for."""
        return [a for a in self.api.writes()
                if (resource is None and a[1] != "events") or a[1] == resource
                if verb is None or a[0] == verb]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)


def run(body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        env = Env()
        try:
            await body(env)
        finally:
            await env.stop()
    asyncio.run(main())


def node(name: str, labels: dict[str, str] | None = None, taints: list[tuple[str, str]] | None = None,
         ready: str = "True") -> core_pb2.Node:
    n = core_pb2.Node()
    n.metadata.name = name
    n.metadata.labels.update(labels or {})
    for key, effect in taints or []:
        n.spec.taints.add(key=key, effect=effect)
    if ready:
        n.status.conditions.add(type="Ready", status=ready)
    return n


def mark_ready(pod: Any, ready: bool = True, since: float = T0 - 3600, ip: str = "") -> Any:
    pod.status.phase = "Running"
    del pod.status.conditions[:]
    pod.status.conditions.add(type="Ready", status="True" if ready else "False",
                              last_transition_time=format_time(since))
    if ip:
        pod.status.pod_ip = ip
    return pod
