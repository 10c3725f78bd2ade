"""`skiff bench reconcile`: how fast the cluster reconciles, on hollow nodes (or one real node).

    skiff bench reconcile [--nodes 10] [--pods 100] [--handler fake|runc] [--server HOST:PORT]
                          [--node-grace 20] [--toleration 5] [--lease-interval 4] ...

The cluster: a 3-replica store, `skiff apiserver --no-auth`, `skiff scheduler`, `skiff
controller-manager --node-monitor-grace-period G`, and M hollow nodes (`skiff hollow-nodes`:
real agents, fake runtime) in processes of at most `--nodes-per-process`, plus one process
holding a single node, the one the node-lost scenario freezes. With `--server` the control plane
is taken as running (its controller manager's grace period must be the `--node-grace` given);
only the hollow nodes are started. With `--handler runc` (root) there is one real node instead: a
`skiff runtime` with the runc handler and a `skiff agent`, busybox pods from a local registry.

One watch on the bench namespace follows every pod for the whole run (first seen, Running,
deletion marked, gone). The scenarios, in order, on a Deployment of N pods (no readiness probe,
tolerating the not-ready/unreachable taints for `--toleration` seconds, nodeSelector on the
bench's nodes):

1. startup - create the Deployment; per pod: creation seen by the watch -> Running seen by it
   (also from creationTimestamp, which has 1 s resolution); total: create -> all N Running;
2. scale N -> 0 (per pod: request -> gone) and 0 -> N (per pod: created -> Running; total);
3. rolling update to a new image (maxSurge/maxUnavailable 25%); per new pod created -> Running;
   total: the patch -> N new pods Running and no old pod left;
4. delete a Running pod -> its replacement Running (`--delete-samples` times, one at a time);
5. node lost - SIGSTOP the one-node process: its Lease stops; per replacement pod: the stop ->
   Running elsewhere; total: -> N pods Running again. Expect about grace + toleration + ~2 s.
   The process gets SIGCONT afterwards and the stuck pods finish their deletion.

Each figure is p50/p90/p99/max of the per-pod values and the scenario's total. Results go to
stdout and, as JSON, to --out; the load average before and after goes with them: this machine
runs every process at once and is shared.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from deploy.bench.common import data_root, machine_info
from deploy.bench.loadgen import percentile
from deploy.bench.podstart import ModuleComponent, NodeRig, progress
from deploy.cli.errors import CommandError
from deploy.components import Component

NAMESPACE = "bench-reconcile"
DEPLOYMENT = "bench"
NODE_LABEL = "bench.skiff.io/node"
SCENARIOS = ("startup", "scale", "rolling-update", "delete-pod", "node-lost")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=10, help="hollow nodes M (default 10)")
    p.add_argument("--pods", type=int, default=100, help="the Deployment's replicas N (default 100)")
    p.add_argument("--handler", choices=("fake", "runc"), default="fake",
                   help="fake: M hollow nodes; runc: one real node (root), --nodes ignored")
    p.add_argument("--server", metavar="HOST:PORT", help="use this API server (store, scheduler, controller manager running)")
    p.add_argument("--nodes-per-process", type=int, default=50, help="hollow nodes per process (at most 100; default 50)")
    p.add_argument("--node-grace", type=float, default=20.0, help="controller manager's --node-monitor-grace-period (default 20 s)")
    p.add_argument("--toleration", type=int, default=5, help="pods tolerate unreachable/not-ready this long (default 5 s)")
    p.add_argument("--lease-interval", type=float, default=4.0, help="hollow nodes' Lease renewal period (default 4 s)")
    p.add_argument("--delete-samples", type=int, default=5, help="pods deleted one at a time in scenario 4 (default 5)")
    p.add_argument("--skip", default="", metavar="NAME,...", help=f"scenarios to skip ({', '.join(SCENARIOS)})")
    p.add_argument("--timeout", type=float, default=300.0, help="give up on a scenario after this long (default 300 s)")
    p.add_argument("--data-dir", type=Path, help="keep data here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=Path("bench-reconcile.json"), help="JSON report (default bench-reconcile.json)")


def check_args(args: argparse.Namespace) -> set[str]:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(SCENARIOS):
        raise CommandError(f"--skip: unknown {', '.join(sorted(skip - set(SCENARIOS)))} (known: {', '.join(SCENARIOS)})")
    if args.pods < 1 or args.nodes < 1 or args.delete_samples < 0 or args.toleration < 0:
        raise CommandError("--pods and --nodes must be positive, --delete-samples and --toleration not negative")
    if not 1 <= args.nodes_per_process <= 100:
        raise CommandError("--nodes-per-process must be 1..100")
    if args.lease_interval >= args.node_grace:
        raise CommandError("--lease-interval must be shorter than --node-grace, or every node looks lost")
    if args.handler == "runc" and os.geteuid() != 0:
        raise CommandError("--handler runc needs root (namespaces, overlay mounts, cgroups)")
    if args.handler == "runc" or args.nodes < 2:
        skip.add("node-lost")  # nowhere else for the pods to go
    return skip


def run(args: argparse.Namespace) -> int:
    skip = check_args(args)
    load_before = os.getloadavg()
    report: dict[str, Any] = {"scenarios": {}}
    with data_root(args.data_dir) as root:
        cluster = BenchCluster(args, root)
        try:
            cluster.start()
            report["scenarios"] = asyncio.run(run_scenarios(args, cluster, skip))
            report["cpu_seconds"] = cluster.cpu_seconds()
            print("CPU seconds used, whole run: " + ", ".join(f"{k} {v}" for k, v in report["cpu_seconds"].items()))
        finally:
            cluster.stop()
        report["machine"] = machine_info(load_before, os.getloadavg(), root)
    report["params"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if not k.startswith("_") and k not in ("command", "bench_command")}
    report["skipped"] = sorted(skip)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {args.out}")
    return 0


# --- the cluster ----------------------------------------------------------------------------------


class BenchCluster:
    """What the bench started, stopped by PID in reverse order (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.server: str = args.server or ""
        self.store: Any = None
        self.components: list[Component] = []
        self.lost: Component | None = None  # the one-node process the node-lost scenario freezes
        self.lost_node = ""
        self.rig: NodeRig | None = None
        self.registry: Any = None
        self.image = "bench.invalid/app"
        self.node_count = 1 if args.handler == "runc" else args.nodes

    def start(self) -> None:
        if not self.server:
            self._control_plane()
        if self.args.handler == "runc":
            self._real_node()
        else:
            self._hollow_nodes()

    def _control_plane(self) -> None:
        from deploy.bench.scheduler import SchedulerProcess
        from deploy.components import ApiServerProcess
        from kvstore.localcluster import LocalCluster

        progress("starting a 3-replica store, an API server, the scheduler and the controller manager")
        self.store = LocalCluster(self.root / "store", size=3)
        self.store.start(timeout=60)
        cache = 20 * self.args.pods + 50 * self.node_count + 10_000  # no watch may fall out of it and relist
        api = ApiServerProcess(self.root / "api", self.store.endpoints,
                               extra_args=("--no-auth", "--watch-cache-size", str(cache)))
        self.components.append(api)
        api.start(timeout=60)
        self.server = api.address
        sched = SchedulerProcess(self.root / "scheduler", self.server, ["--bind-concurrency", "64"])
        self.components.append(sched)
        sched.start(timeout=120)
        cm = Component("controller-manager", ["controller-manager", "--server", self.server,
                                              "--node-monitor-grace-period", str(self.args.node_grace)], self.root)
        self.components.append(cm.start())

    def _hollow_nodes(self) -> None:
        per, total = self.args.nodes_per_process, self.node_count
        groups = [(start, min(per, total - 1 - start)) for start in range(0, total - 1, per)] + [(total - 1, 1)]
        progress(f"starting {total} hollow nodes in {len(groups)} processes")
        for start, count in groups:
            c = ModuleComponent(f"hollow-{start}", "deploy.cli.hollow_cmd", [
                "--count", str(count), "--start", str(start), "--prefix", "bench-hollow-", "--server", self.server,
                "--root", str(self.root / "hollow" / str(start)), "--pod-cidr-base", "10.200.0.0/16",
                "--lease-interval", str(self.args.lease_interval), "--node-labels", f"{NODE_LABEL}=yes"], self.root)
            self.components.append(c.start())
        self.lost = self.components[-1]
        self.lost_node = f"bench-hollow-{total - 1}"

    def _real_node(self) -> None:
        from deploy.images import LocalRegistry

        self.registry = LocalRegistry(self.root / "registry").__enter__()
        self.image = self.registry.push_busybox("library/busybox", "v1").rsplit(":", 1)[0]
        self.registry.push_busybox("library/busybox", "v2")
        progress("starting a runtime (runc) and an agent: one real node")
        self.rig = NodeRig(self.root / "node", "runc", 0, self.server, labels=f"{NODE_LABEL}=yes").start()

    def check_alive(self) -> None:
        for c in self.components + (self.rig.components if self.rig else []):
            if not c.alive and c is not self.lost:
                raise RuntimeError(f"{c.name} exited: {c.log_tail()}")

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU seconds each process used so far (the store's replicas summed)."""
        from deploy.bench.common import cpu_seconds, server_pids

        pids = {c.name: [c.pid] for c in self.components + (self.rig.components if self.rig else []) if c.pid}
        pids["store"] = server_pids(self.store)
        pids["bench client"] = [os.getpid()]
        return {name: round(cpu_seconds([p for p in ps if p]) or 0.0, 1) for name, ps in pids.items() if ps}

    def stop(self) -> None:
        if self.lost is not None and self.lost.pid is not None:
            try:
                os.kill(self.lost.pid, signal.SIGCONT)  # a stopped process cannot take SIGTERM
            except ProcessLookupError:
                pass
        if self.rig is not None:
            self.rig.stop()
        for c in reversed(self.components):
            c.stop()
        if self.registry is not None:
            self.registry.__exit__()
        if self.store is not None:
            self.store.stop()


# --- following pods -------------------------------------------------------------------------------


@dataclass
class PodSeen:
    name: str
    first_seen: float               # monotonic: the watch's first event for it
    created_wall: float             # its creationTimestamp (whole seconds)
    template_hash: str
    node: str = ""
    running: float | None = None    # monotonic, first seen Running (every container running)
    running_wall: float | None = None
    deleting: bool = False
    gone: float | None = None

    def startup(self) -> float:
        """Seconds from first seen to Running (call only for a pod that ran)."""
        assert self.running is not None
        return self.running - self.first_seen

    def startup_wall(self) -> float:
        """Seconds from creationTimestamp to Running, on the wall clock."""
        assert self.running_wall is not None
        return self.running_wall - self.created_wall


class PodTracker:
    """One watch on the bench namespace for the whole run; reopened (and relisted) if it ends."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pods: dict[str, PodSeen] = {}
        self.changed = asyncio.Event()

    async def run(self) -> None:
        from controlplane.client.timeutil import parse_time

        while True:
            try:
                async for ev in self.client.watch("pods", NAMESPACE):
                    self._event(ev.type, ev.object, parse_time)
            except Exception as err:  # say so; the relist brings every pod's state back
                progress(f"pod watch ended ({type(err).__name__}: {err}); reopening")
                await asyncio.sleep(0.5)

    def _event(self, kind: str, pod: Any, parse_time: Callable[[str], float]) -> None:
        now = time.monotonic()
        name = pod.metadata.name
        seen = self.pods.get(name)
        if seen is None or (seen.gone is not None and kind != "DELETED"):
            created = parse_time(pod.metadata.creation_timestamp) if pod.metadata.creation_timestamp else time.time()
            seen = self.pods[name] = PodSeen(name, now, created, pod.metadata.labels.get("pod-template-hash", ""))
        seen.node = pod.spec.node_name or seen.node
        seen.deleting = seen.deleting or bool(pod.metadata.deletion_timestamp)
        if kind == "DELETED":
            seen.gone = seen.gone or now
        elif seen.running is None and pod.status.phase == "Running" and len(pod.status.container_statuses) == len(
                pod.spec.containers) and all(s.state.HasField("running") for s in pod.status.container_statuses):
            seen.running, seen.running_wall = now, time.time()
        self.changed.set()

    def alive(self) -> list[PodSeen]:
        return [p for p in self.pods.values() if p.gone is None]

    def serving(self) -> list[PodSeen]:
        """Pods Running and not being deleted."""
        return [p for p in self.alive() if p.running is not None and not p.deleting]

    async def until(self, done: Callable[[], bool], timeout: float, what: str, cluster: BenchCluster) -> float:
        """Wait until done() holds; the monotonic time it was first seen to hold."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not reached in {timeout:.0f}s ({len(self.serving())} pods serving, "
                                   f"{len(self.alive())} alive)")
            cluster.check_alive()
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        return time.monotonic()


def figures(values_s: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values_s)
    return {"n": len(ordered), **{f"p{q}_ms": round(percentile(ordered, q) or 0.0, 1) for q in (50, 90, 99)},
            "max_ms": round(ordered[-1] if ordered else 0.0, 1)}


# --- the scenarios --------------------------------------------------------------------------------


def deployment(args: argparse.Namespace, image: str, replicas: int) -> Any:
    from controlplane.client import codec

    tolerations = [{"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": args.toleration}
                   for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]
    return codec.decode_object({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": DEPLOYMENT}},
                 "template": {"metadata": {"labels": {"app": DEPLOYMENT}},
                              "spec": {"nodeSelector": {NODE_LABEL: "yes"}, "tolerations": tolerations,
                                       "terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                                       "command": ["sleep", "3600"]}]}}}})


async def run_scenarios(args: argparse.Namespace, cluster: BenchCluster, skip: set[str]) -> dict[str, Any]:
    from controlplane.client.api import AlreadyExistsError, ApiClient
    from protos.skiff.api.v1 import core_pb2

    client = ApiClient.connect(cluster.server, timeout=60)
    tracker = PodTracker(client)
    watcher = asyncio.create_task(tracker.run())
    results: dict[str, Any] = {}
    try:
        ns = core_pb2.Namespace()
        ns.metadata.name = NAMESPACE
        try:
            await client.create(ns)
        except AlreadyExistsError:
            pass
        await wait_nodes_ready(client, cluster, args.timeout)
        await asyncio.sleep(0.5)  # the pod watch is open at the server
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("startup", lambda: startup(args, cluster, client, tracker)),
            ("scale", lambda: scale(args, cluster, client, tracker)),
            ("rolling-update", lambda: rolling_update(args, cluster, client, tracker)),
            ("delete-pod", lambda: delete_pods(args, cluster, client, tracker)),
            ("node-lost", lambda: node_lost(args, cluster, client, tracker))]
        for name, step in steps:
            if name in skip and name != "startup":  # startup makes the Deployment the others use
                continue
            progress(f"scenario {name}")
            results[name] = await step()
            print(format_result(name, results[name]), flush=True)
        await client.delete("deployments", DEPLOYMENT, NAMESPACE)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    return results


async def wait_nodes_ready(client: Any, cluster: BenchCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ready = 0
    while time.monotonic() < deadline:
        cluster.check_alive()
        nodes = (await client.list("nodes", label_selector=f"{NODE_LABEL}=yes")).items
        ready = sum(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes)
        if ready >= cluster.node_count:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"only {ready} of {cluster.node_count} nodes Ready after {timeout:.0f}s")


def _started_after(tracker: PodTracker, t0: float) -> list[PodSeen]:
    return [p for p in tracker.pods.values() if p.first_seen >= t0]


async def startup(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    t0 = time.monotonic()
    await client.create(deployment(args, f"{cluster.image}:v1", args.pods), NAMESPACE)
    done = await tracker.until(lambda: len(tracker.serving()) >= args.pods, args.timeout, "startup", cluster)
    new = [p for p in _started_after(tracker, t0) if p.running is not None]
    return {"total_s": round(done - t0, 3), "pod_startup": figures([p.startup() for p in new]),
            "pod_startup_from_creation_timestamp": figures([p.startup_wall() for p in new])}


async def _set_replicas(client: Any, replicas: int) -> None:
    await client.patch("deployments", DEPLOYMENT, {"spec": {"replicas": replicas}}, NAMESPACE)


async def scale(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    before = tracker.alive()
    t0 = time.monotonic()
    await _set_replicas(client, 0)
    down = await tracker.until(lambda: not tracker.alive(), args.timeout, "scale to 0", cluster)
    t1 = time.monotonic()
    await _set_replicas(client, args.pods)
    up = await tracker.until(lambda: len(tracker.serving()) >= args.pods, args.timeout, "scale to N", cluster)
    new = [p for p in _started_after(tracker, t1) if p.running is not None]
    return {"down_total_s": round(down - t0, 3), "down_pod_gone": figures([(p.gone or down) - t0 for p in before]),
            "up_total_s": round(up - t1, 3), "up_pod_startup": figures([p.startup() for p in new])}


async def rolling_update(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    old = {p.template_hash for p in tracker.alive()}
    t0 = time.monotonic()
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": f"{cluster.image}:v2",
                                                            "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}}}}
    await client.patch("deployments", DEPLOYMENT, patch, NAMESPACE)

    def done() -> bool:
        fresh = [p for p in tracker.serving() if p.template_hash not in old]
        return len(fresh) >= args.pods and not any(p.template_hash in old for p in tracker.alive())
    end = await tracker.until(done, args.timeout, "rolling update", cluster)
    new = [p for p in _started_after(tracker, t0) if p.running is not None and p.template_hash not in old]
    return {"total_s": round(end - t0, 3), "new_pod_startup": figures([p.startup() for p in new])}


async def delete_pods(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    waits = []
    for _ in range(args.delete_samples):
        victim = tracker.serving()[0]
        t0 = time.monotonic()
        await client.delete("pods", victim.name, NAMESPACE)
        end = await tracker.until(lambda: len(tracker.serving()) >= args.pods and any(
            p.running is not None for p in _started_after(tracker, t0)), args.timeout, "replacement", cluster)
        waits.append(end - t0)
    return {"replacement_running": figures(waits)}


async def node_lost(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    assert cluster.lost is not None and cluster.lost.pid is not None
    on_lost = [p for p in tracker.serving() if p.node == cluster.lost_node]
    t0 = time.monotonic()
    os.kill(cluster.lost.pid, signal.SIGSTOP)
    try:
        def done() -> bool:
            elsewhere = [p for p in tracker.serving() if p.node != cluster.lost_node]
            return len(elsewhere) >= args.pods
        end = await tracker.until(done, args.timeout + args.node_grace + args.toleration, "replacements", cluster)
    finally:
        os.kill(cluster.lost.pid, signal.SIGCONT)
    new = [p for p in _started_after(tracker, t0) if p.running is not None]
    expected = args.node_grace + args.toleration + 2
    result = {"pods_on_lost_node": len(on_lost), "total_s": round(end - t0, 3),
              "replacement_running_since_lost": figures([p.startup() + p.first_seen - t0 for p in new]),
              "expected_within_s": expected, "within_expectation": end - t0 <= expected}
    await tracker.until(lambda: not any(p.node == cluster.lost_node for p in tracker.alive()), args.timeout,
                        "the lost node's pods finishing deletion after SIGCONT", cluster)
    return result


def format_result(name: str, r: dict[str, Any]) -> str:
    def f(label: str, x: dict[str, float]) -> str:
        return (f"{label} p50 {x['p50_ms']:.0f} / p90 {x['p90_ms']:.0f} / p99 {x['p99_ms']:.0f} / "
                f"max {x['max_ms']:.0f} ms (n={x['n']})")
    if name == "startup":
        return (f"startup: all Running in {r['total_s']:.2f} s; {f('per pod', r['pod_startup'])}; "
                f"{f('from creationTimestamp', r['pod_startup_from_creation_timestamp'])}")
    if name == "scale":
        return (f"scale N->0: all gone in {r['down_total_s']:.2f} s, {f('per pod', r['down_pod_gone'])}; "
                f"0->N: all Running in {r['up_total_s']:.2f} s, {f('per pod', r['up_pod_startup'])}")
    if name == "rolling-update":
        return f"rolling update: done in {r['total_s']:.2f} s; {f('new pods', r['new_pod_startup'])}"
    if name == "delete-pod":
        return f"deleted pod -> replacement Running: {f('', r['replacement_running'])}"
    return (f"node lost ({r['pods_on_lost_node']} pods on it): all replaced and Running in {r['total_s']:.2f} s "
            f"(expected <= {r['expected_within_s']:.0f} s: {'yes' if r['within_expectation'] else 'NO'}); "
            f"{f('per replacement', r['replacement_running_since_lost'])}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skiff bench reconcile", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except CommandError as err:
        print(f"skiff: {err}", file=sys.stderr)
        return err.status


if __name__ == "__main__":
    sys.exit(main())
