"""Builders of Nodes and Pods for the scheduler's table tests (terse on purpose)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from google.protobuf import json_format

from controlplane.scheduler.framework import NodeInfo, PodInfo, Snapshot
from protos.skiff.api.v1 import core_pb2, meta_pb2


def node(name: str = "n1", cpu: str = "4", memory: str = "8Gi", pods: str = "110", *,
         labels: Mapping[str, str] | None = None, taints: Iterable[tuple[str, str, str]] = (),
         unschedulable: bool = False, ready: bool | None = True,
         images: Mapping[str, int] | None = None) -> core_pb2.Node:
    """taints as (key, value, effect); ready=None leaves no conditions at all."""
    n = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name, labels=dict(labels or {})))
    n.status.allocatable.update({"cpu": cpu, "memory": memory, "pods": pods})
    n.spec.unschedulable = unschedulable
    for key, value, effect in taints:
        n.spec.taints.add(key=key, value=value, effect=effect)
    if ready is not None:
        n.status.conditions.add(type="Ready", status="True" if ready else "False")
    for image, size in (images or {}).items():
        n.status.images.add(names=[image], size_bytes=size)
    return n


def pod(name: str = "p", cpu: str | None = None, memory: str | None = None, *,
        namespace: str = "default", labels: Mapping[str, str] | None = None,
        node_name: str = "", host_ports: Iterable[tuple[int, str, str]] = (),
        image: str = "busybox", tolerations: Iterable[Mapping[str, Any]] = (),
        node_selector: Mapping[str, str] | None = None,
        affinity: Mapping[str, Any] | None = None, owner: str = "",
        priority: int | None = None, phase: str = "",
        extra: Mapping[str, str] | None = None) -> core_pb2.Pod:
    """host_ports as (port, protocol, hostIP); affinity and tolerations in Kubernetes' JSON
    shape; extra adds other requests to the container ("example.com/gpu": "1")."""
    p = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace,
                                                  labels=dict(labels or {})))
    c = p.spec.containers.add(name="main", image=image)
    if cpu is not None:
        c.resources.requests["cpu"] = cpu
    if memory is not None:
        c.resources.requests["memory"] = memory
    c.resources.requests.update(extra or {})
    for port, proto, ip in host_ports:
        c.ports.add(container_port=port, host_port=port, protocol=proto, host_ip=ip)
    p.spec.node_name = node_name
    for t in tolerations:
        json_format.ParseDict(dict(t), p.spec.tolerations.add())
    p.spec.node_selector.update(node_selector or {})
    if affinity is not None:
        json_format.ParseDict(dict(affinity), p.spec.affinity)
    if owner:
        p.metadata.owner_references.add(kind="ReplicaSet", name=owner, uid=f"uid-{owner}",
                                        controller=True)
    if priority is not None:
        p.spec.priority = priority
    p.status.phase = phase
    return p


def info(p: core_pb2.Pod) -> PodInfo:
    return PodInfo(p)


def node_info(n: core_pb2.Node, *pods: core_pb2.Pod) -> NodeInfo:
    ni = NodeInfo(n)
    for p in pods:
        ni.add_pod(PodInfo(p))
    return ni


def snapshot(nodes: Iterable[core_pb2.Node], pods: Iterable[core_pb2.Pod] = ()) -> Snapshot:
    return Snapshot.from_objects(nodes, pods)


def term(match_labels: Mapping[str, str], topology_key: str,
         namespaces: Iterable[str] | None = None) -> dict[str, Any]:
    """A PodAffinityTerm in JSON shape."""
    t: dict[str, Any] = {"labelSelector": {"matchLabels": dict(match_labels)},
                         "topologyKey": topology_key}
    if namespaces is not None:
        t["namespaces"] = list(namespaces)
    return t
