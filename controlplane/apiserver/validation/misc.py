"""The smaller kinds: Namespace, Node, ConfigMap, Secret, Event, Lease, RuntimeClass.

Kubernetes' rules, with its messages:
- Namespace: spec.finalizers are qualified or standard names; status.phase Active|Terminating.
- Node: taints valid and unique by key and effect; podCIDR(s) valid CIDRs (at most two, the
  first equal to podCIDR); capacity and allocatable quantities parse and are >= 0; podCIDRs and
  providerID may only go from unset to set.
- ConfigMap and Secret: keys are config keys (`[-._a-zA-Z0-9]+`, not '.'/'..'); a key is in data
  or binaryData, not both; at most 1 MiB; typed secrets carry their required keys
  (kubernetes.io/tls: tls.crt and tls.key; dockerconfigjson: .dockerconfigjson; basic-auth:
  username or password; ssh-auth: ssh-privatekey); with `immutable: true` data cannot change
  and `immutable` cannot be unset; a Secret's type is immutable.
- Event: involvedObject must name its object (skiff requires kind and name; Kubernetes does
  not check this), its namespace must match the event's, type Normal|Warning when set,
  count >= 0.
- Lease: leaseDurationSeconds > 0 and leaseTransitions >= 0 when set; preferredHolder only with
  a strategy.
- RuntimeClass: handler a DNS-1123 label, immutable; overhead quantities; scheduling valid.
"""
from __future__ import annotations

import json
from typing import Mapping

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.containers import validate_resource_quantity
from controlplane.apiserver.validation.field import ErrorList, Path
from controlplane.apiserver.validation.meta import validate_finalizers
from controlplane.apiserver.validation.scheduling import validate_taints, validate_tolerations
from protos.skiff.api.v1 import coordination_pb2, core_pb2, node_pb2

MAX_DATA_SIZE = 1024 * 1024
_TYPED_SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}


def validate_namespace(errs: ErrorList, ns: core_pb2.Namespace) -> None:
    validate_finalizers(errs, list(ns.spec.finalizers), Path("spec").child("finalizers"))
    if ns.status.phase and ns.status.phase not in ("Active", "Terminating"):
        errs.not_supported(Path("status").child("phase"), ns.status.phase, ("Active", "Terminating"))


def validate_node(errs: ErrorList, node: core_pb2.Node) -> None:
    spec = Path("spec")
    validate_taints(errs, node.spec.taints, spec.child("taints"))
    if len(node.spec.pod_cidrs) > 2:
        errs.invalid(spec.child("podCIDRs"), list(node.spec.pod_cidrs), "may specify no more than one CIDR for each IP family")
    for i, cidr in enumerate(node.spec.pod_cidrs):
        errs.invalid_each(spec.child("podCIDRs").index(i), cidr, names.is_valid_cidr(cidr))
    if node.spec.pod_cidr:
        errs.invalid_each(spec.child("podCIDR"), node.spec.pod_cidr, names.is_valid_cidr(node.spec.pod_cidr))
        if node.spec.pod_cidrs and node.spec.pod_cidrs[0] != node.spec.pod_cidr:
            errs.invalid(spec.child("podCIDRs"), list(node.spec.pod_cidrs), "first value must match `podCIDR`")
    status = Path("status")
    for field_name in ("capacity", "allocatable"):
        resources: Mapping[str, str] = getattr(node.status, field_name)
        for name in sorted(resources):
            validate_resource_quantity(errs, status.child(field_name).key(name), name, resources[name])


def validate_node_update(errs: ErrorList, new: core_pb2.Node, old: core_pb2.Node) -> None:
    spec = Path("spec")
    if old.spec.pod_cidrs and list(new.spec.pod_cidrs) != list(old.spec.pod_cidrs):
        errs.forbidden(spec.child("podCIDRs"), "node updates may not change podCIDR except from \"\" to valid")
    if old.spec.provider_id and new.spec.provider_id != old.spec.provider_id:
        errs.forbidden(spec.child("providerID"), "node updates may not change providerID except from \"\" to valid")


def _validate_keys(errs: ErrorList, path: Path, keys: list[str]) -> None:
    for key in sorted(keys):
        errs.invalid_each(path.key(key), key, names.is_config_map_key(key))


def validate_config_map(errs: ErrorList, cm: core_pb2.ConfigMap) -> None:
    _validate_keys(errs, Path("data"), list(cm.data))
    _validate_keys(errs, Path("binaryData"), list(cm.binary_data))
    for key in sorted(set(cm.data) & set(cm.binary_data)):
        errs.invalid(Path("binaryData").key(key), key, "duplicate of key present in data")
    size = sum(len(k) + len(v.encode()) for k, v in cm.data.items())
    size += sum(len(k) + len(v) for k, v in cm.binary_data.items())
    if size > MAX_DATA_SIZE:
        errs.too_long(Path("data"), MAX_DATA_SIZE)


def validate_secret(errs: ErrorList, secret: core_pb2.Secret) -> None:
    data = Path("data")
    _validate_keys(errs, data, list(secret.data))
    _validate_keys(errs, Path("stringData"), list(secret.string_data))
    if sum(len(v) for v in secret.data.values()) > MAX_DATA_SIZE:
        errs.too_long(data, MAX_DATA_SIZE)
    for key in _TYPED_SECRET_KEYS.get(secret.type, ()):
        if key not in secret.data:
            errs.required(data.key(key))
    if secret.type == "kubernetes.io/basic-auth" and not {"username", "password"} & set(secret.data):
        errs.required(data.key("username"))
        errs.required(data.key("password"))
    if secret.type == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" in secret.data:
        try:
            json.loads(secret.data[".dockerconfigjson"])
        except ValueError as err:
            errs.invalid(data.key(".dockerconfigjson"), "<secret contents redacted>", str(err))


def validate_immutable_data(errs: ErrorList, new: core_pb2.ConfigMap | core_pb2.Secret,
                            old: core_pb2.ConfigMap | core_pb2.Secret) -> None:
    if not (old.HasField("immutable") and old.immutable):
        return
    detail = "field is immutable when `immutable` is set"
    if not (new.HasField("immutable") and new.immutable):
        errs.forbidden(Path("immutable"), detail)
    if dict(new.data) != dict(old.data):
        errs.forbidden(Path("data"), detail)
    if isinstance(new, core_pb2.ConfigMap) and isinstance(old, core_pb2.ConfigMap) \
            and dict(new.binary_data) != dict(old.binary_data):
        errs.forbidden(Path("binaryData"), detail)


def validate_event(errs: ErrorList, ev: core_pb2.Event) -> None:
    obj = Path("involvedObject")
    if not ev.involved_object.kind:
        errs.required(obj.child("kind"))
    if not ev.involved_object.name:
        errs.required(obj.child("name"))
    ns, obj_ns = ev.metadata.namespace, ev.involved_object.namespace
    if (obj_ns and obj_ns != ns) or (not obj_ns and ns not in ("", "default", "kube-system")):
        errs.invalid(obj.child("namespace"), obj_ns, "does not match event.namespace")
    if ev.type and ev.type not in ("Normal", "Warning"):
        errs.not_supported(Path("type"), ev.type, ("Normal", "Warning"))
    errs.nonnegative(Path("count"), ev.count)
    if ev.HasField("series"):
        errs.nonnegative(Path("series").child("count"), ev.series.count)


def validate_lease(errs: ErrorList, lease: coordination_pb2.Lease) -> None:
    spec, path = lease.spec, Path("spec")
    if spec.HasField("lease_duration_seconds") and spec.lease_duration_seconds <= 0:
        errs.invalid(path.child("leaseDurationSeconds"), spec.lease_duration_seconds, "must be greater than 0")
    if spec.HasField("lease_transitions") and spec.lease_transitions < 0:
        errs.invalid(path.child("leaseTransitions"), spec.lease_transitions, "must be greater than or equal to 0")
    if spec.HasField("strategy") and spec.strategy not in ("OldestEmulationVersion",):
        errs.not_supported(path.child("strategy"), spec.strategy, ("OldestEmulationVersion",))
    if spec.HasField("preferred_holder") and spec.preferred_holder and not (
            spec.HasField("strategy") and spec.strategy):
        errs.forbidden(path.child("preferredHolder"), "may only be specified if `strategy` is defined")


def validate_runtime_class(errs: ErrorList, rc: node_pb2.RuntimeClass) -> None:
    if not rc.handler:
        errs.required(Path("handler"))
    else:
        errs.invalid_each(Path("handler"), rc.handler, names.is_dns1123_label(rc.handler))
    fixed = rc.overhead.pod_fixed
    for name in sorted(fixed):
        validate_resource_quantity(errs, Path("overhead").child("podFixed").key(name), name, fixed[name])
    sched = Path("scheduling")
    names.validate_labels(errs, sched.child("nodeSelector"), rc.scheduling.node_selector)
    validate_tolerations(errs, rc.scheduling.tolerations, sched.child("tolerations"))
