"""Admission: what is checked or allocated against the rest of the cluster on the way in.

- Namespaced objects may be created only in a namespace that exists and is not terminating.
- Services get a ClusterIP from the service range and NodePorts from the node-port range.
  An allocation is a key in the store (`/registry/serviceips/<ip>`,
  `/registry/servicenodeports/<port>`) written in the same transaction as the Service, with the
  condition that the key does not exist yet: two API servers cannot hand out one address, and a
  Service's deletion releases its keys in its own transaction, so nothing leaks.

Allocation reads the allocated keys (keys only) and picks a free value at random, as
Kubernetes' bitmap allocator does; a lost race shows as a failed transaction and the registry
tries again with a fresh pick.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Callable

from google.protobuf.message import Message

from controlplane.apiserver import errors
from controlplane.apiserver.storage import StoreClient, StoreUnavailable, absent, delete_op, prefix_end, put_op
from controlplane.client.scheme import Kind, by_resource
from protos.etcd.etcdserverpb import rpc_pb2
from protos.skiff.api.v1 import core_pb2

IP_PREFIX = b"/registry/serviceips/"
PORT_PREFIX = b"/registry/servicenodeports/"


@dataclass
class Allocations:
    """Extra compares and ops that go into the object's own transaction."""

    compares: list[rpc_pb2.Compare] = field(default_factory=list)
    ops: list[rpc_pb2.RequestOp] = field(default_factory=list)


class Admission:
    def __init__(self, store: StoreClient, service_cidr: str = "10.96.0.0/16",
                 node_port_range: tuple[int, int] = (30000, 32767), rng: random.Random | None = None,
                 namespaces: Callable[[str], Message | None] | None = None) -> None:
        self.store = store
        self.cached_namespace = namespaces or (lambda name: None)
        self.service_net = ipaddress.ip_network(service_cidr)
        self.node_ports = node_port_range
        self.rng = rng or random.Random()

    async def admit_create(self, kind: Kind, obj: Message) -> None:
        """The object's namespace must exist and not be terminating."""
        if not kind.namespaced:
            return
        m = obj.metadata  # type: ignore[attr-defined]
        # Like Kubernetes' NamespaceLifecycle: trust the watch cache when it knows the namespace
        # as active (a namespace is never un-terminated), ask the store otherwise.
        cached = self.cached_namespace(m.namespace)
        if cached is not None and not cached.metadata.deletion_timestamp:  # type: ignore[attr-defined]
            return
        got = await self._get(f"/registry/namespaces/{m.namespace}".encode())
        if got is None:
            raise errors.NotFound(f'namespaces "{m.namespace}" not found')
        if _terminating(got):
            raise errors.Forbidden(
                f'{kind.group_resource} "{m.name}" is forbidden: unable to create new content in '
                f"namespace {m.namespace} because it is being terminated")

    async def _get(self, key: bytes) -> bytes | None:
        try:
            got = await self.store.get(key)
        except StoreUnavailable as err:
            raise errors.Unavailable(str(err)) from None
        return None if got is None else got[0]

    async def _taken(self, prefix: bytes) -> set[str]:
        try:
            resp = await self.store.range(prefix, prefix_end(prefix), keys_only=True)
        except StoreUnavailable as err:
            raise errors.Unavailable(str(err)) from None
        return {kv.key[len(prefix):].decode() for kv in resp.kvs}

    async def allocations_for(self, kind: Kind, new: Message, old: Message | None) -> Allocations:
        """Allocate what `new` needs that `old` did not hold; release what it no longer needs.
        Fills spec.clusterIP(s) and nodePorts in `new`."""
        out = Allocations()
        if kind.kind != "Service":
            return out
        owner = f"{new.metadata.namespace}/{new.metadata.name}".encode()  # type: ignore[attr-defined]
        spec = new.spec  # type: ignore[attr-defined]
        await self._allocate_ip(spec, old, owner, out)
        await self._allocate_node_ports(spec, old, owner, out)
        return out

    def releases_for(self, kind: Kind, obj: Message) -> list[rpc_pb2.RequestOp]:
        """Ops that free a deleted object's allocations."""
        if kind.kind != "Service":
            return []
        spec = obj.spec  # type: ignore[attr-defined]
        ops = [delete_op(IP_PREFIX + ip.encode()) for ip in _ips(spec)]
        ops += [delete_op(PORT_PREFIX + str(p).encode()) for p in _node_ports(spec)]
        return ops

    async def _allocate_ip(self, spec, old: Message | None, owner: bytes, out: Allocations) -> None:  # type: ignore[no-untyped-def]
        held = set(_ips(old.spec)) if old is not None else set()  # type: ignore[attr-defined]
        if spec.cluster_ip == "None" or spec.type == "ExternalName":
            for ip in held:
                out.ops.append(delete_op(IP_PREFIX + ip.encode()))
            return
        if spec.cluster_ip and spec.cluster_ip in held:
            return
        taken = await self._taken(IP_PREFIX)
        if spec.cluster_ip:
            ip = spec.cluster_ip
            if ipaddress.ip_address(ip) not in self.service_net:
                raise errors.invalid(_SERVICE, _name(owner), [
                    f"spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: "
                    f"the provided IP ({ip}) is not in the valid range. The range of valid IPs is {self.service_net}"])
            if spec.cluster_ip in taken:
                raise errors.invalid(_SERVICE, _name(owner), [
                    f"spec.clusterIPs: Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: "
                    "provided IP is already allocated"])
        else:
            spec.cluster_ip = self._pick_ip(taken)
        del spec.cluster_ips[:]
        spec.cluster_ips.append(spec.cluster_ip)
        key = IP_PREFIX + spec.cluster_ip.encode()
        out.compares.append(absent(key))
        out.ops.append(put_op(key, owner))

    def _pick_ip(self, taken: set[str]) -> str:
        net = self.service_net
        size = net.num_addresses - 3  # network, the first address (kept for the API), broadcast
        if size - len(taken) <= 0:
            raise errors.Unavailable(f"no ClusterIP left in {net}")
        start = self.rng.randrange(size)
        for i in range(size):
            ip = str(net.network_address + 2 + (start + i) % size)
            if ip not in taken:
                return ip
        raise errors.Unavailable(f"no ClusterIP left in {net}")

    async def _allocate_node_ports(self, spec, old: Message | None, owner: bytes, out: Allocations) -> None:  # type: ignore[no-untyped-def]
        held = set(_node_ports(old.spec)) if old is not None else set()  # type: ignore[attr-defined]
        wants_ports = spec.type in ("NodePort", "LoadBalancer")
        if not wants_ports:
            for p in spec.ports:
                p.node_port = 0
        wanted = {p.node_port for p in spec.ports if p.node_port}
        for port in held - wanted:
            out.ops.append(delete_op(PORT_PREFIX + str(port).encode()))
        if not wants_ports:
            return
        low, high = self.node_ports
        taken = await self._taken(PORT_PREFIX) - {str(p) for p in held}
        for i, p in enumerate(spec.ports):
            if p.node_port and p.node_port in held:
                continue
            if p.node_port:
                if not low <= p.node_port <= high:
                    raise errors.invalid(_SERVICE, _name(owner), [
                        f"spec.ports[{i}].nodePort: Invalid value: {p.node_port}: provided port is not in the valid range. "
                        f"The range of valid ports is {low}-{high}"])
                if str(p.node_port) in taken:
                    raise errors.invalid(_SERVICE, _name(owner), [
                        f"spec.ports[{i}].nodePort: Invalid value: {p.node_port}: provided port is already allocated"])
            else:
                p.node_port = self._pick_port(taken)
            taken.add(str(p.node_port))
            key = PORT_PREFIX + str(p.node_port).encode()
            out.compares.append(absent(key))
            out.ops.append(put_op(key, owner))

    def _pick_port(self, taken: set[str]) -> int:
        low, high = self.node_ports
        size = high - low + 1
        start = self.rng.randrange(size)
        for i in range(size):
            port = low + (start + i) % size
            if str(port) not in taken:
                return port
        raise errors.Unavailable(f"no NodePort left in {low}-{high}")


def _ips(spec) -> list[str]:  # type: ignore[no-untyped-def]
    ips = list(spec.cluster_ips) or ([spec.cluster_ip] if spec.cluster_ip else [])
    return [ip for ip in ips if ip and ip != "None"]


def _node_ports(spec) -> list[int]:  # type: ignore[no-untyped-def]
    return [p.node_port for p in spec.ports if p.node_port]


def _terminating(namespace_value: bytes) -> bool:
    ns = core_pb2.Namespace()
    ns.ParseFromString(namespace_value)
    return bool(ns.metadata.deletion_timestamp) or ns.status.phase == "Terminating"


def _name(owner: bytes) -> str:
    return owner.decode().split("/", 1)[-1]


_SERVICE = by_resource("services")
