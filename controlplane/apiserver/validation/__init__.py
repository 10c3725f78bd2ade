"""Validation of API objects with Kubernetes' rules: `validate_object(obj, old)`.

Contract:
- `validate_object(obj, old)` returns EVERY problem of obj (an empty list when it is valid),
  each a string formatted as Kubernetes formats field errors:
  `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.
  `old` is None on create; on update (spec or status) it is the stored object, and the update
  rules apply on top of the create rules: metadata.name/namespace/uid/creationTimestamp are
  immutable, apps/v1 selectors are immutable, a pod's spec may change only where Kubernetes lets
  it, a StatefulSet's spec only in its mutable fields, a Service's clusterIP once set, immutable
  ConfigMaps and Secrets not at all.
- It is pure: it reads obj and old, never changes them, and depends on nothing else. It expects
  defaults to have been applied (the API server calls defaults.apply_defaults first); on an
  undefaulted object it reports the unset enums ("Required value") that defaulting would fill.
- Order: metadata first, then the kind's spec, then status, then the update rules; within a
  part, in field order, as Kubernetes does, so the output is deterministic.

The rule tables live in the sibling modules: names (formats), meta (ObjectMeta, selectors,
int-or-string), containers, scheduling, pods, workloads, services, misc (the other kinds).
"""
from __future__ import annotations

from typing import Callable

from google.protobuf.message import Message

from controlplane.apiserver.validation import misc, names, pods, services, workloads
from controlplane.apiserver.validation.field import ErrorList, FieldError, Path
from controlplane.apiserver.validation.meta import validate_object_meta, validate_object_meta_update
from controlplane.client.scheme import by_message

__all__ = ["validate_object", "validate_errors", "ErrorList", "FieldError", "Path"]

Check = Callable[[ErrorList, Message], None]
UpdateCheck = Callable[[ErrorList, Message, Message], None]

# Kubernetes names most objects with DNS-1123 subdomains; these kinds are stricter.
_NAME_CHECKS: dict[str, names.NameCheck] = {
    "Namespace": names.name_is_dns_label,
    "Service": names.name_is_dns1035_label,
}


def _pod(errs: ErrorList, pod: Message) -> None:
    spec_path = Path("spec")
    pods.validate_pod_spec(errs, pod.spec, spec_path)
    for field_name, json_name in (("init_containers", "initContainers"), ("containers", "containers")):
        for i, ctr in enumerate(getattr(pod.spec, field_name)):
            if ctr.image and ctr.image != ctr.image.strip():
                errs.invalid(spec_path.child(json_name).index(i).child("image"), ctr.image,
                             "must not have leading or trailing whitespace")


_CHECKS: dict[str, Check] = {
    "Pod": _pod,
    "ReplicaSet": workloads.validate_replica_set,
    "ReplicationController": workloads.validate_replication_controller,
    "Deployment": workloads.validate_deployment,
    "DaemonSet": workloads.validate_daemon_set,
    "StatefulSet": workloads.validate_stateful_set,
    "Service": services.validate_service,
    "Endpoints": services.validate_endpoints,
    "Namespace": misc.validate_namespace,
    "Node": misc.validate_node,
    "ConfigMap": misc.validate_config_map,
    "Secret": misc.validate_secret,
    "Event": misc.validate_event,
    "Lease": misc.validate_lease,
    "RuntimeClass": misc.validate_runtime_class,
}


def _secret_update(errs: ErrorList, new: Message, old: Message) -> None:
    misc.validate_immutable_data(errs, new, old)
    errs.immutable(Path("type"), new.type, old.type)


def _runtime_class_update(errs: ErrorList, new: Message, old: Message) -> None:
    errs.immutable(Path("handler"), new.handler, old.handler)


def _pod_update(errs: ErrorList, new: Message, old: Message) -> None:
    pods.validate_pod_update(errs, new, old)


_UPDATE_CHECKS: dict[str, tuple[UpdateCheck, ...]] = {
    "Pod": (_pod_update,),
    "ReplicaSet": (workloads.validate_selector_update,),
    "Deployment": (workloads.validate_selector_update,),
    "DaemonSet": (workloads.validate_selector_update,),
    "StatefulSet": (workloads.validate_selector_update, workloads.validate_stateful_set_update),
    "Service": (services.validate_service_update,),
    "ConfigMap": (misc.validate_immutable_data,),
    "Secret": (_secret_update,),
    "Node": (misc.validate_node_update,),
    "RuntimeClass": (_runtime_class_update,),
}


def validate_errors(obj: Message, old: Message | None) -> ErrorList:
    """The structured form of validate_object (each FieldError has path, type, value, detail)."""
    kind = by_message(obj)
    errs = ErrorList()
    meta_path = Path("metadata")
    name_check = _NAME_CHECKS.get(kind.kind, names.name_is_dns_subdomain)
    validate_object_meta(errs, obj.metadata, kind.namespaced, name_check, meta_path)
    check = _CHECKS.get(kind.kind)
    if check is not None:
        check(errs, obj)
    if kind.kind == "Pod":
        pods.validate_pod_status(errs, obj, old)
    if old is not None:
        validate_object_meta_update(errs, obj.metadata, old.metadata, meta_path)
        for update_check in _UPDATE_CHECKS.get(kind.kind, ()):
            update_check(errs, obj, old)
    return errs


def validate_object(obj: Message, old: Message | None) -> list[str]:
    """Every problem of obj (against old on update), each 'path: Type: value: detail'."""
    return validate_errors(obj, old).messages()
