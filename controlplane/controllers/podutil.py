"""Pure helpers about pods that every workload controller shares (no I/O, no clocks of their own).

- Readiness: `is_pod_ready` (condition Ready=True), `is_pod_available(pod, min_ready_seconds,
  now)` (ready for at least min_ready_seconds by the Ready condition's lastTransitionTime, on the
  wall clock `now` the caller passes in), `is_pod_active` (not Succeeded/Failed, no
  deletionTimestamp), `is_pod_terminal`, `is_being_deleted`.
- Ownership: `controller_ref(owner)` builds the ownerReference a controller puts on what it
  makes (apiVersion, kind, name, uid, controller: true, blockOwnerDeletion: true);
  `get_controller_of(obj)` returns the one with controller: true, or None; `is_controlled_by`.
- Making pods: `pod_from_template(template, owner, name=..., generate_name=...)` returns a new,
  unsaved Pod with the template's labels, annotations, finalizers and spec (deep copies), the
  owner's namespace and the controller ownerReference. The template is never mutated.
- Choosing what to delete: `active_pods_key(pod)` orders pods the way Kubernetes' ActivePods
  does - the pod sorted first is the cheapest to delete: unscheduled before scheduled, Pending
  before Unknown before Running, not ready before ready, ready for less time before ready for
  longer, more container restarts before fewer, newer before older. `sort_active_pods(pods)`
  returns a new list in that order (stable; never mutates its argument).
- `restart_count(pod)`: the highest restart count among its containers (ActivePods compares the
  maximum); `total_restarts(pod)`: their sum.
- `template_hash(template, collision_count=0)`: a short, stable name for a pod template (FNV-1a
  32 of its deterministic protobuf encoding, spelled in Kubernetes' safe alphabet), for labels
  such as `controller-revision-hash`; equal templates give equal hashes in every process.

Invariant: functions here never mutate their arguments; everything returned is a fresh message.
"""
from __future__ import annotations

from typing import Any, Iterable

from google.protobuf.message import Message

from controlplane.client import scheme
from controlplane.client.timeutil import parse_time
from protos.skiff.api.v1 import core_pb2, meta_pb2

POD_PENDING, POD_RUNNING, POD_SUCCEEDED, POD_FAILED, POD_UNKNOWN = (
    "Pending", "Running", "Succeeded", "Failed", "Unknown")
_PHASE_RANK = {POD_PENDING: 0, "": 0, POD_UNKNOWN: 1, POD_RUNNING: 2}


def _meta(obj: Message) -> Any:
    return obj.metadata  # type: ignore[attr-defined]


# ---- readiness ---------------------------------------------------------------------------------

def ready_condition(pod: core_pb2.Pod) -> core_pb2.PodCondition | None:
    for cond in pod.status.conditions:
        if cond.type == "Ready":
            return cond
    return None


def is_pod_ready(pod: core_pb2.Pod) -> bool:
    """The pod's Ready condition is True."""
    cond = ready_condition(pod)
    return cond is not None and cond.status == "True"


def ready_since(pod: core_pb2.Pod) -> float | None:
    """When the pod became ready (wall seconds), None when not ready or the time is unknown."""
    cond = ready_condition(pod)
    if cond is None or cond.status != "True" or not cond.last_transition_time:
        return None
    try:
        return parse_time(cond.last_transition_time)
    except ValueError:
        return None


def is_pod_available(pod: core_pb2.Pod, min_ready_seconds: int, now: float) -> bool:
    """Ready, and (when min_ready_seconds > 0) ready since at least that long before `now`.
    A ready pod without a transition time counts as available only when min_ready_seconds is 0."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds <= now


def is_pod_terminal(pod: core_pb2.Pod) -> bool:
    return pod.status.phase in (POD_SUCCEEDED, POD_FAILED)


def is_being_deleted(obj: Message) -> bool:
    return bool(_meta(obj).deletion_timestamp)


def is_pod_active(pod: core_pb2.Pod) -> bool:
    """Neither finished (Succeeded/Failed) nor being deleted: it counts toward replicas."""
    return not is_pod_terminal(pod) and not is_being_deleted(pod)


def filter_active(pods: Iterable[core_pb2.Pod]) -> list[core_pb2.Pod]:
    return [p for p in pods if is_pod_active(p)]


# ---- ownership ---------------------------------------------------------------------------------

def controller_ref(owner: Message) -> meta_pb2.OwnerReference:
    """The ownerReference a controller sets on objects it creates."""
    kind = scheme.by_message(owner)
    ref = meta_pb2.OwnerReference(api_version=kind.api_version, kind=kind.kind,
                                  name=_meta(owner).name, uid=_meta(owner).uid)
    ref.controller = True
    ref.block_owner_deletion = True
    return ref


def get_controller_of(obj: Message) -> meta_pb2.OwnerReference | None:
    """The ownerReference with controller: true (there is at most one), or None."""
    for ref in _meta(obj).owner_references:
        if ref.HasField("controller") and ref.controller:
            return ref
    return None


def is_controlled_by(obj: Message, owner: Message) -> bool:
    ref = get_controller_of(obj)
    return ref is not None and ref.uid == _meta(owner).uid


# ---- making pods -------------------------------------------------------------------------------

def pod_from_template(template: core_pb2.PodTemplateSpec, owner: Message, name: str = "",
                      generate_name: str = "") -> core_pb2.Pod:
    """A new Pod (not yet created) from a controller's template, owned by `owner`.

    Give `name` for a fixed name (StatefulSet) or `generate_name` for a server-made one; with
    neither, generateName is the owner's name plus "-", as Kubernetes does."""
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    meta = pod.metadata
    if name:
        meta.name = name
    else:
        meta.generate_name = generate_name or f"{_meta(owner).name}-"
    meta.namespace = _meta(owner).namespace
    meta.labels.update(template.metadata.labels)
    meta.annotations.update(template.metadata.annotations)
    meta.finalizers.extend(template.metadata.finalizers)
    meta.owner_references.append(controller_ref(owner))
    pod.spec.CopyFrom(template.spec)
    return pod


# ---- choosing which pods to delete -------------------------------------------------------------

def restart_count(pod: core_pb2.Pod) -> int:
    """The highest restart count of the pod's containers (what ActivePods compares)."""
    return max((cs.restart_count for cs in pod.status.container_statuses), default=0)


def total_restarts(pod: core_pb2.Pod) -> int:
    return sum(cs.restart_count for cs in pod.status.container_statuses)


def _created(pod: core_pb2.Pod) -> float:
    try:
        return parse_time(pod.metadata.creation_timestamp) if pod.metadata.creation_timestamp else 0.0
    except ValueError:
        return 0.0


def active_pods_key(pod: core_pb2.Pod) -> tuple[int, int, int, float, int, float]:
    """Sort key: smaller means delete this one first (Kubernetes' ActivePods order)."""
    ready = is_pod_ready(pod)
    since = ready_since(pod) if ready else None
    return (
        1 if pod.spec.node_name else 0,                      # unscheduled first
        _PHASE_RANK.get(pod.status.phase, 0),                 # Pending < Unknown < Running
        1 if ready else 0,                                    # not ready first
        -(since if since is not None else float("inf")),     # ready for less time first
        -restart_count(pod),                                  # more restarts first
        -_created(pod) if pod.metadata.creation_timestamp else float("-inf"),  # newer first
    )


_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels: a hash never spells a word


def template_hash(template: core_pb2.PodTemplateSpec, collision_count: int = 0) -> str:
    data = template.SerializeToString(deterministic=True) + (
        str(collision_count).encode() if collision_count else b"")
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    out = []
    while True:
        h, digit = divmod(h, len(_SAFE_ALPHABET))
        out.append(_SAFE_ALPHABET[digit])
        if h == 0:
            return "".join(out)


def sort_active_pods(pods: Iterable[core_pb2.Pod]) -> list[core_pb2.Pod]:
    """Pods ordered cheapest-to-delete first (a new list)."""
    return sorted(pods, key=active_pods_key)
