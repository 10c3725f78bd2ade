"""What the API server does to an object on its way into the store, per kind.

Kubernetes calls these "strategies": on create, the server sets the fields a client may not
(uid, creationTimestamp, generation, status reset), applies defaults, and validates; on update
it keeps what the request may not change (for `update`: status; for `update_status`: spec and
metadata), bumps generation when the desired state changed, then validates against the old
object. Defaulting and validation rules live in `defaults.py` and `validation/`.

Everything here is pure: a function of the objects and the time passed in.
"""
from __future__ import annotations

import uuid

from google.protobuf.message import Message

from controlplane.apiserver import defaults, validation
from controlplane.client.scheme import Kind, spec_fields
from controlplane.client.timeutil import format_time

# Kinds whose status a client may set on create (an agent registers a Node with its status).
_STATUS_KEPT_ON_CREATE = frozenset({"Node", "Event"})


def meta(obj: Message):  # type: ignore[no-untyped-def]
    """obj.metadata, typed loosely: every served kind has an ObjectMeta at field 3."""
    return obj.metadata  # type: ignore[attr-defined]


def copy_of(obj: Message) -> Message:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


def prepare_create(kind: Kind, obj: Message, now: float) -> None:
    """Fill the fields the server owns on create; reset status where clients may not set it."""
    m = meta(obj)
    m.uid = str(uuid.uuid4())
    m.creation_timestamp = format_time(now)
    m.resource_version = ""
    m.generation = 1
    m.ClearField("deletion_timestamp")
    m.ClearField("deletion_grace_period_seconds")
    obj.api_version = kind.api_version  # type: ignore[attr-defined]
    obj.kind = kind.kind  # type: ignore[attr-defined]
    if kind.has_status and kind.kind not in _STATUS_KEPT_ON_CREATE:
        obj.ClearField("status")
    if kind.kind == "Pod":
        obj.status.phase = "Pending"  # type: ignore[attr-defined]
    elif kind.kind == "Namespace":
        obj.status.phase = "Active"  # type: ignore[attr-defined]


def spec_changed(kind: Kind, new: Message, old: Message) -> bool:
    """Whether the desired state (every top-level field but metadata and status) differs."""
    for name in spec_fields(kind):
        if getattr(new, name) != getattr(old, name):
            return True
    return False


def prepare_update(kind: Kind, new: Message, old: Message) -> None:
    """An update replaces spec and metadata but keeps status and the server-owned metadata."""
    if kind.has_status:
        new.status.CopyFrom(old.status)  # type: ignore[attr-defined]
    _keep_server_meta(new, old)
    if kind.kind == "Service":
        _keep_service_allocations(new, old)
    meta(new).generation = meta(old).generation + (1 if spec_changed(kind, new, old) else 0)


def _keep_service_allocations(new: Message, old: Message) -> None:
    """An update that leaves clusterIP or a nodePort empty keeps the allocated one (as kubectl
    apply's merge would), so re-applying a manifest does not trip the immutability check."""
    n, o = new.spec, old.spec  # type: ignore[attr-defined]
    if not n.cluster_ip and o.cluster_ip:
        n.cluster_ip = o.cluster_ip
        del n.cluster_ips[:]
        n.cluster_ips.extend(o.cluster_ips)
    held = {(p.port, p.protocol or "TCP"): p.node_port for p in o.ports if p.node_port}
    for port in n.ports:
        if not port.node_port:
            port.node_port = held.get((port.port, port.protocol or "TCP"), 0)


def prepare_status_update(kind: Kind, new: Message, old: Message) -> Message:
    """A status update keeps everything of old but its status (Kubernetes' status strategy)."""
    out = copy_of(old)
    out.status.CopyFrom(new.status)  # type: ignore[attr-defined]
    return out


def _keep_server_meta(new: Message, old: Message) -> None:
    n, o = meta(new), meta(old)
    n.uid = o.uid
    n.creation_timestamp = o.creation_timestamp
    n.name, n.namespace = o.name, o.namespace
    n.generate_name = o.generate_name
    n.deletion_timestamp = o.deletion_timestamp
    if o.HasField("deletion_grace_period_seconds"):
        n.deletion_grace_period_seconds = o.deletion_grace_period_seconds
    else:
        n.ClearField("deletion_grace_period_seconds")
    n.resource_version = ""
    new.api_version, new.kind = old.api_version, old.kind  # type: ignore[attr-defined]


def apply_defaults(obj: Message) -> None:
    defaults.apply_defaults(obj)


def validate(obj: Message, old: Message | None) -> list[str]:
    """Every problem of obj (against old on update), each 'path: Type value: detail'."""
    return validation.validate_object(obj, old)
