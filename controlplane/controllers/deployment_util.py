"""The Deployment controller's pure arithmetic: hashes, revisions, surge/unavailable, conditions.

Everything here is a function of its arguments (Kubernetes' deployment/util, and the kubectl
rollout status text) so it can be table-tested and shared with the CLI. Facts it keeps:

- **ReplicaSet per template.** A ReplicaSet belongs to the template whose hash it carries in the
  `pod-template-hash` label; its name is `<deployment>-<hash>`. The hash is FNV-1a (32 bit) of
  the template's deterministic protobuf encoding (plus the collision count, when set), written
  as its decimal digits mapped onto Kubernetes' safe alphabet - the same in every process. Two
  templates are "equal" when they are equal after dropping that label.
- **Fenceposts.** maxSurge is a count or a percentage of replicas rounded *up*, maxUnavailable
  rounded *down*; when both come to 0, maxUnavailable is 1 (Kubernetes' ResolveFenceposts).
- **Revisions** are decimal annotations (`deployment.kubernetes.io/revision`); the new
  ReplicaSet's revision is one more than the highest old one; a ReplicaSet brought back
  (rollback) remembers its former revisions in `revision-history`.
- **Status and conditions** as Kubernetes' calculateStatus / SetDeploymentCondition: a
  condition whose status and reason do not change is left untouched (so no status churn);
  lastTransitionTime moves only when the status changes.

Times: condition times are RFC 3339 strings of whole seconds (`now` is passed in as one).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from controlplane.client.timeutil import parse_time
from protos.skiff.api.v1 import apps_pb2, core_pb2, meta_pb2

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE = "kubernetes.io/change-cause"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# Annotations the controller owns: never copied from a Deployment to its ReplicaSets (nor back
# by a rollback).
CONTROLLER_ANNOTATIONS = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
                                    "deprecated.deployment.rollback.to"})

PROGRESSING, AVAILABLE, REPLICA_FAILURE = "Progressing", "Available", "ReplicaFailure"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED, RESUMED = "DeploymentPaused", "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"
MIN_AVAILABLE, MIN_UNAVAILABLE = "MinimumReplicasAvailable", "MinimumReplicasUnavailable"
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
_MAX_INT32 = 2**31 - 1

RS = apps_pb2.ReplicaSet
Deployment = apps_pb2.Deployment


# ---- hashing and templates -------------------------------------------------------------------

def _fnv32a(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def template_hash(template: core_pb2.PodTemplateSpec, collision_count: int | None = None) -> str:
    """The pod-template-hash of a template (module docstring)."""
    data = without_hash(template).SerializeToString(deterministic=True)
    if collision_count is not None:
        data += str(collision_count).encode()
    return "".join(_ALPHANUMS[b % len(_ALPHANUMS)] for b in str(_fnv32a(data)).encode())


def without_hash(template: core_pb2.PodTemplateSpec) -> core_pb2.PodTemplateSpec:
    out = core_pb2.PodTemplateSpec()
    out.CopyFrom(template)
    out.metadata.labels.pop(POD_TEMPLATE_HASH, None)
    return out


def equal_ignore_hash(a: core_pb2.PodTemplateSpec, b: core_pb2.PodTemplateSpec) -> bool:
    return without_hash(a) == without_hash(b)


# ---- numbers ---------------------------------------------------------------------------------

def scaled_value(value: meta_pb2.IntOrString, total: int, round_up: bool) -> int:
    """An IntOrString as a count: ints as they are, "N%" of total rounded up or down."""
    which = value.WhichOneof("value")
    if which is None:
        return 0
    if which == "int_val":
        return value.int_val
    text = value.str_val.strip()
    if not text.endswith("%") or not text[:-1].strip().isdigit():
        raise ValueError(f"invalid value {text!r}: must be an integer or a percentage (e.g. 25%)")
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def resolve_fenceposts(surge: meta_pb2.IntOrString, unavailable: meta_pb2.IntOrString, desired: int
                       ) -> tuple[int, int]:
    s = scaled_value(surge, desired, True)
    u = scaled_value(unavailable, desired, False)
    return (s, 1) if s == 0 and u == 0 else (s, u)


def replicas(d: Deployment) -> int:
    return d.spec.replicas if d.spec.HasField("replicas") else 1


def is_rolling(d: Deployment) -> bool:
    return d.spec.strategy.type in ("", "RollingUpdate")


def max_surge(d: Deployment) -> int:
    if not is_rolling(d):
        return 0
    ru = d.spec.strategy.rolling_update
    return resolve_fenceposts(ru.max_surge, ru.max_unavailable, replicas(d))[0]


def max_unavailable(d: Deployment) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    ru = d.spec.strategy.rolling_update
    return min(resolve_fenceposts(ru.max_surge, ru.max_unavailable, replicas(d))[1], replicas(d))


def spec_total(rss: Iterable[RS | None]) -> int:
    return sum(rs.spec.replicas for rs in rss if rs is not None)


def status_total(rss: Iterable[RS | None]) -> int:
    return sum(rs.status.replicas for rs in rss if rs is not None)


def available_total(rss: Iterable[RS | None]) -> int:
    return sum(rs.status.available_replicas for rs in rss if rs is not None)


def settled_available_total(rss: Iterable[RS | None]) -> int:
    """Available pods that will still be there once each ReplicaSet reaches its size: a
    ReplicaSet's status may still count pods it is about to delete, so never more than its
    spec.replicas. (Kubernetes uses status alone; with a lagging status that can scale old
    ReplicaSets down below replicas - maxUnavailable.)"""
    return sum(min(rs.status.available_replicas, rs.spec.replicas) for rs in rss if rs is not None)


def ready_total(rss: Iterable[RS | None]) -> int:
    return sum(rs.status.ready_replicas for rs in rss if rs is not None)


def active(rss: Iterable[RS | None]) -> list[RS]:
    """ReplicaSets that want pods (spec.replicas > 0)."""
    return [rs for rs in rss if rs is not None and rs.spec.replicas > 0]


# ---- ordering and revisions ------------------------------------------------------------------

def _created(rs: RS) -> float:
    try:
        return parse_time(rs.metadata.creation_timestamp) if rs.metadata.creation_timestamp else 0.0
    except ValueError:
        return 0.0


def by_creation(rss: Iterable[RS]) -> list[RS]:
    """Oldest first; ties by name."""
    return sorted(rss, key=lambda rs: (_created(rs), rs.metadata.name))


def by_size_newer(rss: Iterable[RS]) -> list[RS]:
    """Largest first; ties: newer first (scaling up)."""
    return sorted(rss, key=lambda rs: (-rs.spec.replicas, -_created(rs), rs.metadata.name))


def by_size_older(rss: Iterable[RS]) -> list[RS]:
    """Largest first; ties: older first (scaling down)."""
    return sorted(rss, key=lambda rs: (-rs.spec.replicas, _created(rs), rs.metadata.name))


def revision(obj: RS | Deployment) -> int:
    try:
        return int(obj.metadata.annotations.get(REVISION, "0") or "0")
    except ValueError:
        return 0


def by_revision(rss: Iterable[RS]) -> list[RS]:
    return sorted(rss, key=lambda rs: (revision(rs), _created(rs), rs.metadata.name))


def find_new_rs(d: Deployment, rss: Sequence[RS]) -> RS | None:
    """The oldest ReplicaSet whose template is the Deployment's (ignoring the hash label)."""
    return next((rs for rs in by_creation(rss) if equal_ignore_hash(rs.spec.template, d.spec.template)), None)


def int_annotation(rs: RS, name: str) -> int | None:
    try:
        return int(rs.metadata.annotations[name])
    except (KeyError, ValueError):
        return None


def set_replicas_annotations(rs: RS, desired: int, max_replicas: int) -> bool:
    """Record the Deployment's size on rs; True when an annotation changed."""
    changed = False
    for name, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(max_replicas))):
        if rs.metadata.annotations.get(name) != value:
            rs.metadata.annotations[name] = value
            changed = True
    return changed


def copy_annotations(d: Deployment, rs: RS) -> bool:
    changed = False
    for k, v in d.metadata.annotations.items():
        if k not in CONTROLLER_ANNOTATIONS and rs.metadata.annotations.get(k) != v:
            rs.metadata.annotations[k] = v
            changed = True
    return changed


def set_new_rs_annotations(d: Deployment, rs: RS, new_revision: int, exists: bool) -> bool:
    """Kubernetes' SetNewReplicaSetAnnotations; True when rs changed."""
    changed = copy_annotations(d, rs)
    had = REVISION in rs.metadata.annotations
    old = revision(rs)
    if old < new_revision:
        rs.metadata.annotations[REVISION] = str(new_revision)
        changed = True
        if had:  # a former ReplicaSet made new again: a rollback
            history = rs.metadata.annotations.get(REVISION_HISTORY, "")
            rs.metadata.annotations[REVISION_HISTORY] = f"{history},{old}" if history else str(old)
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


# ---- scaling arithmetic ----------------------------------------------------------------------

def new_rs_new_replicas(d: Deployment, all_rss: Sequence[RS | None], new_rs: RS) -> int:
    """How big the new ReplicaSet may be now (Kubernetes' NewRSNewReplicas)."""
    if not is_rolling(d):
        return replicas(d)
    total_max = replicas(d) + max_surge(d)
    current = spec_total(all_rss)
    if current >= total_max:
        return new_rs.spec.replicas
    up = min(total_max - current, replicas(d) - new_rs.spec.replicas)
    return new_rs.spec.replicas + max(up, 0)


def find_active_or_latest(new_rs: RS | None, old: Sequence[RS]) -> RS | None:
    """The one ReplicaSet with pods, or the newest if none has any; None when several have."""
    if new_rs is None and not old:
        return None
    olds = list(reversed(by_creation(old)))
    live = active([*olds, new_rs])
    if not live:
        return new_rs if new_rs is not None else olds[0]
    return live[0] if len(live) == 1 else None


def is_saturated(d: Deployment, rs: RS | None) -> bool:
    if rs is None:
        return False
    return (int_annotation(rs, DESIRED_REPLICAS) == replicas(d) and rs.spec.replicas == replicas(d)
            and rs.status.available_replicas == replicas(d))


def proportion(d: Deployment, rs: RS, to_add: int, added: int) -> int:
    """rs's share of a resize of the whole Deployment (Kubernetes' GetProportion)."""
    if rs.spec.replicas == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(d) == 0:
        fraction = -rs.spec.replicas
    else:
        annotated = int_annotation(rs, MAX_REPLICAS)
        base = annotated if annotated else d.status.replicas
        size = rs.spec.replicas * (replicas(d) + max_surge(d)) / base if base else float(rs.spec.replicas)
        fraction = _round_half_away(size) - rs.spec.replicas
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def proportional_sizes(d: Deployment, rss: Sequence[RS]) -> dict[str, int]:
    """New sizes of the active ReplicaSets when a rolling Deployment is resized mid-rollout."""
    live = active(rss)
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - spec_total(live)
    live = by_size_newer(live) if to_add > 0 else by_size_older(live)
    sizes, added = {}, 0
    for rs in live:
        share = proportion(d, rs, to_add, added) if to_add else 0
        sizes[rs.metadata.name] = rs.spec.replicas + share
        added += share
    if to_add and live:
        first = live[0].metadata.name
        sizes[first] = max(sizes[first] + to_add - added, 0)
    return sizes


# ---- conditions and status -------------------------------------------------------------------

def get_condition(status: apps_pb2.DeploymentStatus, type_: str) -> apps_pb2.DeploymentCondition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def new_condition(type_: str, status: str, reason: str, message: str, now: str) -> apps_pb2.DeploymentCondition:
    return apps_pb2.DeploymentCondition(type=type_, status=status, reason=reason, message=message,
                                        last_update_time=now, last_transition_time=now)


def set_condition(status: apps_pb2.DeploymentStatus, cond: apps_pb2.DeploymentCondition) -> None:
    """Kubernetes' SetDeploymentCondition: same status and reason - no change."""
    current = get_condition(status, cond.type)
    if current is not None and current.status == cond.status and current.reason == cond.reason:
        return
    if current is not None and current.status == cond.status:
        cond.last_transition_time = current.last_transition_time
    remove_condition(status, cond.type)
    status.conditions.append(cond)


def remove_condition(status: apps_pb2.DeploymentStatus, type_: str) -> None:
    keep = [c for c in status.conditions if c.type != type_]
    del status.conditions[:]
    status.conditions.extend(keep)


def has_progress_deadline(d: Deployment) -> bool:
    return d.spec.HasField("progress_deadline_seconds") and d.spec.progress_deadline_seconds != _MAX_INT32


def calculate_status(all_rss: Sequence[RS | None], new_rs: RS | None, d: Deployment, now: str
                     ) -> apps_pb2.DeploymentStatus:
    available = available_total(all_rss)
    status = apps_pb2.DeploymentStatus()
    status.CopyFrom(d.status)
    status.observed_generation = d.metadata.generation
    status.replicas = status_total(all_rss)
    status.updated_replicas = status_total([new_rs])
    status.ready_replicas = ready_total(all_rss)
    status.available_replicas = available
    status.unavailable_replicas = max(spec_total(all_rss) - available, 0)
    if available >= replicas(d) - max_unavailable(d):
        cond = new_condition(AVAILABLE, "True", MIN_AVAILABLE, "Deployment has minimum availability.", now)
    else:
        cond = new_condition(AVAILABLE, "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.",
                             now)
    set_condition(status, cond)
    return status


def deployment_complete(d: Deployment, status: apps_pb2.DeploymentStatus) -> bool:
    n = replicas(d)
    return (status.updated_replicas == n and status.replicas == n and status.available_replicas == n
            and status.observed_generation >= d.metadata.generation)


def deployment_progressing(d: Deployment, new: apps_pb2.DeploymentStatus) -> bool:
    old = d.status
    return (new.updated_replicas > old.updated_replicas
            or (new.replicas - new.updated_replicas) < (old.replicas - old.updated_replicas)
            or new.ready_replicas > old.ready_replicas or new.available_replicas > old.available_replicas)


def deployment_timed_out(d: Deployment, status: apps_pb2.DeploymentStatus, now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.reason == NEW_RS_AVAILABLE:
        return False
    if cond.reason == TIMED_OUT:
        return True
    try:
        since = parse_time(cond.last_update_time)
    except ValueError:
        return False
    return since + d.spec.progress_deadline_seconds < now


def progress_condition(d: Deployment, new_rs: RS | None, status: apps_pb2.DeploymentStatus, now: float,
                       stamp: str) -> None:
    """Update status's Progressing condition as syncRolloutStatus does."""
    if not has_progress_deadline(d):
        remove_condition(status, PROGRESSING)
        return
    current = get_condition(status, PROGRESSING)
    complete = (status.replicas == status.updated_replicas and current is not None
                and current.reason == NEW_RS_AVAILABLE)
    if complete:
        return
    name = new_rs.metadata.name if new_rs is not None else ""
    if deployment_complete(d, status):
        set_condition(status, new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                            f'ReplicaSet "{name}" has successfully progressed.', stamp))
    elif deployment_progressing(d, status):
        what = f'ReplicaSet "{name}"' if new_rs is not None else f'Deployment "{d.metadata.name}"'
        cond = new_condition(PROGRESSING, "True", RS_UPDATED, f"{what} is progressing.", stamp)
        if current is not None and current.status == "True":
            cond.last_transition_time = current.last_transition_time
        remove_condition(status, PROGRESSING)
        status.conditions.append(cond)
    elif deployment_timed_out(d, status, now):
        set_condition(status, new_condition(PROGRESSING, "False", TIMED_OUT,
                                            f'ReplicaSet "{name}" has timed out progressing.', stamp))


def paused_condition(d: Deployment, stamp: str) -> bool:
    """Progressing Unknown/DeploymentPaused while paused, DeploymentResumed once resumed (left
    alone after a timeout); True when d.status changed."""
    if not has_progress_deadline(d):
        return False
    cond = get_condition(d.status, PROGRESSING)
    if cond is not None and cond.reason == TIMED_OUT:
        return False
    paused_known = cond is not None and cond.reason == PAUSED
    if d.spec.paused and not paused_known:
        set_condition(d.status, new_condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused", stamp))
    elif not d.spec.paused and paused_known:
        set_condition(d.status, new_condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed", stamp))
    else:
        return False
    return True


def rollout_status_message(d: Deployment) -> tuple[str, bool]:
    """kubectl's rollout status line for a Deployment and whether the rollout is done;
    ValueError when it exceeded its progress deadline."""
    name = d.metadata.name
    st = d.status
    if d.metadata.generation > st.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    cond = get_condition(st, PROGRESSING)
    if cond is not None and cond.reason == TIMED_OUT:
        raise ValueError(f'deployment "{name}" exceeded its progress deadline')
    want = replicas(d)
    if st.updated_replicas < want:
        return (f'Waiting for deployment "{name}" rollout to finish: {st.updated_replicas} out of {want} '
                "new replicas have been updated..."), False
    if st.replicas > st.updated_replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {st.replicas - st.updated_replicas} '
                "old replicas are pending termination..."), False
    if st.available_replicas < st.updated_replicas:
        return (f'Waiting for deployment "{name}" rollout to finish: {st.available_replicas} of '
                f"{st.updated_replicas} updated replicas are available..."), False
    return f'deployment "{name}" successfully rolled out', True
