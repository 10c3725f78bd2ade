"""The Endpoints controller: for each Service with a selector, an Endpoints object of the same name
listing the pods behind it.

`desired_subsets(service, pods)` is pure:
- pods in the service's namespace whose labels match spec.selector, that have a pod IP, are not
  being deleted and have not finished (Succeeded/Failed);
- each becomes an address {ip, nodeName, targetRef (kind Pod, namespace, name, uid)}, plus
  `hostname` when the pod's spec.hostname is set and its spec.subdomain names this service (the
  StatefulSet case, for DNS). Ready pods go to `addresses`, others to `notReadyAddresses`
  (all to `addresses` when spec.publishNotReadyAddresses);
- ports resolve per pod: targetPort a number is used as is, unset means `port`, a name is
  looked up among the pod's container ports (same protocol); a pod lacking that named port is
  left out of that service port. EndpointPort carries the service port's name and protocol;
- addresses serving the same set of ports share one subset (Kubernetes' repacking); addresses
  sort by IP, subsets by their ports, so equal inputs give equal Endpoints. A selector-bearing
  service without ports gets subsets with addresses and no ports (headless).

`sync(namespace/name)`: a service that is gone -> its Endpoints is deleted (if present); a
service without a selector is left alone (its Endpoints belong to whoever wrote them); otherwise
the Endpoints is created, or updated only when its subsets or labels (the service's labels)
differ - an unchanged pod set writes nothing.
"""
from __future__ import annotations

import logging
from typing import Iterable

from google.protobuf.message import Message

from controlplane.client.api import AlreadyExistsError, NotFoundError
from controlplane.client.informer import object_key, split_key
from controlplane.controllers import podutil
from controlplane.controllers.base import Controller, ControllerContext, on_changes
from protos.skiff.api.v1 import core_pb2

log = logging.getLogger(__name__)

PortKey = tuple[tuple[str, int, str], ...]  # (name, port, protocol) per port


# ---- the pure core ---------------------------------------------------------------------------

def selects(service: core_pb2.Service, pod: core_pb2.Pod) -> bool:
    sel = service.spec.selector
    return bool(sel) and pod.metadata.namespace == service.metadata.namespace and all(
        pod.metadata.labels.get(k) == v for k, v in sel.items())


def should_be_listed(pod: core_pb2.Pod) -> bool:
    return bool(pod.status.pod_ip) and podutil.is_pod_active(pod)


def resolve_port(sp: core_pb2.ServicePort, pod: core_pb2.Pod) -> int | None:
    """The pod's port for service port sp, or None when a named targetPort is not there."""
    which = sp.target_port.WhichOneof("value")
    if which == "int_val" and sp.target_port.int_val:
        return sp.target_port.int_val
    if which == "str_val" and sp.target_port.str_val:
        name, proto = sp.target_port.str_val, sp.protocol or "TCP"
        for ctr in pod.spec.containers:
            for cp in ctr.ports:
                if cp.name == name and (cp.protocol or "TCP") == proto:
                    return cp.container_port
        return None
    return sp.port


def address_of(service: core_pb2.Service, pod: core_pb2.Pod) -> core_pb2.EndpointAddress:
    addr = core_pb2.EndpointAddress(ip=pod.status.pod_ip)
    if pod.spec.node_name:
        addr.node_name = pod.spec.node_name
    ref = addr.target_ref
    ref.kind, ref.namespace, ref.name, ref.uid = "Pod", pod.metadata.namespace, pod.metadata.name, pod.metadata.uid
    if pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        addr.hostname = pod.spec.hostname
    return addr


def desired_subsets(service: core_pb2.Service, pods: Iterable[core_pb2.Pod]) -> list[core_pb2.EndpointSubset]:
    groups: dict[PortKey, tuple[list[core_pb2.EndpointAddress], list[core_pb2.EndpointAddress]]] = {}
    for pod in pods:
        if not selects(service, pod) or not should_be_listed(pod):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in service.spec.ports:
            target = resolve_port(sp, pod)
            if target is not None:
                ports.append((sp.name, target, sp.protocol or "TCP"))
        if service.spec.ports and not ports:
            continue  # none of the service's ports exist on this pod
        ready, not_ready = groups.setdefault(tuple(sorted(ports)), ([], []))
        listed_ready = podutil.is_pod_ready(pod) or service.spec.publish_not_ready_addresses
        (ready if listed_ready else not_ready).append(address_of(service, pod))
    subsets = []
    for key in sorted(groups):
        ready, not_ready = groups[key]
        subset = core_pb2.EndpointSubset()
        subset.addresses.extend(sorted(ready, key=_address_order))
        subset.not_ready_addresses.extend(sorted(not_ready, key=_address_order))
        for name, port, proto in key:
            subset.ports.add(name=name, port=port, protocol=proto)
        subsets.append(subset)
    return subsets


def _address_order(addr: core_pb2.EndpointAddress) -> tuple[tuple[int, ...] | str, str]:
    try:
        return tuple(int(x) for x in addr.ip.split(".")), addr.target_ref.uid
    except ValueError:
        return addr.ip, addr.target_ref.uid


# ---- the controller --------------------------------------------------------------------------

class EndpointsController(Controller):
    name = "endpoints"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.services = self.informer("services")
        self.pods = self.informer("pods")
        self.endpoints = self.informer("endpoints")
        on_changes(self.services, self.enqueue)
        self.pods.add_handler(self._pod_added, self._pod_updated, self._pod_added)
        self.endpoints.add_handler(None, None, self.enqueue)  # someone deleted it: re-make it

    def _services_of(self, pod: Message) -> list[str]:
        assert isinstance(pod, core_pb2.Pod)
        ns = pod.metadata.namespace
        return [object_key(s) for s in self.services.store.by_index("namespace", ns)
                if isinstance(s, core_pb2.Service) and selects(s, pod)]

    def _pod_added(self, pod: Message) -> None:
        for key in self._services_of(pod):
            self.enqueue_key(key)

    def _pod_updated(self, old: Message, new: Message) -> None:
        for key in set(self._services_of(old)) | set(self._services_of(new)):
            self.enqueue_key(key)

    async def sync(self, key: str) -> None:
        namespace, name = split_key(key)
        service = self.services.get(key)
        if service is None:
            if self.endpoints.get(key) is not None:
                try:
                    await self.ctx.client.delete("endpoints", name, namespace)
                except NotFoundError:
                    pass
            return
        assert isinstance(service, core_pb2.Service)
        if not service.spec.selector:
            return
        pods = [p for p in self.pods.store.by_index("namespace", namespace) if isinstance(p, core_pb2.Pod)]
        wanted = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
        wanted.metadata.name, wanted.metadata.namespace = name, namespace
        wanted.metadata.labels.update(service.metadata.labels)
        wanted.subsets.extend(desired_subsets(service, pods))
        current = self.endpoints.get(key)
        if current is None:
            try:
                await self.ctx.client.create(wanted, namespace)
            except AlreadyExistsError:
                raise RuntimeError(f"endpoints {key} exists but is not in the cache yet; retrying") from None
            return
        assert isinstance(current, core_pb2.Endpoints)
        if list(current.subsets) == list(wanted.subsets) and dict(current.metadata.labels) == dict(wanted.metadata.labels):
            return
        new = core_pb2.Endpoints()
        new.CopyFrom(current)
        del new.subsets[:]
        new.subsets.extend(wanted.subsets)
        new.metadata.labels.clear()
        new.metadata.labels.update(service.metadata.labels)
        await self.ctx.client.update(new)


CONTROLLERS = (EndpointsController,)  # what the controller manager runs from this module
