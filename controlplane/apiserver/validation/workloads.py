"""Workloads: ReplicaSet, ReplicationController, Deployment, DaemonSet, StatefulSet.

Kubernetes' apps/v1 rules (apps/validation), with its messages:
- replicas, minReadySeconds, revisionHistoryLimit >= 0; progressDeadlineSeconds >= 0 and
  greater than minReadySeconds;
- the selector is required and non-empty ("empty selector is invalid for deployment" — the
  ReplicaSet wording is Kubernetes' too), valid, and must match the template's labels; an RC's
  map selector is required and must match;
- templates are valid pod templates whose restartPolicy is Always and which have no
  activeDeadlineSeconds;
- Deployment strategy: RollingUpdate needs rollingUpdate, whose maxSurge/maxUnavailable are
  ints >= 0 or "NN%", not both 0, maxUnavailable at most 100%; Recreate forbids rollingUpdate;
- DaemonSet updateStrategy: RollingUpdate with exactly one of maxSurge/maxUnavailable non-zero;
- StatefulSet: podManagementPolicy OrderedReady|Parallel, updateStrategy RollingUpdate (partition
  >= 0, maxUnavailable > 0) or OnDelete (no rollingUpdate), retention policy Retain|Delete,
  ordinals.start >= 0, volumeClaimTemplates with names, access modes and a storage request;
- on update the apps/v1 selectors are immutable, and a StatefulSet may change only replicas,
  template, updateStrategy, minReadySeconds, persistentVolumeClaimRetentionPolicy and ordinals;
- statuses: counts >= 0 and no count of ready/available pods above the total.
Where Kubernetes prints a whole strategy struct for an unknown strategy type, skiff reports the
`type` field with the supported values instead.
"""
from __future__ import annotations

from typing import Sequence

from google.protobuf.message import Message

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.containers import validate_resource_quantity
from controlplane.apiserver.validation.field import ErrorList, Path
from controlplane.apiserver.validation.meta import (
    go_int_or_string, go_label_selector, int_or_percent_value, not_more_than_100_percent,
    validate_label_selector, validate_positive_int_or_percent)
from controlplane.apiserver.validation.pods import validate_pod_template
from controlplane.client.selectors import LabelSelector, SelectorError, from_label_selector_proto, from_set
from protos.skiff.api.v1 import apps_pb2, core_pb2, meta_pb2

SPEC = Path("spec")
ACCESS_MODES = ("ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod")
STATEFULSET_UPDATE_FORBIDDEN = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
    "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")


def _selector_of(errs: ErrorList, spec: Message, what: str, path: Path) -> LabelSelector | None:
    """Required, valid and non-empty selector; returns it parsed, or None when unusable."""
    selector = spec.selector if spec.HasField("selector") else None
    if selector is None:
        errs.required(path)
    else:
        validate_label_selector(errs, selector, path)
        if not selector.match_labels and not selector.match_expressions:
            errs.invalid(path, go_label_selector(selector), f"empty selector is invalid for {what}")
    try:
        return from_label_selector_proto(selector)
    except SelectorError:
        return None  # the problem is already reported by validate_label_selector


def _validate_template(errs: ErrorList, template: core_pb2.PodTemplateSpec, selector: LabelSelector | None,
                       path: Path, kind: str, extra_volumes: frozenset[str] = frozenset()) -> None:
    """A workload's template: matches the selector, valid, restartPolicy Always, no deadline."""
    if selector is not None and not selector.empty and not selector.matches(template.metadata.labels):
        errs.invalid(path.child("metadata", "labels"), dict(template.metadata.labels),
                     "`selector` does not match template `labels`")
    validate_pod_template(errs, template, path, extra_volumes)
    if template.spec.restart_policy != "Always":
        errs.not_supported(path.child("spec", "restartPolicy"), template.spec.restart_policy, ["Always"])
    if template.spec.HasField("active_deadline_seconds"):
        errs.forbidden(path.child("spec", "activeDeadlineSeconds"),
                       f"activeDeadlineSeconds in {kind} is not Supported")


def _validate_optional_nonnegative(errs: ErrorList, spec: Message, field_name: str, path: Path) -> None:
    if spec.HasField(field_name):
        errs.nonnegative(path, getattr(spec, field_name))


# --- ReplicaSet and ReplicationController --------------------------------------------------

def validate_replica_set(errs: ErrorList, rs: apps_pb2.ReplicaSet) -> None:
    spec = rs.spec
    _validate_optional_nonnegative(errs, spec, "replicas", SPEC.child("replicas"))
    errs.nonnegative(SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    selector = _selector_of(errs, spec, "deployment", SPEC.child("selector"))
    _validate_template(errs, spec.template, selector, SPEC.child("template"), "ReplicaSet")
    _validate_counts(errs, rs.status, ("replicas", "fully_labeled_replicas", "ready_replicas",
                                       "available_replicas", "observed_generation"))


def validate_replication_controller(errs: ErrorList, rc: core_pb2.ReplicationController) -> None:
    spec = rc.spec
    errs.nonnegative(SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    if not spec.selector:
        errs.required(SPEC.child("selector"))
    names.validate_labels(errs, SPEC.child("selector"), spec.selector)
    _validate_optional_nonnegative(errs, spec, "replicas", SPEC.child("replicas"))
    if not spec.HasField("template"):
        errs.required(SPEC.child("template"))
    else:
        try:
            selector: LabelSelector | None = from_set(spec.selector)
        except SelectorError:
            selector = None
        _validate_template(errs, spec.template, selector, SPEC.child("template"), "ReplicationController")
    _validate_counts(errs, rc.status, ("replicas", "fully_labeled_replicas", "ready_replicas",
                                       "available_replicas", "observed_generation"))


# --- Deployment ----------------------------------------------------------------------------

def validate_deployment(errs: ErrorList, d: apps_pb2.Deployment) -> None:
    spec = d.spec
    _validate_optional_nonnegative(errs, spec, "replicas", SPEC.child("replicas"))
    selector = _selector_of(errs, spec, "deployment", SPEC.child("selector"))
    _validate_template(errs, spec.template, selector, SPEC.child("template"), "ReplicaSet")
    _validate_deployment_strategy(errs, spec.strategy, SPEC.child("strategy"))
    errs.nonnegative(SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    _validate_optional_nonnegative(errs, spec, "revision_history_limit", SPEC.child("revisionHistoryLimit"))
    if spec.HasField("progress_deadline_seconds"):
        path = SPEC.child("progressDeadlineSeconds")
        errs.nonnegative(path, spec.progress_deadline_seconds)
        if spec.progress_deadline_seconds <= spec.min_ready_seconds:
            errs.invalid(path, spec.progress_deadline_seconds, "must be greater than minReadySeconds")
    _validate_counts(errs, d.status, ("observed_generation", "replicas", "updated_replicas", "ready_replicas",
                                      "available_replicas", "unavailable_replicas", "collision_count"))


def _validate_deployment_strategy(errs: ErrorList, strategy: apps_pb2.DeploymentStrategy, path: Path) -> None:
    if strategy.type == "Recreate":
        if strategy.HasField("rolling_update"):
            errs.forbidden(path.child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'")
    elif strategy.type == "RollingUpdate":
        if not strategy.HasField("rolling_update"):
            errs.required(path.child("rollingUpdate"), "this should be defaulted and never be nil")
            return
        ru, ru_path = strategy.rolling_update, path.child("rollingUpdate")
        validate_positive_int_or_percent(errs, ru.max_unavailable, ru_path.child("maxUnavailable"))
        validate_positive_int_or_percent(errs, ru.max_surge, ru_path.child("maxSurge"))
        if int_or_percent_value(ru.max_unavailable) == 0 and int_or_percent_value(ru.max_surge) == 0:
            errs.invalid(ru_path.child("maxUnavailable"), go_int_or_string(ru.max_unavailable),
                         "may not be 0 when `maxSurge` is 0")
        not_more_than_100_percent(errs, ru.max_unavailable, ru_path.child("maxUnavailable"))
    else:
        errs.not_supported(path.child("type"), strategy.type, ["Recreate", "RollingUpdate"])


# --- DaemonSet -----------------------------------------------------------------------------

def validate_daemon_set(errs: ErrorList, ds: apps_pb2.DaemonSet) -> None:
    spec = ds.spec
    selector = _selector_of(errs, spec, "daemonset", SPEC.child("selector"))
    if selector is not None and not selector.matches(spec.template.metadata.labels) and not selector.empty:
        errs.invalid(SPEC.child("template", "metadata", "labels"), dict(spec.template.metadata.labels),
                     "`selector` does not match template `labels`")
    template_path = SPEC.child("template")
    validate_pod_template(errs, spec.template, template_path)
    if spec.template.spec.restart_policy != "Always":
        errs.not_supported(template_path.child("spec", "restartPolicy"), spec.template.spec.restart_policy,
                           ["Always"])
    if spec.template.spec.HasField("active_deadline_seconds"):
        errs.invalid(template_path.child("spec", "activeDeadlineSeconds"),
                     spec.template.spec.active_deadline_seconds, "activeDeadlineSeconds must be nil for daemonset")
    errs.nonnegative(SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    _validate_daemon_set_strategy(errs, spec.update_strategy, SPEC.child("updateStrategy"))
    _validate_optional_nonnegative(errs, spec, "revision_history_limit", SPEC.child("revisionHistoryLimit"))
    _validate_counts(errs, ds.status, ("current_number_scheduled", "number_misscheduled",
                                       "desired_number_scheduled", "number_ready", "observed_generation",
                                       "updated_number_scheduled", "number_available", "number_unavailable",
                                       "collision_count"))


def _validate_daemon_set_strategy(errs: ErrorList, strategy: apps_pb2.DaemonSetUpdateStrategy, path: Path) -> None:
    if strategy.type == "OnDelete":
        return
    if strategy.type != "RollingUpdate":
        errs.not_supported(path.child("type"), strategy.type, ["RollingUpdate", "OnDelete"])
        return
    if not strategy.HasField("rolling_update"):
        errs.required(path.child("rollingUpdate"))
        return
    ru, ru_path = strategy.rolling_update, path.child("rollingUpdate")
    validate_positive_int_or_percent(errs, ru.max_unavailable, ru_path.child("maxUnavailable"))
    validate_positive_int_or_percent(errs, ru.max_surge, ru_path.child("maxSurge"))
    not_more_than_100_percent(errs, ru.max_unavailable, ru_path.child("maxUnavailable"))
    not_more_than_100_percent(errs, ru.max_surge, ru_path.child("maxSurge"))
    unavailable = int_or_percent_value(ru.max_unavailable) != 0
    surge = int_or_percent_value(ru.max_surge) != 0
    if unavailable and surge:
        errs.invalid(ru_path.child("maxSurge"), go_int_or_string(ru.max_surge),
                     "may not be set when maxUnavailable is non-zero")
    elif not unavailable and not surge:
        errs.required(ru_path.child("maxUnavailable"), "cannot be 0 when maxSurge is 0")


# --- StatefulSet ---------------------------------------------------------------------------

def validate_stateful_set(errs: ErrorList, sts: apps_pb2.StatefulSet) -> None:
    spec = sts.spec
    policy = spec.pod_management_policy
    if not policy:
        errs.required(SPEC.child("podManagementPolicy"))
    elif policy not in ("OrderedReady", "Parallel"):
        errs.invalid(SPEC.child("podManagementPolicy"), policy, "must be 'OrderedReady' or 'Parallel'")
    _validate_stateful_set_strategy(errs, spec.update_strategy, SPEC.child("updateStrategy"))
    if spec.HasField("persistent_volume_claim_retention_policy"):
        retention = spec.persistent_volume_claim_retention_policy
        path = SPEC.child("persistentVolumeClaimRetentionPolicy")
        for value, json_name in ((retention.when_deleted, "whenDeleted"), (retention.when_scaled, "whenScaled")):
            if value not in ("Retain", "Delete"):
                errs.not_supported(path.child(json_name), value, ["Retain", "Delete"])
    _validate_optional_nonnegative(errs, spec, "replicas", SPEC.child("replicas"))
    if spec.HasField("ordinals"):
        errs.nonnegative(SPEC.child("ordinals.start"), spec.ordinals.start)
    selector = _selector_of(errs, spec, "statefulset", SPEC.child("selector"))
    # Kubernetes skips the pod spec of a StatefulSet's template (its mounts may name claim
    # templates); skiff validates it, counting the claim templates as volumes.
    claims = frozenset(c.metadata.name for c in spec.volume_claim_templates)
    _validate_template(errs, spec.template, selector, SPEC.child("template"), "StatefulSet", claims)
    errs.nonnegative(SPEC.child("minReadySeconds"), spec.min_ready_seconds)
    _validate_optional_nonnegative(errs, spec, "revision_history_limit", SPEC.child("revisionHistoryLimit"))
    if spec.service_name:
        errs.invalid_each(SPEC.child("serviceName"), spec.service_name, names.is_dns1123_label(spec.service_name))
    _validate_claim_templates(errs, spec.volume_claim_templates, SPEC.child("volumeClaimTemplates"))
    _validate_counts(errs, sts.status, ("observed_generation", "replicas", "ready_replicas", "current_replicas",
                                        "updated_replicas", "available_replicas", "collision_count"))


def _validate_stateful_set_strategy(errs: ErrorList, strategy: apps_pb2.StatefulSetUpdateStrategy,
                                    path: Path) -> None:
    if not strategy.type:
        errs.required(path)
    elif strategy.type == "OnDelete":
        if strategy.HasField("rolling_update"):
            errs.invalid(path.child("rollingUpdate"), None, "only allowed for updateStrategy 'RollingUpdate'")
    elif strategy.type == "RollingUpdate":
        if strategy.HasField("rolling_update"):
            ru, ru_path = strategy.rolling_update, path.child("rollingUpdate")
            _validate_optional_nonnegative(errs, ru, "partition", ru_path.child("partition"))
            if ru.HasField("max_unavailable"):
                mu_path = ru_path.child("maxUnavailable")
                validate_positive_int_or_percent(errs, ru.max_unavailable, mu_path)
                if int_or_percent_value(ru.max_unavailable) == 0:
                    errs.invalid(mu_path, go_int_or_string(ru.max_unavailable), "cannot be 0")
                not_more_than_100_percent(errs, ru.max_unavailable, mu_path)
    else:
        errs.invalid(path, strategy.type, "must be 'RollingUpdate' or 'OnDelete'")


def _validate_claim_templates(errs: ErrorList, claims: Sequence[core_pb2.PersistentVolumeClaim],
                              path: Path) -> None:
    for i, claim in enumerate(claims):
        p = path.index(i)
        if not claim.metadata.name:
            errs.required(p.child("metadata", "name"), "name or generateName is required")
        else:
            errs.invalid_each(p.child("metadata", "name"), claim.metadata.name,
                              names.is_dns1123_subdomain(claim.metadata.name))
        spec = p.child("spec")
        if not claim.spec.access_modes:
            errs.required(spec.child("accessModes"), "at least 1 access mode is required")
        for mode in claim.spec.access_modes:
            if mode not in ACCESS_MODES:
                errs.not_supported(spec.child("accessModes"), mode, ACCESS_MODES)
        requests = claim.spec.resources.requests
        if "storage" not in requests:
            errs.required(spec.child("resources").key("storage"))
        for name in sorted(requests):
            validate_resource_quantity(errs, spec.child("resources", "requests").key(name), name, requests[name])
        if claim.spec.HasField("volume_mode") and claim.spec.volume_mode not in ("Block", "Filesystem"):
            errs.not_supported(spec.child("volumeMode"), claim.spec.volume_mode, ["Block", "Filesystem"])


# --- updates and status --------------------------------------------------------------------

def validate_selector_update(errs: ErrorList, new: Message, old: Message) -> None:
    """apps/v1: spec.selector is immutable."""
    new_sel: meta_pb2.LabelSelector = new.spec.selector
    old_sel: meta_pb2.LabelSelector = old.spec.selector
    if new_sel != old_sel:
        errs.invalid(SPEC.child("selector"), go_label_selector(new_sel), "field is immutable")


def validate_stateful_set_update(errs: ErrorList, new: apps_pb2.StatefulSet, old: apps_pb2.StatefulSet) -> None:
    """Kubernetes copies the mutable fields from old into new; anything left different is forbidden."""
    clone = apps_pb2.StatefulSetSpec()
    clone.CopyFrom(new.spec)
    for field_name in ("replicas", "template", "update_strategy", "min_ready_seconds",
                       "persistent_volume_claim_retention_policy", "ordinals"):
        clone.ClearField(field_name)
        if _present(old.spec, field_name):
            value = getattr(old.spec, field_name)
            if isinstance(value, Message):
                getattr(clone, field_name).CopyFrom(value)
            else:
                setattr(clone, field_name, value)
    if clone != old.spec:
        errs.forbidden(SPEC, STATEFULSET_UPDATE_FORBIDDEN)


def _present(msg: Message, field_name: str) -> bool:
    """HasField for fields with presence; plain scalars always count as present."""
    try:
        return msg.HasField(field_name)
    except ValueError:
        return True


def _validate_counts(errs: ErrorList, status: Message, fields: tuple[str, ...]) -> None:
    """Every count >= 0; ready/available pods never more than the total, available <= ready."""
    path = Path("status")
    for field_name in fields:
        desc = status.DESCRIPTOR.fields_by_name[field_name]
        errs.nonnegative(path.child(desc.json_name), getattr(status, field_name))
    total = getattr(status, "replicas", None)
    if total is None or total < 0:
        return
    # updated/current counts are left out: they may legitimately pass the total mid-rollout.
    for field_name in ("fully_labeled_replicas", "ready_replicas", "available_replicas"):
        if field_name in fields and getattr(status, field_name) > total:
            json_name = status.DESCRIPTOR.fields_by_name[field_name].json_name
            errs.invalid(path.child(json_name), getattr(status, field_name), "cannot be greater than status.replicas")
    if "ready_replicas" in fields and status.available_replicas > status.ready_replicas:
        errs.invalid(path.child("availableReplicas"), status.available_replicas,
                     "cannot be greater than readyReplicas")
