"""The controller manager as a real process against a real store and API server on loopback.

Nothing runs pods here, so each test runs a *kubelet simulator* coroutine: it binds every new
pod to node "sim-1", reports it Running and Ready, and finishes the deletion of pods being
deleted (grace period 0), as a node agent would. The `skiff controller-manager` processes run
the replicaset and deployment controllers with short leader-election timings.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest

from controlplane.client.api import ApiClient, ApiStatusError
from controlplane.client.timeutil import format_time
from controlplane.controllers import deployment_util as du
from kvstore.localcluster import free_ports
from protos.skiff.api.v1 import apps_pb2, core_pb2
from tests.apiutil import ApiEnv

HANG = 60.0  # generous: each wait below normally takes a second or two
REPO = Path(__file__).resolve().parents[2]
# Runs the command module directly, so the test does not depend on its registration in main.py.
LAUNCH = ("import argparse, sys\nfrom deploy.cli import controller_manager_cmd as m\n"
          "p = argparse.ArgumentParser(prog='skiff controller-manager'); m.add_arguments(p)\n"
          "sys.exit(m.run(p.parse_args(sys.argv[1:])))")
CLI = ("import sys\nfrom deploy.cli.main import main, COMMANDS\n"
       "import importlib, argparse\n"
       "mods = {'scale': 'deploy.cli.kubectl.scale_cmd', 'rollout': 'deploy.cli.kubectl.rollout_cmd',"
       " 'set': 'deploy.cli.kubectl.set_cmd'}\n"
       "for w, m in mods.items():\n"
       "    if not any(k[0] == w for k in COMMANDS):\n"
       "        COMMANDS[(w,)] = (m, w)\n"
       "sys.exit(main(sys.argv[1:]))")


class Manager:
    """One `skiff controller-manager` process, stopped by PID."""

    def __init__(self, base: Path, server: str, identity: str) -> None:
        self.identity = identity
        self.port = free_ports(1)[0]
        self.log_path = base / f"cm-{identity}.log"
        args = ["--server", server, "--controllers", "replicaset,deployment", "--identity", identity,
                "--leader-elect-lease-duration", "3", "--leader-elect-renew-deadline", "2",
                "--leader-elect-retry-period", "0.5", "--metrics-port", str(self.port), "--resync-period", "30"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], stdout=log, stderr=subprocess.STDOUT,
                                         cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def metrics(self) -> dict[str, float]:
        """Metric line -> value ('' when the endpoint does not answer yet)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def leading(self) -> bool:
        return self.metrics().get('leader_election_master_status{name="kube-controller-manager"}') == 1.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    e = ApiEnv(tmp_path_factory.mktemp("controllers-live"), "skiff")
    e.start()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def manager(env: ApiEnv) -> Iterator[Manager]:
    m = Manager(env.base, env.address, "cm-a")
    deadline = time.monotonic() + HANG
    while not m.leading():
        assert m.proc.poll() is None, m.log()
        assert time.monotonic() < deadline, "the controller manager never led:\n" + m.log()
        time.sleep(0.2)
    yield m
    m.stop()


def skiff(env: ApiEnv, *args: str, timeout: float = HANG) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args, "--server", env.address], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


# ---- the kubelet simulator --------------------------------------------------------------------

async def kubelet(client: ApiClient, namespace: str) -> None:
    """Bind, start and make Ready every pod; finish deletions. Runs until cancelled."""
    while True:
        try:
            async for ev in client.watch("pods", namespace):
                if ev.type in ("ADDED", "MODIFIED"):
                    await _tend(client, ev.object)  # type: ignore[arg-type]
        except ApiStatusError:
            await asyncio.sleep(0.1)


async def _tend(client: ApiClient, pod: core_pb2.Pod) -> None:
    m = pod.metadata
    try:
        if m.deletion_timestamp:
            await client.delete("pods", m.name, m.namespace, grace_period_seconds=0)
            return
        if not pod.spec.node_name:
            pod = await client.bind(m.namespace, m.name, "sim-1")  # type: ignore[assignment]
        if pod.status.phase != "Running":
            pod.status.phase = "Running"
            pod.status.pod_ip = "10.244.0.10"
            now = format_time(time.time())
            pod.status.conditions.add(type="Ready", status="True", last_transition_time=now)
            await client.update_status(pod)
    except ApiStatusError:
        pass  # changed or gone meanwhile: the next event brings it back


def live(env: ApiEnv, namespace: str, body: Callable[[ApiClient], Awaitable[None]]) -> None:
    async def main(client: ApiClient) -> None:
        ns = core_pb2.Namespace()
        ns.metadata.name = namespace
        await client.create(ns)
        sim = asyncio.create_task(kubelet(client, namespace))
        try:
            await body(client)
        finally:
            sim.cancel()
            await asyncio.gather(sim, return_exceptions=True)
    env.run(main)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def deployment(name: str, namespace: str, replicas: int, image: str = "busybox:1.36", surge: int = 1,
               unavailable: int = 1) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name, d.metadata.namespace = name, namespace
    d.spec.replicas = replicas
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    d.spec.template.spec.containers.add(name="app", image=image)
    d.spec.strategy.type = "RollingUpdate"
    d.spec.strategy.rolling_update.max_surge.int_val = surge
    d.spec.strategy.rolling_update.max_unavailable.int_val = unavailable
    return d


async def running_pods(client: ApiClient, namespace: str) -> list[Any]:
    pods = (await client.list("pods", namespace)).items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]  # type: ignore[attr-defined]


async def rolled_out(client: ApiClient, namespace: str, name: str, replicas: int) -> bool:
    d: Any = await client.get("deployments", name, namespace)
    done = du.rollout_status_message(d)[1]
    return done and d.spec.replicas == replicas and len(await running_pods(client, namespace)) == replicas


# ---- tests ------------------------------------------------------------------------------------

def test_deployment_makes_a_replica_set_and_pods_and_scales(env: ApiEnv, manager: Manager) -> None:
    ns = "live-scale"

    async def body(client: ApiClient) -> None:
        await client.create(deployment("web", ns, 3))
        await eventually(lambda: rolled_out(client, ns, "web", 3), "3 pods of web")
        rss = (await client.list("replicasets", ns)).items
        assert len(rss) == 1 and rss[0].metadata.name.startswith("web-")  # type: ignore[attr-defined]
        out = await asyncio.to_thread(skiff, env, "scale", "deploy/web", "--replicas=5", "-n", ns)
        assert out.returncode == 0 and out.stdout.strip() == "deployment.apps/web scaled", out.stderr
        await eventually(lambda: rolled_out(client, ns, "web", 5), "5 pods of web")
        out = await asyncio.to_thread(skiff, env, "scale", "deploy/web", "--replicas=2", "-n", ns)
        assert out.returncode == 0, out.stderr
        await eventually(lambda: rolled_out(client, ns, "web", 2), "2 pods of web")
        assert len((await client.list("replicasets", ns)).items) == 1
    live(env, ns, body)


def test_a_deleted_pod_is_replaced(env: ApiEnv, manager: Manager) -> None:
    ns = "live-replace"

    async def body(client: ApiClient) -> None:
        await client.create(deployment("web", ns, 2))
        await eventually(lambda: rolled_out(client, ns, "web", 2), "2 pods")
        victim = (await running_pods(client, ns))[0].metadata.name
        await client.delete("pods", victim, ns)

        async def replaced() -> bool:
            pods = await running_pods(client, ns)
            return len(pods) == 2 and victim not in {p.metadata.name for p in pods}
        await eventually(replaced, "a replacement pod")
    live(env, ns, body)


class Bounds:
    """Pods seen by watch; on every event: non-terminating pods <= max, ready ones >= min."""

    def __init__(self, max_pods: int, min_ready: int) -> None:
        self.max_pods, self.min_ready = max_pods, min_ready
        self.pods: dict[str, Any] = {}
        self.events = 0
        self.violations: list[str] = []
        self.peak = 0
        self.trough = 10**9

    def apply(self, kind: str, pod: Any) -> None:
        if kind == "DELETED":
            self.pods.pop(pod.metadata.name, None)
        elif kind in ("ADDED", "MODIFIED"):
            self.pods[pod.metadata.name] = pod
        else:
            return
        self.events += 1
        live = [p for p in self.pods.values() if not p.metadata.deletion_timestamp]
        ready = [p for p in live if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)]
        self.peak, self.trough = max(self.peak, len(live)), min(self.trough, len(ready))
        if len(live) > self.max_pods or len(ready) < self.min_ready:
            self.violations.append(f"rv {pod.metadata.resource_version}: {len(live)} pods, {len(ready)} ready")


def test_rolling_update_stays_in_bounds_then_rollout_undo(env: ApiEnv, manager: Manager) -> None:
    ns = "live-roll"
    replicas, surge, unavailable = 4, 1, 1

    async def body(client: ApiClient) -> None:
        await client.create(deployment("web", ns, replicas, surge=surge, unavailable=unavailable))
        await eventually(lambda: rolled_out(client, ns, "web", replicas), "the first rollout")
        bounds = Bounds(replicas + surge, replicas - unavailable)
        listed = await client.list("pods", ns)
        bounds.pods = {p.metadata.name: p for p in listed.items}  # type: ignore[attr-defined]

        async def watch() -> None:
            async for ev in client.watch("pods", ns, resource_version=listed.resource_version):
                bounds.apply(ev.type, ev.object)
        watcher = asyncio.create_task(watch())
        try:
            out = await asyncio.to_thread(skiff, env, "set", "image", "deploy/web", "app=busybox:2", "-n", ns)
            assert out.returncode == 0 and "image updated" in out.stdout, out.stderr + out.stdout
            status = await asyncio.to_thread(skiff, env, "rollout", "status", "deploy/web", "-n", ns,
                                             "--timeout", str(HANG))
            assert status.returncode == 0, status.stderr
            assert status.stdout.strip().splitlines()[-1] == 'deployment "web" successfully rolled out'
            await eventually(lambda: rolled_out(client, ns, "web", replicas), "the update")
            assert {p.spec.containers[0].image for p in await running_pods(client, ns)} == {"busybox:2"}
            history = await asyncio.to_thread(skiff, env, "rollout", "history", "deploy/web", "-n", ns)
            assert [line.split()[0] for line in history.stdout.splitlines()[2:] if line.strip()] == ["1", "2"], \
                history.stdout + history.stderr
            undo = await asyncio.to_thread(skiff, env, "rollout", "undo", "deploy/web", "-n", ns)
            assert undo.returncode == 0 and undo.stdout.strip() == "deployment.apps/web rolled back", undo.stderr

            async def back() -> bool:
                pods = await running_pods(client, ns)
                return (await rolled_out(client, ns, "web", replicas)
                        and {p.spec.containers[0].image for p in pods} == {"busybox:1.36"})
            await eventually(back, "the rollback")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert bounds.violations == [], bounds.violations[:5]
        assert bounds.peak == replicas + surge or bounds.peak == replicas  # surge was used (or not needed)
        assert bounds.events > 10
        rss = (await client.list("replicasets", ns)).items
        assert len(rss) == 2                      # the rollback reused revision 1's ReplicaSet
        d: Any = await client.get("deployments", "web", ns)
        assert d.metadata.annotations[du.REVISION] == "3"
    live(env, ns, body)


def test_unknown_deployment_in_cli_is_one_line(env: ApiEnv, manager: Manager) -> None:
    out = skiff(env, "rollout", "status", "deploy/nope", "--timeout", "5")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "not found" in out.stderr, out.stderr


def test_two_managers_only_the_leader_acts_and_a_standby_takes_over(env: ApiEnv, manager: Manager) -> None:
    ns = "live-leader"
    standby = Manager(env.base, env.address, "cm-b")
    try:
        async def body(client: ApiClient) -> None:
            await eventually(lambda: asyncio.to_thread(lambda: bool(standby.metrics())), "the standby's metrics")
            lease: Any = await client.get("leases", "kube-controller-manager", "kube-system")
            assert lease.spec.holder_identity == "cm-a"
            await client.create(deployment("web", ns, 2))
            await eventually(lambda: rolled_out(client, ns, "web", 2), "2 pods")
            m = standby.metrics()
            assert m['leader_election_master_status{name="kube-controller-manager"}'] == 0.0
            assert m['skiff_controller_syncs_total{controller="deployment"}'] == 0.0   # it never acted
            assert manager.metrics()['skiff_controller_syncs_total{controller="deployment"}'] > 0
            manager.stop()                         # SIGTERM: the lease is released on the way out
            await eventually(lambda: asyncio.to_thread(standby.leading), "the standby to lead", timeout=20)
            lease = await client.get("leases", "kube-controller-manager", "kube-system")
            assert lease.spec.holder_identity == "cm-b"
            out = await asyncio.to_thread(skiff, env, "scale", "deploy/web", "--replicas=3", "-n", ns)
            assert out.returncode == 0, out.stderr
            await eventually(lambda: rolled_out(client, ns, "web", 3), "3 pods under the new leader")
        live(env, ns, body)
    finally:
        standby.stop()
    assert manager.proc.returncode == 0, manager.log()
