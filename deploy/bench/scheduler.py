"""`skiff bench scheduler`: pods/s and per-pod latency of the scheduler against a real API server.

Per round (`--nodes`, then `--also-nodes` unless 0), on a fresh store (3 replicas) and API server:
1. creates N hollow Node objects (Ready; 32 cpu, 64Gi, 110 pods; three zones) and a namespace;
2. starts `skiff scheduler` as a process (`SchedulerProcess`) and waits until it is ready
   (/readyz: its caches hold the nodes);
3. opens a watch on the namespace's pods, then creates P pods (100m cpu, 128Mi, owned by one
   ReplicaSet per 100 pods) with `--concurrency` creates in flight over `--channels` connections;
4. reports pods/s from the first create sent to the last bind seen by the watch, and per-pod
   latency from its create being sent to its bind seen by the watch (p50/p99/max), plus the
   scheduler's own counters scraped from its /metrics, and the CPU seconds each process used.
With `--backlog` the pods are created first and the scheduler started after: the clock runs from
its being ready to the last bind (the scheduler and binds alone, without creates competing).
Everything (store, API server, scheduler, this client) shares the machine: the figures are the
whole control plane's, not the scheduler's alone. Results go to stdout and, as JSON, to --out.

`SchedulerProcess` is also what the integration tests start.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

from deploy.bench.common import cpu_seconds, data_root, ensure_namespace, machine_info
from deploy.bench.loadgen import percentile
from deploy.cli.errors import CommandError
from deploy.components import Component

NAMESPACE = "bench-sched"


class SchedulerProcess(Component):
    """`skiff scheduler` as a child process on loopback (deploy.components.Component), with its
    metrics port: ready when /readyz answers 200."""

    def __init__(self, base_dir: Path, server: str, extra_args: Sequence[str] = (), name: str = "scheduler") -> None:
        from kvstore.localcluster import free_ports

        self.server = server
        self.metrics_port = free_ports(1)[0]
        super().__init__(f"{name}-{self.metrics_port}",
                         ["scheduler", "--server", server, "--metrics-port", str(self.metrics_port), *extra_args],
                         base_dir)

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> "SchedulerProcess":  # type: ignore[override]
        super().start()
        if wait_ready:
            self.wait(lambda: self.get("/readyz")[0] == 200, timeout, "ready")
        else:
            self.wait(lambda: self.get("/healthz")[0] == 200, timeout, "serving /healthz")
        return self

    def get(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) from the metrics port; (0, error) when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""
        except (OSError, urllib.error.URLError) as err:
            return 0, str(err)

    @property
    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def metrics(self) -> dict[str, float]:
        from controlplane.scheduler.metrics import parse_text
        status, body = self.get("/metrics")
        return parse_text(body) if status == 200 else {}

    def wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"skiff scheduler exited with {self.process.returncode}: {self.log_tail()}")
            if check():
                return
            time.sleep(0.05)
        raise RuntimeError(f"skiff scheduler not {what} after {timeout:.0f}s: {self.log_tail()}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=1000, help="hollow nodes (default 1000)")
    p.add_argument("--pods", type=int, default=10_000, help="pods to schedule (default 10000)")
    p.add_argument("--also-nodes", type=int, default=100, metavar="N",
                   help="a second round with N nodes (default 100; 0: none)")
    p.add_argument("--concurrency", type=int, default=64, help="pod creates in flight (default 64)")
    p.add_argument("--channels", type=int, default=4, help="client connections for the creates (default 4)")
    p.add_argument("--bind-concurrency", type=int, default=64, help="the scheduler's binds in flight (default 64)")
    p.add_argument("--backlog", action="store_true",
                   help="create every pod first, then start the scheduler and time it alone (from ready to last bind)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this long without a bind (default 120 s)")
    p.add_argument("--data-dir", type=Path, help="keep the store's data here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=Path("bench-scheduler.json"), help="JSON report (default bench-scheduler.json)")


def run(args: argparse.Namespace) -> int:
    if args.nodes <= 0 or args.pods <= 0 or args.concurrency <= 0 or args.channels <= 0 or args.also_nodes < 0:
        raise CommandError("--nodes, --pods, --concurrency and --channels must be positive; --also-nodes not negative")
    load_before = os.getloadavg()
    rounds = [args.nodes] + ([args.also_nodes] if args.also_nodes and args.also_nodes != args.nodes else [])
    report: dict[str, Any] = {"rounds": []}
    with data_root(args.data_dir) as root:
        for nodes in rounds:
            result = _round(args, root / f"nodes-{nodes}", nodes)
            report["rounds"].append(result)
            print(format_round(result), flush=True)
        report["machine"] = machine_info(load_before, os.getloadavg(), root)
    report["params"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if not k.startswith("_") and k not in ("command", "bench_command")}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report written to {args.out}")
    return 0


def format_round(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    since = "scheduler ready" if r["mode"] == "backlog" else "create"
    ceiling = r["cpu_bound_pods_per_second"]
    return (f"{r['nodes']} nodes, {r['pods']} pods ({r['mode']}): {r['bound']} bound in {r['seconds']:.2f} s = "
            f"{r['pods_per_second']:.0f} pods/s (creates alone {r['create_rate']:.0f}/s); per pod {since}->bound "
            f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms; "
            f"scheduler attempts {r['scheduler']}; CPU ms per pod {r['cpu_ms_per_pod']}"
            + (f" (all cores to itself: ~{ceiling:.0f} pods/s)" if ceiling else ""))


def _progress(text: str) -> None:
    print(f"... {text}", file=sys.stderr, flush=True)


def _round(args: argparse.Namespace, base: Path, nodes: int) -> dict[str, Any]:
    from deploy.components import ApiServerProcess
    from kvstore.localcluster import LocalCluster

    _progress(f"{nodes} nodes: starting a 3-replica store and an API server")
    store = LocalCluster(base / "store", size=3)
    store.start(timeout=60)
    # The watch cache must hold a whole run's events, or the scheduler's watch relists.
    server = ApiServerProcess(base / "api", store.endpoints,
                              extra_args=("--no-auth", "--watch-cache-size", str(4 * args.pods + 4 * nodes + 1000)))
    sched: SchedulerProcess | None = None
    try:
        server.start(timeout=60)
        _progress(f"creating {nodes} hollow nodes")
        asyncio.run(_create_nodes(server.address, nodes, args.concurrency))
        sched = SchedulerProcess(base / "scheduler", server.address,
                                 ["--bind-concurrency", str(args.bind_concurrency), "--seed", "1"])
        pids = {"apiserver": [_pid(server.process)], "store": [_pid(m.process) for m in store.members],
                "bench client": [os.getpid()]}
        if not args.backlog:
            sched.start(timeout=120)
            pids["scheduler"] = [_pid(sched.process)]
        what = "then starting the scheduler" if args.backlog else "the scheduler is ready"
        _progress(f"creating {args.pods} pods, {args.concurrency} in flight; {what}")
        cpu_before = {k: sum(_cpu_seconds(p) for p in v) for k, v in pids.items()}
        result = asyncio.run(_measure(server.address, args.pods, args.concurrency, args.channels, args.timeout,
                                      (lambda: sched.start(timeout=300)) if args.backlog else None))
        cpu = {k: round(sum(_cpu_seconds(p) for p in v) - cpu_before[k], 2) for k, v in pids.items()}
        if args.backlog:  # the scheduler's whole life: start, list, schedule
            cpu["scheduler"] = round(_cpu_seconds(_pid(sched.process)), 2)
        m = sched.metrics()
        result["mode"] = "backlog" if args.backlog else "stream"
        result["scheduler"] = {r: int(m.get(f'scheduler_schedule_attempts_total{{result="{r}"}}', 0))
                               for r in ("scheduled", "unschedulable", "error")}
        result["scheduler"]["events_dropped"] = int(m.get("scheduler_events_dropped_total", 0))
        result["cpu_seconds"] = cpu
        result["cpu_ms_per_pod"] = {k: round(1000 * v / max(result["bound"], 1), 2) for k, v in cpu.items()}
        # If CPU is what limits (every process here shares the machine's cores), this is the
        # rate the whole control plane could reach with the cores to itself (stream mode).
        total = sum(cpu.values())
        result["cpu_bound_pods_per_second"] = (None if args.backlog else  # creates are in the CPU figures
                                               round(result["bound"] * (os.cpu_count() or 1) / max(total, 1e-9), 1))
        return {"nodes": nodes, **result}
    finally:
        if sched is not None:
            sched.stop()
        server.stop()
        store.stop()


def _pid(proc: Any) -> int:
    if proc is None:
        raise RuntimeError("a process of the benchmark is not running")
    return int(proc.pid)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 once it is gone)."""
    return cpu_seconds([pid]) or 0.0


def hollow_node(name: str, zone: str) -> Any:
    from controlplane.scheduler.bench_core import hollow_node as make
    return make(name, zone=zone)


async def _create_nodes(address: str, count: int, concurrency: int) -> None:
    from controlplane.client.api import ApiClient

    client = ApiClient.connect(address)
    slots = asyncio.Semaphore(concurrency)
    try:
        await ensure_namespace(client, NAMESPACE)

        async def one(i: int) -> None:
            async with slots:
                await client.create(hollow_node(f"node-{i:05d}", f"zone-{i % 3}"))
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await client.close()


async def _measure(address: str, pods: int, concurrency: int, channels: int, timeout: float,
                   start_scheduler: Callable[[], object] | None = None) -> dict[str, Any]:
    """Create the pods and wait for their binds. With `start_scheduler` (backlog mode) it is
    called once every pod exists, and the clock starts when it returns (scheduler ready)."""
    from controlplane.client.api import ApiClient
    from controlplane.scheduler.bench_core import pending_pod

    clients = [ApiClient.connect(address, timeout=600) for _ in range(channels)]
    sent: dict[str, float] = {}
    bound: dict[str, float] = {}
    all_bound = asyncio.Event()
    watch = asyncio.create_task(_watch_binds(clients[0], bound, pods, all_bound))
    await asyncio.sleep(0.5)  # the watch is open at the server
    for c in clients:  # connect every channel before the clock starts
        await c.list("namespaces", limit=1)
    slots = asyncio.Semaphore(concurrency)
    errors: dict[str, Any] = {}

    async def one(i: int) -> None:
        name = f"pod-{i:06d}"
        pod = pending_pod(name, owner=f"rs-{i // 100}")
        pod.metadata.namespace = NAMESPACE
        pod.metadata.owner_references[0].api_version = "apps/v1"
        async with slots:
            sent[name] = time.monotonic()
            try:
                await clients[i % channels].create(pod, NAMESPACE)
            except Exception as err:  # counted: the report says how many failed, and the first why
                errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
                errors.setdefault(f"first {type(err).__name__}", str(err))
    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(pods)))
    created = time.monotonic()
    create_rate = pods / max(created - start, 1e-9)
    if start_scheduler is not None:
        await asyncio.to_thread(start_scheduler)
        start = min([time.monotonic(), *bound.values()])
        sent = {n: start for n in sent}  # latency: from the scheduler being ready
    if len(sent) - sum(v for v in errors.values() if isinstance(v, int)) <= 0:
        watch.cancel()
        raise CommandError(f"every pod create failed: {errors}")
    last_count, last_progress = -1, time.monotonic()
    while not all_bound.is_set():
        if len(bound) != last_count:
            last_count, last_progress = len(bound), time.monotonic()
        elif time.monotonic() - last_progress > timeout:
            break
        await asyncio.sleep(0.2)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    for c in clients:
        await c.close()
    latencies = sorted((bound[n] - sent[n]) * 1000 for n in bound if n in sent)
    end = max(bound.values(), default=start)
    seconds = max(end - start, 1e-9)
    return {"pods": pods, "bound": len(bound), "create_errors": errors, "seconds": round(seconds, 3),
            "pods_per_second": round(len(bound) / seconds, 1),
            "create_rate": round(create_rate, 1),
            "latency_ms": {"p50": percentile(latencies, 50) or 0.0, "p99": percentile(latencies, 99) or 0.0,
                           "max": latencies[-1] if latencies else 0.0}}


async def _watch_binds(client: Any, bound: dict[str, float], expected: int, done: asyncio.Event) -> None:
    """Note when each pod is first seen bound (reopening the watch if it ends)."""
    rv = ""
    while len(bound) < expected:
        try:
            # Only bound pods (they enter the selector when bound): half the events to decode.
            async for ev in client.watch("pods", NAMESPACE, field_selector="spec.nodeName!=",
                                         resource_version=rv, bookmarks=True):
                rv = ev.object.metadata.resource_version or rv
                if ev.type != "BOOKMARK" and ev.object.spec.node_name:
                    bound.setdefault(ev.object.metadata.name, time.monotonic())
                    if len(bound) >= expected:
                        break
        except Exception as err:  # the report would be wrong without the watch: say so
            _progress(f"watch ended ({err}); reopening")
            rv = ""
    done.set()


if __name__ == "__main__":  # `python -m deploy.bench.scheduler ...` is `skiff bench ...`
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.bench.scheduler"))
