"""The agent's Node object and heartbeats: registration, node status, the node Lease.

Pure builders (tested without I/O):

- `host_capacity(meminfo, cpus, max_pods)`: cpu (cores), memory (`<kB>Ki` from /proc/meminfo's
  MemTotal), pods; flags override each. `allocatable(capacity, reserved)` subtracts the reserved
  amounts (never below zero).
- `node_labels(name, os, arch)`: kubernetes.io/hostname, kubernetes.io/os, kubernetes.io/arch
  and their beta.kubernetes.io twins, node.kubernetes.io/instance-type "skiff".
- `node_status(...)`: capacity, allocatable, addresses (InternalIP + Hostname), the daemon
  endpoint (the node service's port, which `skiff logs`/`exec` dial at the InternalIP), nodeInfo
  (kernel, OS image, container runtime `<name>://<version>` from CRI Version, kubelet version
  `skiff/0.1.0`, architecture, operating system, machine and boot ids), images from CRI
  ListImages (names, sizeBytes), and the conditions.
- `ready_condition(runtime_conditions, old, now)`: Ready is True when the runtime reports both
  RuntimeReady and NetworkReady, else False with the runtime's reason and message (Kubernetes'
  KubeletNotReady / "container runtime network not ready: ..."). MemoryPressure, DiskPressure and
  PIDPressure are reported False (skiff measures none). A condition's lastTransitionTime changes
  only when its status does; lastHeartbeatTime is `now`.
- `renewed_lease(existing, node, duration, now)`: the Lease `kube-node-lease/<node>` held by
  the node, renewTime now (MicroTime).

`NodeReporter` does the I/O: `register()` creates the Node (or adopts the existing one: spec.
podCIDR from the control plane wins, else `--pod-cidr`), then `run()` computes the status every
`status_interval` seconds and writes it when it changed or every `status_report_interval`
seconds (Kubernetes' nodeStatusUpdateFrequency 10 s and nodeStatusReportFrequency 5 min: the
Lease is the heartbeat), and renews the lease every `lease_interval` seconds from the copy it
last wrote (Kubernetes' default 10 s with a 40 s lease duration). API failures are logged and retried at the next tick:
the node keeps running pods when the API server is away.
"""
from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from controlplane.client import quantity
from controlplane.client.api import AlreadyExistsError, ApiClient, ApiStatusError, ConflictError, NotFoundError
from controlplane.client.timeutil import SystemClock, WallClock, format_micro_time, format_time
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import coordination_pb2, core_pb2

log = logging.getLogger(__name__)

KUBELET_VERSION = "skiff/0.1.0"
LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_MAX_PODS = 110
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


@dataclass(frozen=True)
class NodeConfig:
    name: str
    node_ip: str
    pod_cidr: str = ""
    max_pods: int = DEFAULT_MAX_PODS
    cpu: str = ""                  # capacity overrides ("" = from the host)
    memory: str = ""
    reserved: Mapping[str, str] = field(default_factory=dict)   # e.g. {"cpu": "100m", "memory": "256Mi"}
    labels: Mapping[str, str] = field(default_factory=dict)
    node_service_port: int = 0
    status_interval: float = 10.0  # how often the status is computed (Kubernetes' nodeStatusUpdateFrequency)
    status_report_interval: float = 300.0  # an unchanged status is written this often (nodeStatusReportFrequency)
    lease_interval: float = 10.0
    lease_duration: int = 40


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    kernel: str
    os_image: str
    operating_system: str
    architecture: str
    machine_id: str = ""
    boot_id: str = ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def os_image(os_release: str) -> str:
    """PRETTY_NAME from /etc/os-release text."""
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"')
    return "Linux"


def host_facts() -> HostFacts:
    uname = os.uname()
    return HostFacts(hostname=socket.gethostname(), kernel=uname.release,
                     os_image=os_image(_read("/etc/os-release")), operating_system=platform.system().lower(),
                     architecture=ARCH.get(uname.machine, uname.machine), machine_id=_read("/etc/machine-id"),
                     boot_id=_read("/proc/sys/kernel/random/boot_id"))


def mem_total_kib(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise ValueError("/proc/meminfo has no MemTotal line")


def host_capacity(meminfo: str, cpus: int, max_pods: int = DEFAULT_MAX_PODS, cpu: str = "",
                  memory: str = "") -> dict[str, str]:
    """Capacity from the host (or the overrides), as Kubernetes writes it."""
    return {"cpu": cpu or str(cpus), "memory": memory or f"{mem_total_kib(meminfo)}Ki", "pods": str(max_pods)}


def allocatable(capacity: Mapping[str, str], reserved: Mapping[str, str]) -> dict[str, str]:
    """capacity - reserved per resource (cpu in millicores, memory in Ki), floored at zero."""
    out = dict(capacity)
    for name, amount in reserved.items():
        if name not in capacity:
            raise ValueError(f"reserved {name}={amount}: the node has no {name} capacity")
        if name == "cpu":
            left = max(quantity.parse_cpu_millis(capacity[name]) - quantity.parse_cpu_millis(amount), 0)
            out[name] = f"{left // 1000}" if left % 1000 == 0 else f"{left}m"
        elif name == "pods":
            out[name] = str(max(int(capacity[name]) - int(amount), 0))
        else:
            left = max(quantity.parse_bytes(capacity[name]) - quantity.parse_bytes(amount), 0)
            out[name] = f"{left // 1024}Ki" if left % 1024 == 0 else str(left)
    return out


def node_labels(name: str, operating_system: str, arch: str, extra: Mapping[str, str] = {}) -> dict[str, str]:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": operating_system, "kubernetes.io/arch": arch,
              "beta.kubernetes.io/os": operating_system, "beta.kubernetes.io/arch": arch,
              "node.kubernetes.io/instance-type": "skiff"}
    labels.update(extra)
    return labels


def _condition(ctype: str, ok: bool, reason: str, message: str, old: Mapping[str, core_pb2.NodeCondition],
               now: float) -> core_pb2.NodeCondition:
    status = "True" if ok else "False"
    before = old.get(ctype)
    since = before.last_transition_time if before is not None and before.status == status else format_time(now)
    return core_pb2.NodeCondition(type=ctype, status=status, reason=reason, message=message,
                                  last_heartbeat_time=format_time(now), last_transition_time=since)


def ready_condition(runtime: Sequence[cri.RuntimeCondition] | None, old: Mapping[str, core_pb2.NodeCondition],
                    now: float) -> core_pb2.NodeCondition:
    if runtime is None:
        return _condition("Ready", False, "KubeletNotReady", "container runtime is down: no answer to CRI Status", old, now)
    by_type = {c.type: c for c in runtime}
    problems = []
    for wanted, words in (("RuntimeReady", "container runtime not ready"),
                          ("NetworkReady", "container runtime network not ready")):
        c = by_type.get(wanted)
        if c is None or not c.status:
            detail = f"{wanted}=false reason:{c.reason} message:{c.message}" if c is not None else f"no {wanted} condition"
            problems.append(f"{words}: {detail}")
    if problems:
        return _condition("Ready", False, "KubeletNotReady", "; ".join(problems), old, now)
    return _condition("Ready", True, "KubeletReady", "skiff agent is posting ready status", old, now)


def node_conditions(runtime: Sequence[cri.RuntimeCondition] | None, old: Iterable[core_pb2.NodeCondition],
                    now: float) -> list[core_pb2.NodeCondition]:
    before = {c.type: c for c in old}
    pressure = [
        _condition("MemoryPressure", False, "KubeletHasSufficientMemory", "skiff agent has sufficient memory available", before, now),
        _condition("DiskPressure", False, "KubeletHasNoDiskPressure", "skiff agent has no disk pressure", before, now),
        _condition("PIDPressure", False, "KubeletHasSufficientPID", "skiff agent has sufficient PID available", before, now),
    ]
    return pressure + [ready_condition(runtime, before, now)]


def node_status(config: NodeConfig, facts: HostFacts, capacity: Mapping[str, str], runtime_version: str,
                images: Sequence[cri.Image], runtime: Sequence[cri.RuntimeCondition] | None,
                old: core_pb2.NodeStatus, now: float) -> core_pb2.NodeStatus:
    status = core_pb2.NodeStatus()
    status.capacity.update(capacity)
    status.allocatable.update(allocatable(capacity, config.reserved))
    status.conditions.extend(node_conditions(runtime, old.conditions, now))
    status.addresses.add(type="InternalIP", address=config.node_ip)
    status.addresses.add(type="Hostname", address=config.name)
    if config.node_service_port:
        status.daemon_endpoints.kubelet_endpoint.port = config.node_service_port
    info = status.node_info
    info.kernel_version, info.os_image = facts.kernel, facts.os_image
    info.container_runtime_version, info.kubelet_version = runtime_version, KUBELET_VERSION
    info.architecture, info.operating_system = facts.architecture, facts.operating_system
    info.machine_id, info.boot_id = facts.machine_id, facts.boot_id
    for image in sorted(images, key=lambda i: -int(i.size))[:50]:  # Kubernetes reports at most 50
        names = list(image.repo_digests) + list(image.repo_tags)
        if names:
            status.images.add(names=names, size_bytes=int(image.size))
    return status


def new_node(config: NodeConfig, facts: HostFacts) -> core_pb2.Node:
    node = core_pb2.Node(api_version="v1", kind="Node")
    node.metadata.name = config.name
    node.metadata.labels.update(node_labels(config.name, facts.operating_system, facts.architecture, config.labels))
    if config.pod_cidr:
        node.spec.pod_cidr = config.pod_cidr
        node.spec.pod_cidrs.append(config.pod_cidr)
    return node


def renewed_lease(existing: coordination_pb2.Lease | None, node: str, duration: int, now: float) -> coordination_pb2.Lease:
    lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
    if existing is not None:
        lease.CopyFrom(existing)
    lease.metadata.name, lease.metadata.namespace = node, LEASE_NAMESPACE
    lease.spec.holder_identity = node
    lease.spec.lease_duration_seconds = duration
    lease.spec.renew_time = format_micro_time(now)
    return lease


def _without_heartbeats(status: core_pb2.NodeStatus) -> core_pb2.NodeStatus:
    """The status with every condition's lastHeartbeatTime cleared, to compare what changed."""
    out = core_pb2.NodeStatus()
    out.CopyFrom(status)
    for condition in out.conditions:
        condition.last_heartbeat_time = ""
    return out


class NodeReporter:
    """Registers the Node and keeps its status and Lease fresh (see the module docstring)."""

    def __init__(self, api: ApiClient, cri_client: object, config: NodeConfig, runtime_version: str,
                 facts: HostFacts | None = None, capacity: Mapping[str, str] | None = None,
                 wall: WallClock | None = None) -> None:
        self.api = api
        self.cri = cri_client  # node.runtime.client.CRIClient
        self.config = config
        self.runtime_version = runtime_version
        self.facts = facts or host_facts()
        self.capacity = dict(capacity or host_capacity(_read("/proc/meminfo"), os.cpu_count() or 1,
                                                       config.max_pods, config.cpu, config.memory))
        self.wall: WallClock = wall or SystemClock()
        self.pod_cidr = config.pod_cidr
        self.registered = asyncio.Event()
        self.lease_renewals = 0
        self.status_writes = 0
        self._last_report: float | None = None  # wall time of the last status written
        self._lease: coordination_pb2.Lease | None = None  # the last Lease written (saves a read per renewal)

    async def register(self) -> core_pb2.Node:
        """Create the Node, or adopt the one there (keeping the control plane's podCIDR)."""
        node = new_node(self.config, self.facts)
        try:
            created = await self.api.create(node)
        except AlreadyExistsError:
            created = await self.api.get("nodes", self.config.name)  # type: ignore[assignment]
            missing = {k: v for k, v in node.metadata.labels.items() if created.metadata.labels.get(k) != v}
            if missing or (self.config.pod_cidr and not created.spec.pod_cidr):
                patch: dict[str, object] = {"metadata": {"labels": missing}}
                if self.config.pod_cidr and not created.spec.pod_cidr:
                    patch["spec"] = {"podCIDR": self.config.pod_cidr, "podCIDRs": [self.config.pod_cidr]}
                created = await self.api.patch("nodes", self.config.name, patch)  # type: ignore[assignment]
        self.pod_cidr = created.spec.pod_cidr or self.config.pod_cidr
        await self.update_status()
        self.registered.set()
        return created

    async def _runtime_facts(self) -> tuple[list[cri.RuntimeCondition] | None, list[cri.Image]]:
        try:
            status = await self.cri.runtime.Status(cri.StatusRequest(), timeout=10)  # type: ignore[attr-defined]
            conditions = list(status.status.conditions)
        except Exception as err:  # the runtime is down: the node is not ready
            log.warning("CRI Status failed: %s", err)
            conditions = None
        try:
            images = list((await self.cri.images.ListImages(cri.ListImagesRequest(), timeout=10)).images)  # type: ignore[attr-defined]
        except Exception:
            images = []
        return conditions, images

    async def update_status(self) -> core_pb2.Node:
        """Compute the status; write it when it changed or `status_report_interval` has passed
        since the last write (only a write moves the conditions' lastHeartbeatTime: the Lease
        is the heartbeat)."""
        conditions, images = await self._runtime_facts()
        for _ in range(5):
            current: core_pb2.Node = await self.api.get("nodes", self.config.name)  # type: ignore[assignment]
            now = self.wall.now()
            status = node_status(self.config, self.facts, self.capacity, self.runtime_version,
                                 images, conditions, current.status, now)
            due = self._last_report is None or now - self._last_report >= self.config.status_report_interval
            if not due and _without_heartbeats(status) == _without_heartbeats(current.status):
                return current
            updated = core_pb2.Node()
            updated.CopyFrom(current)
            updated.status.CopyFrom(status)
            try:
                written = await self.api.update_status(updated)
            except ConflictError:
                continue
            self._last_report = now
            self.status_writes += 1
            return written
        raise ConflictError(grpc.StatusCode.ABORTED, f"node {self.config.name}: the status update kept conflicting")

    async def renew_lease(self) -> None:
        """Renew from the Lease last written, as the kubelet does; read it only when there is
        none yet or someone else changed it (a conflict)."""
        existing = self._lease
        if existing is None:
            try:
                existing = await self.api.get("leases", self.config.name, LEASE_NAMESPACE)  # type: ignore[assignment]
            except NotFoundError:
                existing = None
        lease = renewed_lease(existing, self.config.name, self.config.lease_duration, self.wall.now())
        try:
            if existing is None:
                lease.spec.acquire_time = lease.spec.renew_time
                self._lease = await self.api.create(lease, namespace=LEASE_NAMESPACE)
            else:
                self._lease = await self.api.update(lease)
        except (ConflictError, NotFoundError, AlreadyExistsError):
            self._lease = None  # read it afresh at the next renewal
            raise
        self.lease_renewals += 1

    async def run(self) -> None:
        """Register (retrying), then heartbeat forever."""
        delay = 0.5
        while not self.registered.is_set():
            try:
                await self.register()
                log.info("node %s registered", self.config.name)
            except (ApiStatusError, OSError) as err:
                log.warning("registering node %s failed (%s); retrying in %.1fs", self.config.name, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await asyncio.gather(self._loop(self.renew_lease, self.config.lease_interval, "lease renewal"),
                             self._loop(self.update_status, self.config.status_interval, "node status update"))

    async def _loop(self, step: object, interval: float, what: str) -> None:
        while True:
            try:
                await step()  # type: ignore[operator]
            except (ApiStatusError, OSError) as err:
                log.warning("%s for node %s failed: %s", what, self.config.name, err)
            await asyncio.sleep(interval)
