"""A micro-benchmark of the scheduler's pure core: no API server, no I/O.

`run(nodes, pods)` builds hollow Nodes (Ready, 32 cpu, 64Gi, 110 pods) and pending Pods
(100m cpu, 128Mi, one image, owned by one ReplicaSet per 100 pods), then does per pod what the
driver does per cycle: build its PodInfo, take a cache snapshot, `schedule`, `assume` the
result. It reports pods/s and per-pod latency percentiles of that loop.

`python -m controlplane.scheduler.bench_core --nodes 1000 --pods 5000`
"""
from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

from controlplane.scheduler.algorithm import schedule
from controlplane.scheduler.cache import SchedulerCache
from controlplane.scheduler.framework import PodInfo, SchedulerConfig
from controlplane.scheduler.plugins import default_plugins
from kvstore.clock import MonotonicClock
from protos.skiff.api.v1 import core_pb2, meta_pb2


@dataclass(frozen=True)
class BenchResult:
    nodes: int
    pods: int
    scheduled: int
    seconds: float
    pods_per_second: float
    p50_ms: float
    p99_ms: float

    def __str__(self) -> str:
        return (f"{self.nodes} nodes, {self.pods} pods: {self.scheduled} scheduled in "
                f"{self.seconds:.2f} s = {self.pods_per_second:.0f} pods/s "
                f"(per pod p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms)")


def hollow_node(name: str, cpu: str = "32", memory: str = "64Gi", pods: str = "110",
                zone: str = "") -> core_pb2.Node:
    node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name))
    node.metadata.labels["kubernetes.io/hostname"] = name
    if zone:
        node.metadata.labels["topology.kubernetes.io/zone"] = zone
    node.status.allocatable.update({"cpu": cpu, "memory": memory, "pods": pods})
    node.status.capacity.update({"cpu": cpu, "memory": memory, "pods": pods})
    node.status.conditions.add(type="Ready", status="True")
    return node


def pending_pod(name: str, cpu: str = "100m", memory: str = "128Mi", owner: str = "",
                image: str = "busybox:1.36") -> core_pb2.Pod:
    pod = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="default"))
    pod.metadata.labels["app"] = owner or name
    if owner:
        pod.metadata.owner_references.add(kind="ReplicaSet", name=owner, uid=f"uid-{owner}",
                                          controller=True)
    c = pod.spec.containers.add(name="main", image=image)
    c.resources.requests.update({"cpu": cpu, "memory": memory})
    return pod


def run(nodes: int = 1000, pods: int = 2000, seed: int = 0) -> BenchResult:
    cache = SchedulerCache(MonotonicClock(), ttl=3600.0)
    for i in range(nodes):
        cache.add_node(hollow_node(f"node-{i:05d}", zone=f"zone-{i % 3}"))
    pending = [pending_pod(f"pod-{i:06d}", owner=f"rs-{i // 100}") for i in range(pods)]
    plugins, config, rng = default_plugins(), SchedulerConfig(), random.Random(seed)
    latencies, start_index, scheduled = [], 0, 0
    began = time.perf_counter()
    for pod in pending:
        t0 = time.perf_counter()
        info = PodInfo(pod)
        result = schedule(info, cache.snapshot(), plugins, config, rng, start_index=start_index)
        start_index = result.next_start_index
        if result.node_name is not None:
            cache.assume(info, result.node_name)
            scheduled += 1
        latencies.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - began
    latencies.sort()
    return BenchResult(nodes, pods, scheduled, seconds, pods / seconds,
                       latencies[len(latencies) // 2] * 1000,
                       latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(run(args.nodes, args.pods, args.seed))


if __name__ == "__main__":
    main()
