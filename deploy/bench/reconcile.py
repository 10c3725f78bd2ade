"""`skiff bench reconcile`: how fast the cluster reconciles, on hollow nodes (or one real node).

    skiff bench reconcile [--nodes 10] [--pods 100] [--handler fake|runc] [--server HOST:PORT]
                          [--node-grace 20] [--toleration 5] [--lease-interval 4]
                          [--cm-lease-duration 8] [--out FILE] [--out-dir DIR] ...

The cluster (deploy/bench/reconcile_cluster.py): a 3-replica store, an API server, the
scheduler, one controller manager (two, leader-elected, for cm-failover) and M hollow nodes, the
last of them alone in a process that the node-lost scenario freezes; with `--server` only the
hollow nodes (cm-failover is skipped); with `--handler runc` one real node.

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
6. cm-failover - SIGKILL the controller manager that holds the Lease (no release: the standby
   must wait the lease out, `--cm-lease-duration`; renew deadline 3/4 and retry period 1/8 of
   it), then at once scale N -> N + max(1, N/10); per new pod: the kill -> Running; total: the
   kill -> all Running; also the kill -> the Lease read (polled every 0.1 s) naming the standby.
   The standby lists every object afresh when it starts leading; that is part of the figure.

Each figure is p50/p90/p99/max of the per-pod values and the scenario's total. Results go to
stdout (a line per scenario, then a table), as JSON to --out (with the raw samples and the
Running-pods timeline, `raw`: see reconcile_report), and as two PNG plots into --out-dir (default:
the JSON's directory); the load average before and after goes with them: this machine runs every
process at once and is shared.

The pod watch also counts the pods Running (and not being deleted) after every change it sees,
incrementally (a count per event, not a scan: N=1,000 sees thousands of events).
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
from typing import Any, Awaitable, Callable

from deploy.bench.common import data_root, ensure_namespace, machine_info
from deploy.bench.podstart import progress
from deploy.bench.reconcile_cluster import NODE_LABEL, BenchCluster
from deploy.bench.reconcile_report import figures, format_result, series, summary_table, write_plots
from deploy.cli.errors import CommandError

NAMESPACE = "bench-reconcile"
DEPLOYMENT = "bench"
SCENARIOS = ("startup", "scale", "rolling-update", "delete-pod", "node-lost", "cm-failover")
LEASE = ("kube-system", "kube-controller-manager")  # the controller managers' leader election
SERIES = "_series"  # a scenario's raw samples ride in its result under this key, removed before printing


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
    p.add_argument("--cm-lease-duration", type=float, default=8.0,
                   help="the controller managers' leader-election lease in cm-failover (default 8 s)")
    p.add_argument("--delete-samples", type=int, default=5, help="pods deleted one at a time in scenario 4 (default 5)")
    p.add_argument("--skip", default="", metavar="NAME,...", help=f"scenarios to skip ({', '.join(SCENARIOS)})")
    p.add_argument("--timeout", type=float, default=300.0, help="give up on a scenario after this long (default 300 s)")
    p.add_argument("--data-dir", type=Path, help="keep data here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=Path("bench-reconcile.json"), help="JSON report (default bench-reconcile.json)")
    p.add_argument("--out-dir", type=Path, help="where the PNG plots go (default: the JSON's directory)")


def check_args(args: argparse.Namespace) -> set[str]:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(SCENARIOS):
        raise CommandError(f"--skip: unknown {', '.join(sorted(skip - set(SCENARIOS)))} (known: {', '.join(SCENARIOS)})")
    if args.pods < 1 or args.nodes < 1 or args.delete_samples < 0 or args.toleration < 0:
        raise CommandError("--pods and --nodes must be positive, --delete-samples and --toleration not negative")
    if not 1 <= args.nodes_per_process <= 100:
        raise CommandError("--nodes-per-process must be 1..100")
    if args.cm_lease_duration < 1:
        raise CommandError("--cm-lease-duration must be at least 1 s (the Lease holds whole seconds)")
    if args.lease_interval >= args.node_grace:
        raise CommandError("--lease-interval must be shorter than --node-grace, or every node looks lost")
    if args.handler == "runc" and os.geteuid() != 0:
        raise CommandError("--handler runc needs root (namespaces, overlay mounts, cgroups)")
    if args.handler == "runc" or args.nodes < 2:
        skip.add("node-lost")  # nowhere else for the pods to go
    if args.server:
        skip.add("cm-failover")  # the controller managers are not the bench's to kill
    return skip


def run(args: argparse.Namespace) -> int:
    skip = check_args(args)
    load_before = os.getloadavg()
    report: dict[str, Any] = {"scenarios": {}}
    with data_root(args.data_dir) as root:
        cluster = BenchCluster(args, root, standby="cm-failover" not in skip)
        try:
            cluster.start()
            report["scenarios"], report["raw"] = asyncio.run(run_scenarios(args, cluster, skip))
            print(summary_table(report["raw"]["series"]))
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
    plots = write_plots(report["raw"], args.out_dir or args.out.parent,
                        f"N={args.pods} on M={cluster.node_count} ({args.handler})")
    for line in ([f"plot written to {p}" for p in plots] if isinstance(plots, list) else [plots]):
        print(line)
    return 0


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

    @property
    def serving(self) -> bool:
        """Running and neither being deleted nor gone."""
        return self.gone is None and self.running is not None and not self.deleting

    def startup(self) -> float:
        """Seconds from first seen to Running (call only for a pod that ran)."""
        assert self.running is not None
        return self.running - self.first_seen

    def startup_wall(self) -> float:
        """Seconds from creationTimestamp to Running, on the wall clock."""
        assert self.running_wall is not None
        return self.running_wall - self.created_wall


class PodTracker:
    """One watch on the bench namespace for the whole run; reopened (and relisted) if it ends.

    `running` is [(monotonic, count of serving pods)] after every change of that count.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pods: dict[str, PodSeen] = {}
        self.changed = asyncio.Event()
        self.origin = time.monotonic()
        self.serving_count = 0
        self.running: list[tuple[float, int]] = []

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
        was_serving = seen is not None and seen.serving
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
        if seen.serving != was_serving:  # a replaced (gone) PodSeen was not serving
            self.serving_count += 1 if seen.serving else -1
            self.running.append((now, self.serving_count))
        self.changed.set()

    def alive(self) -> list[PodSeen]:
        return [p for p in self.pods.values() if p.gone is None]

    def serving(self) -> list[PodSeen]:
        """Pods Running and not being deleted."""
        return [p for p in self.pods.values() if p.serving]

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


Scenario = Callable[[argparse.Namespace, "BenchCluster", Any, PodTracker], Awaitable[dict[str, Any]]]


async def run_scenarios(args: argparse.Namespace, cluster: BenchCluster,
                        skip: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the scenarios not skipped, in order: their results, and the raw record (reconcile_report)."""
    from controlplane.client.api import ApiClient

    client = ApiClient.connect(cluster.server, timeout=60)
    tracker = PodTracker(client)
    watcher = asyncio.create_task(tracker.run())
    results: dict[str, Any] = {}
    raw: dict[str, Any] = {"series": [], "phases": [], "running": []}

    def since(t: float) -> float:
        return round(t - tracker.origin, 3)
    try:
        await ensure_namespace(client, NAMESPACE)
        await wait_nodes_ready(client, cluster, args.timeout)
        await asyncio.sleep(0.5)  # the pod watch is open at the server
        steps: list[tuple[str, Scenario]] = [("startup", startup), ("scale", scale), ("rolling-update", rolling_update),
                                             ("delete-pod", delete_pods), ("node-lost", node_lost),
                                             ("cm-failover", cm_failover)]
        for name, step in steps:
            if name in skip and name != "startup":  # startup makes the Deployment the others use
                continue
            progress(f"scenario {name}")
            began = time.monotonic()
            results[name] = await step(args, cluster, client, tracker)
            raw["series"] += results[name].pop(SERIES)
            raw["phases"].append({"name": name, "start_s": since(began), "end_s": since(time.monotonic())})
            print(format_result(name, results[name]), flush=True)
        await client.delete("deployments", DEPLOYMENT, NAMESPACE)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await client.close()
    raw["running"] = [[since(t), n] for t, n in tracker.running]
    return results, raw


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
    values = [p.startup() for p in new]
    return {"total_s": round(done - t0, 3), "pod_startup": figures(values),
            "pod_startup_from_creation_timestamp": figures([p.startup_wall() for p in new]),
            SERIES: [series("startup", "startup: created -> Running", values, done - t0)]}


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
    gone, started = [(p.gone or down) - t0 for p in before], [p.startup() for p in new]
    return {"down_total_s": round(down - t0, 3), "down_pod_gone": figures(gone),
            "up_total_s": round(up - t1, 3), "up_pod_startup": figures(started),
            SERIES: [series("scale", "scale N->0: request -> gone", gone, down - t0),
                     series("scale", "scale 0->N: created -> Running", started, up - t1)]}


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
    values = [p.startup() for p in new]
    return {"total_s": round(end - t0, 3), "new_pod_startup": figures(values),
            SERIES: [series("rolling-update", "rolling update: new pod created -> Running", values, end - t0)]}


async def delete_pods(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    waits = []
    for _ in range(args.delete_samples):
        victim = tracker.serving()[0]
        t0 = time.monotonic()
        await client.delete("pods", victim.name, NAMESPACE)
        end = await tracker.until(lambda: len(tracker.serving()) >= args.pods and any(
            p.running is not None for p in _started_after(tracker, t0)), args.timeout, "replacement", cluster)
        waits.append(end - t0)
    return {"replacement_running": figures(waits),
            SERIES: [series("delete-pod", "delete pod -> replacement Running", waits)]}


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
    since = [p.startup() + p.first_seen - t0 for p in new]
    result = {"pods_on_lost_node": len(on_lost), "total_s": round(end - t0, 3),
              "replacement_running_since_lost": figures(since),
              "expected_within_s": expected, "within_expectation": end - t0 <= expected,
              SERIES: [series("node-lost", "node lost -> replacement Running", since, end - t0)]}
    await tracker.until(lambda: not any(p.node == cluster.lost_node for p in tracker.alive()), args.timeout,
                        "the lost node's pods finishing deletion after SIGCONT", cluster)
    return result


async def lease_holder(client: Any, wanted: Callable[[str], bool], timeout: float) -> tuple[str, float]:
    """Poll the controller managers' Lease until its holder satisfies `wanted`: (holder, when seen).

    Polled every 0.1 s rather than watched: one object, and a poll cannot miss the moment by
    more than that. A missing Lease counts as no holder.
    """
    from controlplane.client.api import NotFoundError

    deadline = time.monotonic() + timeout
    while True:
        try:
            spec = (await client.get("leases", LEASE[1], LEASE[0])).spec
            holder = spec.holder_identity if spec.HasField("holder_identity") else ""
        except NotFoundError:
            holder = ""
        if wanted(holder):
            return holder, time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Lease {LEASE[0]}/{LEASE[1]} is held by {holder or 'nobody'} "
                               f"after {timeout:.0f}s; waited for one of the bench's controller managers")
        await asyncio.sleep(0.1)


async def cm_failover(args: argparse.Namespace, cluster: BenchCluster, client: Any, tracker: PodTracker) -> dict[str, Any]:
    active, _ = await lease_holder(client, lambda h: h in cluster.managers, args.timeout)
    victim = cluster.managers[active]
    before = len(tracker.serving())
    target = args.pods + max(1, args.pods // 10)
    t0 = time.monotonic()
    # SIGKILL, not SIGTERM: a killed leader cannot release the Lease, so the standby must wait it
    # out - the case that matters. The scale is sent at once, while nobody leads.
    cluster.kill(victim)
    await _set_replicas(client, target)
    handover = asyncio.create_task(lease_holder(client, lambda h: h in cluster.managers and h != active,
                                                args.timeout))
    try:
        end = await tracker.until(lambda: tracker.serving_count >= target, args.timeout,
                                  "reconciling after the controller manager was killed", cluster)
        try:
            new_leader, taken = await handover
        except RuntimeError:  # pods ran, yet the Lease never named the standby: reported, not fatal
            new_leader, taken = "", None
    finally:
        handover.cancel()
    new = [p for p in _started_after(tracker, t0) if p.running is not None]
    since_kill = [p.startup() + p.first_seen - t0 for p in new]
    return {"killed": active, "new_leader": new_leader, "replicas_before": before, "replicas_after": target,
            "lease_handover_s": None if taken is None else round(taken - t0, 3), "total_s": round(end - t0, 3),
            "new_pod_running_since_kill": figures(since_kill), "new_pod_startup": figures([p.startup() for p in new]),
            SERIES: [series("cm-failover", "controller manager killed -> new pod Running", since_kill, end - t0)]}


if __name__ == "__main__":  # `python -m deploy.bench.reconcile ...` is `skiff bench ...`
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.bench.reconcile"))
