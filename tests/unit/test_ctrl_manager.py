"""The controller manager over the fake API: loading, running, metrics, leader election."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import pytest

from controlplane.client.fake import FakeApi
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.manager import ControllerManager, ManagerOptions, load_controllers, render_metrics
from controlplane.controllers.replicaset import ReplicaSetController, ReplicationManager
from tests.ctrlutil import deployment

HANG = 10.0


async def eventually(check: Callable[[], bool], what: str, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_load_controllers_takes_declared_classes_and_skips_missing_modules(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        found = load_controllers(["replicaset", "no_such_controller", "deployment"])
    assert found == [ReplicaSetController, ReplicationManager, DeploymentController]
    assert "no_such_controller is not available" in caplog.text


def test_extra_arguments_go_only_to_controllers_that_take_them() -> None:
    m = ControllerManager(FakeApi(), ManagerOptions(controllers=("replicaset",), leader_elect=False,
                                                    controller_args={"burst_replicas": 7, "grace_period": 3}))
    assert [c.burst_replicas for c in m.controllers] == [7, 7]  # type: ignore[attr-defined]


def test_render_metrics_is_prometheus_text() -> None:
    m = ControllerManager(FakeApi(), ManagerOptions(controllers=("deployment",), leader_elect=False))
    m.controllers[0].metrics.syncs, m.controllers[0].metrics.sync_seconds = 3, 0.25
    m.controllers[0].queue.add("default/web")
    text = render_metrics(m.controllers, True, "kube-controller-manager")
    assert '# TYPE skiff_controller_queue_depth gauge' in text
    assert 'skiff_controller_queue_depth{controller="deployment"} 1' in text
    assert 'skiff_controller_syncs_total{controller="deployment"} 3' in text
    assert 'skiff_controller_sync_duration_seconds_sum{controller="deployment"} 0.25' in text
    assert 'leader_election_master_status{name="kube-controller-manager"} 1' in text
    assert text.endswith("\n")


async def http_get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


def test_runs_controllers_without_election_and_serves_metrics() -> None:
    async def main() -> None:
        fake = FakeApi()
        await fake.create(deployment("web", 2))
        m = ControllerManager(fake, ManagerOptions(controllers=("replicaset", "deployment"), leader_elect=False,
                                                   metrics_port=0, workers=2))
        task = asyncio.create_task(m.run())
        try:
            await eventually(lambda: len([k for k in fake._objects if k[0] == "pods"]) == 2, "2 pods")
            assert m.metrics_address is not None
            status, body = await http_get(m.metrics_address[1], "/metrics")
            assert status == "HTTP/1.1 200 OK"
            assert 'skiff_controller_syncs_total{controller="deployment"}' in body
            assert (await http_get(m.metrics_address[1], "/healthz")) == ("HTTP/1.1 200 OK", "ok\n")
            assert (await http_get(m.metrics_address[1], "/nope"))[0] == "HTTP/1.1 404 Not Found"
        finally:
            await stop(task)
        assert m.metrics_address is not None
        with pytest.raises(OSError):
            await http_get(m.metrics_address[1], "/metrics")  # the server went with the manager
    asyncio.run(main())


def test_of_two_managers_only_the_leader_acts_and_the_other_takes_over() -> None:
    async def main() -> None:
        fake = FakeApi()
        opts: Callable[[str], ManagerOptions] = lambda who: ManagerOptions(
            controllers=("replicaset", "deployment"), identity=who, lease_duration=1.5, renew_deadline=1.0,
            retry_period=0.2)
        a, b = ControllerManager(fake, opts("a")), ControllerManager(fake, opts("b"))
        ta = asyncio.create_task(a.run())
        await eventually(lambda: a.leading, "a to lead")
        tb = asyncio.create_task(b.run())
        try:
            await fake.create(deployment("web", 2))
            await eventually(lambda: len([k for k in fake._objects if k[0] == "pods"]) == 2, "2 pods")
            await asyncio.sleep(0.5)
            assert not b.leading and sum(c.metrics.syncs for c in b.controllers) == 0
            await stop(ta)                                 # a releases the lease on the way out
            await eventually(lambda: b.leading, "b to lead", timeout=5)
            lease: Any = fake.stored("leases", "kube-controller-manager", "kube-system")
            assert lease.spec.holder_identity == "b"
            d: Any = fake.stored("deployments", "web", "default")
            d.spec.replicas = 3
            await fake.update(d)
            await eventually(lambda: len([k for k in fake._objects if k[0] == "pods"]) == 3, "3 pods under b")
        finally:
            await stop(ta)
            await stop(tb)
    asyncio.run(main())


def test_losing_the_lease_stops_the_controllers_and_returns_false() -> None:
    async def main() -> None:
        fake = FakeApi()
        m = ControllerManager(fake, ManagerOptions(controllers=("deployment",), identity="a", lease_duration=1.5,
                                                   renew_deadline=1.0, retry_period=0.2))
        task = asyncio.create_task(m.run())
        await eventually(lambda: m.leading, "a to lead")
        lease: Any = fake.stored("leases", "kube-controller-manager", "kube-system")
        lease.spec.holder_identity = "someone-else"
        await fake.update(lease)
        result: Awaitable[bool] = task
        assert await asyncio.wait_for(result, HANG) is False
        assert not m.leading
    asyncio.run(main())
