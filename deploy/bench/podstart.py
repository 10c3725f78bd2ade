"""`skiff bench pod-start`: how long a node takes to run a pod bound to it, per runtime handler.

    skiff bench pod-start [--handlers runc,process,fake] [--pods 1,20] [--rounds 5] [--out FILE]

Setup, once: a 3-replica store, `skiff apiserver --no-auth`, a local `docker-registry` serving a
busybox image built offline (deploy/images.py). Then per handler, in turn: a `skiff runtime`
with only that handler (as root with a pod network: a bridge in a network namespace of its own
and a cgroup root of its own) and a `skiff agent` for the node `bench-<handler>`; the image is
pulled through CRI before the clock runs (Kubernetes' pod startup SLO excludes image pulls too).

Per batch size K (`--pods`) and round (`--rounds`): a watch on the namespace is open; K pods
(one busybox container, `sleep 3600`, nodeName set: no scheduler) are created at once; a pod's
latency runs from its create being sent to the watch showing it Running with every container
running. Then the pods are deleted (grace 1 s) and the round ends when the watch shows them gone.
Figures per handler and K: p50, p99 and max over every pod of every round.

runc and process need root (namespaces, overlay mounts, cgroups): without root they are skipped
with a line saying so. Everything shares this machine; the load average goes in the report.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.bench.common import data_root, ensure_namespace, machine_info
from deploy.bench.loadgen import percentile
from deploy.cli.errors import CommandError
from deploy.components import Component

NAMESPACE = "bench-podstart"
HANDLERS = ("runc", "process", "fake")
NEEDS_ROOT = ("runc", "process")


class ModuleComponent(Component):
    """A skiff daemon run as `python -m <module> ...` (works before `skiff <cmd>` is registered)."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: Path) -> None:
        super().__init__(name, args, log_dir)
        self.module = module

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


def progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--handlers", default=",".join(HANDLERS), help="runtime handlers to measure (default runc,process,fake)")
    p.add_argument("--pods", default="1,20", help="pods created at once, per batch (default 1,20)")
    p.add_argument("--rounds", type=int, default=5, help="batches of each size (default 5)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up on a batch after this long (default 120 s)")
    p.add_argument("--data-dir", type=Path, help="keep data here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=Path("bench-pod-start.json"), help="JSON report (default bench-pod-start.json)")


def parse_list(text: str, flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise CommandError(f"{flag} {text!r}: give a comma-separated list")
    return items


def run(args: argparse.Namespace) -> int:
    handlers = parse_list(args.handlers, "--handlers")
    unknown = [h for h in handlers if h not in HANDLERS]
    if unknown:
        raise CommandError(f"--handlers: unknown {', '.join(unknown)} (choose from {', '.join(HANDLERS)})")
    try:
        sizes = [int(x) for x in parse_list(args.pods, "--pods")]
    except ValueError:
        raise CommandError(f"--pods {args.pods!r}: want numbers, e.g. 1,20") from None
    if min(sizes) < 1 or args.rounds < 1:
        raise CommandError("--pods and --rounds must be positive")
    from deploy.images import LocalRegistry
    if not LocalRegistry.available():
        raise CommandError("needs docker-registry to serve the image: apt-get install docker-registry")
    load_before = os.getloadavg()
    report: dict[str, Any] = {"handlers": {}, "skipped": {}}
    with data_root(args.data_dir) as root:
        _run_all(args, root, handlers, sizes, report)
        report["machine"] = machine_info(load_before, os.getloadavg(), root)
    report["params"] = {"handlers": handlers, "pods": sizes, "rounds": args.rounds}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {args.out}")
    return 0


def _run_all(args: argparse.Namespace, root: Path, handlers: list[str], sizes: list[int],
             report: dict[str, Any]) -> None:
    from deploy.components import ApiServerProcess
    from deploy.images import LocalRegistry
    from kvstore.localcluster import LocalCluster

    progress("starting a 3-replica store, an API server and a local registry")
    store = LocalCluster(root / "store", size=3)
    store.start(timeout=60)
    api = ApiServerProcess(root / "api", store.endpoints, extra_args=("--no-auth",))
    try:
        api.start(timeout=60)
        with LocalRegistry(root / "registry") as registry:
            image = registry.push_busybox()
            for index, handler in enumerate(handlers):
                if handler in NEEDS_ROOT and os.geteuid() != 0:
                    line = f"{handler}: skipped: needs root (namespaces, overlay mounts, cgroups)"
                    print(line, flush=True)
                    report["skipped"][handler] = line
                    continue
                result = _one_handler(args, root / handler, api.address, image, handler, index, sizes)
                report["handlers"][handler] = result
                print(format_handler(handler, result), flush=True)
    finally:
        api.stop()
        store.stop()


def format_handler(handler: str, result: dict[str, Any]) -> str:
    parts = []
    for size, r in result.items():
        parts.append(f"{size} pod{'s' if int(size) > 1 else ''} at once: p50 {r['p50_ms']:.0f} ms, "
                     f"p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms (n={r['n']}"
                     + (f", {r['not_running']} never Running" if r["not_running"] else "") + ")")
    return f"{handler}: bound -> Running seen by watch: " + "; ".join(parts)


# --- one node: a runtime with one handler, and an agent -------------------------------------------


@dataclass
class NodeRig:
    """A `skiff runtime` and a `skiff agent` for one node; as root, with a pod network and a
    cgroup root of its own, all removed by `stop`."""
    base: Path
    handler: str
    index: int
    server: str
    labels: str = ""               # extra node labels, k=v,...
    node: str = ""
    socket_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="skiff-ps-", dir="/tmp")))
    components: list[Component] = field(default_factory=list)
    netns: Path | None = None
    pod_cidr: str = ""
    cgroup_root: str = ""

    @property
    def socket(self) -> Path:
        return self.socket_dir / "runtime.sock"

    def start(self) -> NodeRig:
        from kvstore.localcluster import free_ports

        self.node = f"bench-{self.handler}"
        self.pod_cidr = f"10.246.{self.index}.0/24"
        rt_args = ["--socket", str(self.socket), "--root", str(self.base / "runtime"), "--handlers", self.handler]
        if os.geteuid() == 0:
            self.netns = self.base / "hostns"
            self.netns.parent.mkdir(parents=True, exist_ok=True)
            self.netns.touch()
            subprocess.run(["unshare", f"--net={self.netns}", "true"], check=True)
            self.cgroup_root = f"/skiff-bench-{secrets.token_hex(4)}"
            rt_args += ["--pod-cidr", self.pod_cidr, "--host-netns", str(self.netns), "--bridge", f"skiffps{self.index}",
                        "--cgroup-root", self.cgroup_root]
        runtime = ModuleComponent(f"runtime-{self.handler}", "deploy.cli.runtime_cmd", rt_args, self.base)
        self.components.append(runtime.start())
        agent = ModuleComponent(f"agent-{self.handler}", "deploy.cli.agent_cmd", [
            "--node-name", self.node, "--server", self.server, "--runtime-endpoint", f"unix://{self.socket}",
            "--root", str(self.base / "agent"), "--node-ip", "127.0.0.1", "--pod-cidr", self.pod_cidr,
            "--lease-interval", "2", "--status-interval", "2",
            "--listen-node-service", f"127.0.0.1:{free_ports(1)[0]}"]
            + (["--node-labels", self.labels] if self.labels else []), self.base)
        self.components.append(agent.start())
        return self

    def check_alive(self) -> None:
        for c in self.components:
            if not c.alive:
                raise RuntimeError(f"{c.name} exited: {c.log_tail()}")

    def stop(self) -> None:
        for c in reversed(self.components):
            c.stop()
        if self.netns is not None:
            self._teardown_root()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _teardown_root(self) -> None:
        from node.network.bridge import BridgeConfig, BridgeNetwork, teardown_host
        from node.runtime.cgroups import Cgroups
        from node.runtime.server import make_handlers

        assert self.netns is not None
        config = BridgeConfig(pod_cidr=self.pod_cidr, state_dir=self.base / "runtime" / "network",
                              host_netns=str(self.netns), bridge=f"skiffps{self.index}")
        try:  # what a crash or a slow deletion left behind, through the handler's own code
            for handler in make_handlers(self.base / "runtime", [self.handler], BridgeNetwork(config), self.cgroup_root):
                for sandbox in handler.list_sandboxes():
                    handler.remove_sandbox(sandbox.id)
        finally:
            teardown_host(config)
            Cgroups().remove(self.cgroup_root)
            subprocess.run(["umount", str(self.netns)], check=False, capture_output=True)
            self.netns.unlink(missing_ok=True)


def _one_handler(args: argparse.Namespace, base: Path, server: str, image: str, handler: str, index: int,
                 sizes: list[int]) -> dict[str, Any]:
    progress(f"{handler}: starting a runtime (handler {handler}) and an agent")
    rig = NodeRig(base, handler, index, server).start()
    try:
        return asyncio.run(_measure_node(args, rig, image, sizes))
    finally:
        rig.stop()


async def _measure_node(args: argparse.Namespace, rig: NodeRig, image: str, sizes: list[int]) -> dict[str, Any]:
    from controlplane.client.api import ApiClient
    from node.runtime.client import CRIClient
    from protos.cri.runtime.v1 import api_pb2 as cri

    client = ApiClient.connect(rig.server, timeout=60)
    try:
        await ensure_namespace(client, NAMESPACE)
        await _wait_node_ready(client, rig, 60)
        async with CRIClient.connect(f"unix://{rig.socket}") as runtime:  # pre-pull: not part of the clock
            await runtime.images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=image)), timeout=300)
        out: dict[str, Any] = {}
        for size in sizes:
            latencies: list[float] = []
            missing = 0
            for r in range(args.rounds):
                got, lost = await _batch(client, rig, image, size, f"{rig.handler}-{size}-{r}", args.timeout)
                latencies += got
                missing += lost
            latencies.sort()
            out[str(size)] = {"n": len(latencies), "not_running": missing,
                              "p50_ms": round(percentile(latencies, 50) or 0.0, 1),
                              "p99_ms": round(percentile(latencies, 99) or 0.0, 1),
                              "max_ms": round(latencies[-1] if latencies else 0.0, 1)}
        return out
    finally:
        await client.close()


async def _wait_node_ready(client: Any, rig: NodeRig, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rig.check_alive()
        try:
            node = await client.get("nodes", rig.node)
            if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions):
                return
        except Exception:  # not registered yet
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"node {rig.node} not Ready after {timeout:.0f}s: {rig.components[-1].log_tail()}")


def bench_pod(name: str, node: str, image: str) -> Any:
    from protos.skiff.api.v1 import core_pb2

    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name, pod.metadata.namespace = name, NAMESPACE
    pod.metadata.labels["bench"] = "pod-start"
    pod.spec.node_name = node
    pod.spec.termination_grace_period_seconds = 1
    pod.spec.containers.add(name="c", image=image, command=["sleep", "3600"], image_pull_policy="IfNotPresent")
    return pod


def is_running(pod: Any) -> bool:
    statuses = pod.status.container_statuses
    return (pod.status.phase == "Running" and len(statuses) == len(pod.spec.containers)
            and all(s.state.HasField("running") for s in statuses))


async def _batch(client: Any, rig: NodeRig, image: str, size: int, tag: str, timeout: float) -> tuple[list[float], int]:
    """Create `size` pods at once; (their latencies in ms, how many never ran). Deletes them after."""
    names = [f"ps-{tag}-{i}" for i in range(size)]
    sent: dict[str, float] = {}
    running: dict[str, float] = {}
    gone: set[str] = set()
    wanted = set(names)
    changed = asyncio.Event()

    async def watch() -> None:
        async for ev in client.watch("pods", NAMESPACE, label_selector="bench=pod-start"):
            name = ev.object.metadata.name
            if name not in wanted:
                continue
            if ev.type == "DELETED":
                gone.add(name)
            elif name not in running and is_running(ev.object):
                running[name] = time.monotonic()
            changed.set()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0.3)  # the watch is open at the server before the first create

        async def create(name: str) -> None:
            sent[name] = time.monotonic()
            await client.create(bench_pod(name, rig.node, image), NAMESPACE)
        await asyncio.gather(*(create(n) for n in names))
        await _until(lambda: len(running) == size, changed, timeout, rig)
        await asyncio.gather(*(client.delete("pods", n, NAMESPACE, grace_period_seconds=1) for n in names))
        await _until(lambda: gone >= wanted, changed, timeout, rig)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return [(running[n] - sent[n]) * 1000 for n in names if n in running], size - len(running)


async def _until(done: Any, changed: asyncio.Event, timeout: float, rig: NodeRig) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        rig.check_alive()
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":  # `python -m deploy.bench.podstart ...` is `skiff bench ...`
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.bench.podstart"))
