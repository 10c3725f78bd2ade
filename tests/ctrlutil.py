"""Harness for controller unit tests: a FakeApi, informer caches filled by hand, fake clocks.

Informers are not started: `refresh()` lists the fake API into every cache (so handlers see adds,
updates and deletes exactly as after a relist), which lets a test decide when a controller's
cache catches up with its own writes - the lag expectations exist for.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

from controlplane.client.fake import FakeApi
from controlplane.client.informer import InformerFactory
from controlplane.client.timeutil import FakeWallClock, format_time
from controlplane.controllers.base import Controller, ControllerContext
from kvstore.clock import FakeClock
from protos.skiff.api.v1 import apps_pb2, core_pb2

C = TypeVar("C", bound=Controller)
T = TypeVar("T")
IMAGE = "busybox:1.36"


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock(1000.0)
        self.wall = FakeWallClock(1_800_000_000.0)
        self.fake = FakeApi(self.wall)
        self.informers = InformerFactory(self.fake, clock=self.clock)
        self.ctx = ControllerContext(self.fake, self.informers, self.clock, self.wall)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.wall.advance(seconds)

    async def refresh(self) -> None:
        """Every cache := what the fake API holds now."""
        for inf in self.informers.informers:
            listed = await self.fake.list(inf.kind)
            inf.replace(listed.items, listed.resource_version)
        self.fake.actions = [a for a in self.fake.actions if a[0] != "list"]

    def writes(self, resource: str | None = None) -> list[tuple[str, str, str, str]]:
        """Write actions, without Events (best-effort noise) unless asked for."""
        return [a for a in self.fake.writes() if (resource is None and a[1] != "events") or a[1] == resource]

    def pods(self, namespace: str = "default") -> list[Any]:
        return [p for p in self._all("pods") if p.metadata.namespace == namespace]

    def _all(self, resource: str) -> list[Any]:
        return [o for (res, _, _), o in sorted(self.fake._objects.items()) if res == resource]

    def replica_sets(self) -> list[Any]:
        return self._all("replicasets")

    async def drain(self, ctrl: Controller, rounds: int = 20) -> None:
        """Sync every queued key (refreshing caches in between) until the queue is quiet."""
        for _ in range(rounds):
            await self.refresh()
            key = ctrl.queue.get_nowait()
            if key is None:
                return
            try:
                await ctrl.sync(key)
            finally:
                ctrl.queue.done(key)


def run(body: Callable[[Harness], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body(Harness())
    return asyncio.run(main())


def template(labels: dict[str, str], image: str = IMAGE) -> core_pb2.PodTemplateSpec:
    t = core_pb2.PodTemplateSpec()
    t.metadata.labels.update(labels)
    t.spec.containers.add(name="app", image=image)
    return t


def replica_set(name: str, replicas: int, labels: dict[str, str] | None = None, min_ready: int = 0
                ) -> apps_pb2.ReplicaSet:
    labels = labels or {"app": name}
    rs = apps_pb2.ReplicaSet(api_version="apps/v1", kind="ReplicaSet")
    rs.metadata.name, rs.metadata.namespace = name, "default"
    rs.spec.replicas = replicas
    rs.spec.min_ready_seconds = min_ready
    rs.spec.selector.match_labels.update(labels)
    rs.spec.template.CopyFrom(template(labels))
    return rs


def deployment(name: str, replicas: int, image: str = IMAGE, surge: int | str = "25%",
               unavailable: int | str = "25%", strategy: str = "RollingUpdate", history: int = 10,
               deadline: int = 600, min_ready: int = 0) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, "default"
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.CopyFrom(template({"app": name}, image))
    d.spec.strategy.type = strategy
    if strategy == "RollingUpdate":
        ru = d.spec.strategy.rolling_update
        for field, value in ((ru.max_surge, surge), (ru.max_unavailable, unavailable)):
            if isinstance(value, int):
                field.int_val = value
            else:
                field.str_val = value
    d.spec.revision_history_limit = history
    d.spec.progress_deadline_seconds = deadline
    d.spec.min_ready_seconds = min_ready
    return d


def pod(name: str, labels: dict[str, str], owner: Any = None, node: str = "", phase: str = "Pending",
        ready: bool = False, created: str = "2027-01-01T00:00:00Z", ready_since: str = "",
        restarts: int = 0) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, "default"
    p.metadata.labels.update(labels)
    p.metadata.creation_timestamp = created
    if owner is not None:
        p.metadata.owner_references.add(api_version="apps/v1", kind=owner.kind or "ReplicaSet",
                                         name=owner.metadata.name, uid=owner.metadata.uid, controller=True)
    p.spec.containers.add(name="app", image=IMAGE)
    p.spec.node_name = node
    p.status.phase = phase
    if ready:
        p.status.conditions.add(type="Ready", status="True", last_transition_time=ready_since or created)
    if restarts:
        p.status.container_statuses.add(name="app", restart_count=restarts)
    return p


async def make_ready(h: Harness, namespace: str = "default", node: str = "node-1") -> int:
    """A kubelet in one call: every pod not yet Running is bound (if needed) and becomes
    Running+Ready now. Its API calls are not left in `fake.actions`."""
    n, recorded = 0, len(h.fake.actions)
    for p in h.pods(namespace):
        if p.status.phase == "Running" or p.metadata.deletion_timestamp:
            continue
        if not p.spec.node_name:
            p = await h.fake.bind(namespace, p.metadata.name, node)
        new = core_pb2.Pod()
        new.CopyFrom(p)
        new.status.phase = "Running"
        new.status.conditions.add(type="Ready", status="True", last_transition_time=format_time(h.wall.now()))
        await h.fake.update_status(new)
        n += 1
    del h.fake.actions[recorded:]
    return n


async def finish_terminating(h: Harness, namespace: str = "default") -> int:
    """A kubelet confirming deletions: pods with a deletionTimestamp go now (not recorded)."""
    n, recorded = 0, len(h.fake.actions)
    for p in h.pods(namespace):
        if p.metadata.deletion_timestamp:
            await h.fake.delete("pods", p.metadata.name, namespace, grace_period_seconds=0)
            n += 1
    del h.fake.actions[recorded:]
    return n
