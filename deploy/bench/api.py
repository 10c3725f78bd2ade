"""`skiff bench api`: the API server's create latency under watchers, list latency, watch fan-out.

What it does (against a store + API server it starts, or a running server with --server):
1. opens W watches on pods of one namespace, in a separate process (spawn: gRPC never crosses a
   fork), which records when each watcher receives each pod;
2. creates pods open-loop at a fixed rate R for D seconds: every create is due at t0 + i/R and
   its latency is measured from that moment (so a server that falls behind shows it instead of
   slowing the generator — no coordinated omission);
3. reports create latency p50/p90/p99/max and the achieved rate, and the watch fan-out delay:
   from a create's acknowledgement to its event at each watcher (p50/p99 over every
   watcher x event), and how many events each watcher got;
4. creates N config maps (bounded concurrency; reports that throughput too), then times lists of
   all N: consistent (resourceVersion "", from the watch cache after a revision check), from the
   cache as is (resourceVersion "0"), and paged from the store (limit 500).
The figures go to stdout and, as JSON, to --out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from deploy.bench.common import cpu_seconds, create_if_absent, data_root, ensure_namespace, machine_info, server_pids
from deploy.bench.loadgen import percentile
from deploy.cli.errors import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", choices=("skiff", "etcd"), default="skiff",
                   help="the store the API server runs on (started here; default skiff, 3 replicas)")
    p.add_argument("--server", metavar="HOST:PORT", help="use a running API server (plain text, --no-auth) instead")
    p.add_argument("--rate", type=float, default=200.0, help="creates per second (default 200)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of creates (default 10)")
    p.add_argument("--watchers", type=int, default=100, help="watches open during the creates (default 100)")
    p.add_argument("--list-objects", type=int, default=10_000, help="objects for the list timing (default 10000)")
    p.add_argument("--watch-flush-interval", type=float, default=0.01, metavar="SECONDS",
                   help="the started API server's --watch-flush-interval (default 0.01)")
    p.add_argument("--channels", type=int, default=4, help="client connections for the creates (default 4)")
    p.add_argument("--data-dir", type=Path, help="keep the store's data here (default: a temporary directory)")
    p.add_argument("--out", type=Path, default=Path("bench-api.json"), help="JSON report (default bench-api.json)")


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.duration <= 0 or args.watchers < 0 or args.list_objects < 0:
        raise CommandError("--rate and --duration must be positive; --watchers and --list-objects not negative")
    load_before = os.getloadavg()
    with data_root(args.data_dir) as root:
        if args.server:
            report = _measure(args, args.server, "given")
        else:
            report = _with_cluster(args, root)
        report["machine"] = machine_info(load_before, os.getloadavg(), root)
    report["params"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if not k.startswith("_") and k not in ("command", "bench_command")}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    print(f"report written to {args.out}")
    return 0


def _with_cluster(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from deploy.components import ApiServerProcess
    from deploy.bench.etcd_cluster import EtcdCluster, etcd_available
    from kvstore.localcluster import LocalCluster

    if args.store == "etcd" and not etcd_available():
        raise CommandError("--store etcd needs Debian's etcd-server and etcd-client")
    store: Any = EtcdCluster(root / "etcd", size=3) if args.store == "etcd" else LocalCluster(root / "store", size=3)
    _progress(f"starting a 3-member {args.store} store and an API server")
    store.start(timeout=60)
    server = ApiServerProcess(root / "api", store.endpoints,
                              extra_args=("--no-auth", "--watch-flush-interval", str(args.watch_flush_interval)))
    try:
        server.start(timeout=60)
        assert server.process is not None
        pids = {"apiserver": [server.process.pid], "store": server_pids(store)}
        return _measure(args, server.address, f"{args.store} (3 members)", pids)
    finally:
        server.stop()
        store.stop()


def _measure(args: argparse.Namespace, address: str, store_label: str,
             pids: dict[str, list[int]] | None = None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    expected = int(args.rate * args.duration)
    watcher = ctx.Process(target=_watch_process, args=(address, args.watchers, expected, ready, results), daemon=True)
    if args.watchers:
        watcher.start()
        if not ready.wait(60):
            raise CommandError("the watchers did not start within 60 s")
    _progress(f"{args.watchers} watchers open; creating pods at {args.rate:g}/s for {args.duration:g} s")
    cpu_before = {k: cpu_seconds(v) for k, v in (pids or {}).items()}
    creates = asyncio.run(_create_load(address, args.rate, args.duration, args.channels))
    for name, before in cpu_before.items():  # machine-independent-ish: CPU per create
        after = cpu_seconds((pids or {})[name])
        if before is not None and after is not None and creates["ok"]:
            creates[f"{name}_cpu_ms_per_create"] = round((after - before) * 1000 / creates["ok"], 2)
    fanout: dict[str, Any] = {}
    if args.watchers:
        arrivals = results.get(timeout=args.duration + 300)
        watcher.join(10)
        fanout = _fanout(creates["acks"], arrivals, args.watchers)
    _progress(f"creating {args.list_objects} config maps, then listing them")
    lists = asyncio.run(_list_timings(address, args.list_objects))
    creates.pop("acks")
    return {"server": address, "store": store_label, "creates": creates, "fanout": fanout, "lists": lists}


async def _create_load(address: str, rate: float, duration: float, channels: int) -> dict[str, Any]:
    from controlplane.client.api import ApiClient
    from protos.skiff.api.v1 import core_pb2

    clients = [ApiClient.connect(address) for _ in range(max(1, channels))]
    total = int(rate * duration)
    latencies: list[float] = []
    acks: list[float] = [0.0] * total
    errors: dict[str, int] = {}

    async def one(i: int, due: float) -> None:
        pod = core_pb2.Pod()
        pod.metadata.name = f"p-{i:07d}"
        pod.metadata.labels["bench"] = "api"
        pod.spec.containers.add(name="c", image="busybox:1.36")
        try:
            await clients[i % len(clients)].create(pod, "bench-api")
            acks[i] = time.time()
            latencies.append(time.monotonic() - due)
        except Exception as err:  # counted, not fatal: the figures say how many failed
            errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1

    await ensure_namespace(clients[0], "bench-api")
    for n, client in enumerate(clients):  # connect every channel before the clock starts
        warm = core_pb2.ConfigMap()
        warm.metadata.name = f"warm-up-{n}"
        await create_if_absent(client, warm, "bench-api")
    start = time.monotonic() + 0.2
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    for c in clients:
        await c.close()
    latencies.sort()
    return {"requested_rate": rate, "count": total, "ok": len(latencies), "errors": errors,
            "achieved_rate": round(len(latencies) / elapsed, 1), **_ms_stats(latencies), "acks": acks}


def _watch_process(address: str, watchers: int, expected: int, ready: Any, results: Any) -> None:
    """Child process: W watches; returns, per watcher, {pod index: arrival wall time}."""
    arrivals = asyncio.run(_watch_all(address, watchers, expected, ready))
    results.put(arrivals)


async def _watch_all(address: str, watchers: int, expected: int, ready: Any) -> list[dict[int, float]]:
    from controlplane.client.api import ApiClient, ApiStatusError

    clients = [ApiClient.connect(address, timeout=600) for _ in range(4)]
    seen: list[dict[int, float]] = [{} for _ in range(watchers)]

    async def one(w: int) -> None:
        try:
            async for ev in clients[w % len(clients)].watch("pods", "bench-api", bookmarks=False):
                if ev.type == "ADDED":
                    seen[w][int(ev.object.metadata.name[2:])] = time.time()
                    if len(seen[w]) >= expected:
                        return
        except ApiStatusError:
            return  # the report counts what each watcher received

    tasks = [asyncio.create_task(one(w)) for w in range(watchers)]
    await asyncio.sleep(2.0)  # every stream is open at the server by then
    ready.set()
    done, pending = await asyncio.wait(tasks, timeout=expected / 10 + 120)
    for t in pending:
        t.cancel()
    for c in clients:
        await c.close()
    return seen


def _fanout(acks: list[float], arrivals: list[dict[int, float]], watchers: int) -> dict[str, Any]:
    delays = sorted(t - acks[i] for per in arrivals for i, t in per.items() if i < len(acks) and acks[i])
    counts = [len(per) for per in arrivals]
    return {"watchers": watchers, "events_per_watcher_min": min(counts, default=0),
            "events_per_watcher_max": max(counts, default=0), "deliveries": len(delays),
            **{f"after_ack_{k}": v for k, v in _ms_stats(delays).items()}}


async def _list_timings(address: str, count: int) -> dict[str, Any]:
    from controlplane.client.api import ApiClient
    from protos.skiff.api.v1 import core_pb2

    client = ApiClient.connect(address, timeout=300)
    await ensure_namespace(client, "bench-list")
    sem = asyncio.Semaphore(64)

    async def make(i: int) -> None:
        cm = core_pb2.ConfigMap()
        cm.metadata.name = f"cm-{i:06d}"
        cm.data["key"] = "v" * 64
        async with sem:
            await create_if_absent(client, cm, "bench-list")

    t0 = time.monotonic()
    await asyncio.gather(*(make(i) for i in range(count)))
    fill = time.monotonic() - t0
    out: dict[str, Any] = {"objects": count, "create_throughput_per_s": round(count / fill, 1) if fill else None}
    for label, kwargs in (("consistent", {}), ("cache_rv0", {"resource_version": "0"}), ("paged_500", {"limit": 500})):
        times = []
        for _ in range(3):
            t = time.monotonic()
            n = await _list_all(client, kwargs)
            times.append(time.monotonic() - t)
            if n != count:
                raise CommandError(f"list {label} returned {n} objects, expected {count}")
        out[f"{label}_ms_best"] = round(min(times) * 1000, 1)
        out[f"{label}_ms_median"] = round(sorted(times)[1] * 1000, 1)
    await client.close()
    return out


async def _list_all(client: Any, kwargs: dict[str, Any]) -> int:
    n, token = 0, ""
    while True:
        page = await client.list("configmaps", "bench-list", continue_token=token, **kwargs)
        n += len(page.items)
        token = page.continue_token
        if not token:
            return n


def _ms_stats(sorted_seconds: list[float]) -> dict[str, float | None]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)
    return {"p50_ms": ms(percentile(sorted_seconds, 50)), "p90_ms": ms(percentile(sorted_seconds, 90)),
            "p99_ms": ms(percentile(sorted_seconds, 99)),
            "max_ms": ms(sorted_seconds[-1] if sorted_seconds else None)}


def format_report(r: dict[str, Any]) -> str:
    c, f, lst = r["creates"], r["fanout"], r["lists"]
    lines = [f"skiff bench api — API server {r['server']} on {r['store']}",
             f"creates: {c['ok']}/{c['count']} ok at {c['achieved_rate']}/s (asked {c['requested_rate']:g}/s); "
             f"latency p50 {c['p50_ms']} ms, p90 {c['p90_ms']} ms, p99 {c['p99_ms']} ms, max {c['max_ms']} ms"
             + (f"; errors {c['errors']}" if c["errors"] else "")]
    if "apiserver_cpu_ms_per_create" in c:
        lines.append(f"server CPU per create (with its watch fan-out): API server {c['apiserver_cpu_ms_per_create']} ms, "
                     f"store (3 replicas together) {c.get('store_cpu_ms_per_create')} ms")
    if f:
        lines.append(f"watch fan-out: {f['watchers']} watchers, {f['events_per_watcher_min']}-{f['events_per_watcher_max']} "
                     f"events each; delay after the create's ack p50 {f['after_ack_p50_ms']} ms, "
                     f"p99 {f['after_ack_p99_ms']} ms, max {f['after_ack_max_ms']} ms")
    lines.append(f"list of {lst['objects']} objects: consistent {lst['consistent_ms_median']} ms (best "
                 f"{lst['consistent_ms_best']}), cache rv=0 {lst['cache_rv0_ms_median']} ms, paged by 500 from "
                 f"the store {lst['paged_500_ms_median']} ms; filling them ran at {lst['create_throughput_per_s']} creates/s")
    target = c["p99_ms"] is not None and c["p99_ms"] <= 50 and c["ok"] == c["count"]
    lines.append(f"target create p99 <= 50 ms at {c['requested_rate']:g}/s with {f.get('watchers', 0)} watchers: "
                 f"{'met' if target else 'NOT met'}")
    m = r.get("machine", {})
    lines.append(f"machine: {m.get('nproc')} cpus, load {m.get('load_average_before')} -> {m.get('load_average_after')}")
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"… {message}", file=sys.stderr, flush=True)
