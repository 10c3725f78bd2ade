"""Pods and pod templates: the pod spec, volumes, and what a pod update may change.

- `validate_pod_spec`: Kubernetes' ValidatePodSpec for the fields skiff models: volumes (a
  DNS-1123 label name, unique, exactly one source, each source's required fields), containers
  (containers.py), restartPolicy and dnsPolicy enums, node selector labels, names that must be
  DNS names, activeDeadlineSeconds 1..2^31-1, tolerations, affinity, topology spread, host
  aliases, readiness gates, OS, preemption policy, pod security context ranges, overhead.
- `validate_pod_template`: template labels and annotations, then the pod spec.
- `validate_pod` / `validate_pod_update`: Kubernetes' pod update rule: only
  spec.containers[*].image, spec.initContainers[*].image, spec.activeDeadlineSeconds (set, or
  lowered), spec.tolerations (additions, or a changed tolerationSeconds) and
  spec.terminationGracePeriodSeconds (from negative to 1) may change; the Forbidden message
  ends with the changed paths instead of Kubernetes' struct diff.
- `validate_pod_status`: phase values, no way back from Succeeded/Failed, IPs, restart counts.
"""
from __future__ import annotations

from typing import Sequence

from google.protobuf.message import Message

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.containers import (
    parse_quantity, validate_containers, validate_local_descending_path, validate_resource_quantity)
from controlplane.apiserver.validation.field import ErrorList, Path
from controlplane.apiserver.validation.meta import changed_fields
from controlplane.apiserver.validation.scheduling import (
    validate_affinity, validate_tolerations, validate_topology_spread)
from protos.skiff.api.v1 import core_pb2

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
MAX_INT32 = 2**31 - 1
FILE_MODE_ERROR = "must be a number between 0 and 0777 (octal), both inclusive"
# Kubernetes checks sources in this order; every one after the first is "Forbidden".
VOLUME_SOURCES = (("host_path", "hostPath"), ("empty_dir", "emptyDir"), ("secret", "secret"),
                  ("nfs", "nfs"), ("persistent_volume_claim", "persistentVolumeClaim"),
                  ("downward_api", "downwardAPI"), ("config_map", "configMap"),
                  ("projected", "projected"))
POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
    "to 1 if it was previously negative)")


def validate_pod_spec(errs: ErrorList, spec: core_pb2.PodSpec, path: Path,
                      extra_volumes: frozenset[str] = frozenset()) -> None:
    """`extra_volumes`: names mounts may use beyond spec.volumes (a StatefulSet's claims)."""
    volumes = _validate_volumes(errs, spec, path.child("volumes")) | extra_volumes
    validate_containers(errs, spec, path, volumes)
    _validate_choice(errs, path.child("restartPolicy"), spec.restart_policy, RESTART_POLICIES)
    _validate_choice(errs, path.child("dnsPolicy"), spec.dns_policy, DNS_POLICIES)
    _validate_dns_config(errs, spec, path)
    names.validate_labels(errs, path.child("nodeSelector"), spec.node_selector)
    for value, json_name in ((spec.service_account_name, "serviceAccountName"), (spec.node_name, "nodeName"),
                             (spec.scheduler_name, "schedulerName"),
                             (spec.priority_class_name, "priorityClassName"),
                             (spec.runtime_class_name, "runtimeClassName")):
        if value:
            errs.invalid_each(path.child(json_name), value, names.is_dns1123_subdomain(value))
    for value, json_name in ((spec.hostname, "hostname"), (spec.subdomain, "subdomain")):
        if value:
            errs.invalid_each(path.child(json_name), value, names.is_dns1123_label(value))
    if spec.HasField("active_deadline_seconds") and not 1 <= spec.active_deadline_seconds <= MAX_INT32:
        errs.invalid(path.child("activeDeadlineSeconds"), spec.active_deadline_seconds,
                     f"must be between 1 and {MAX_INT32}, inclusive")
    if spec.HasField("termination_grace_period_seconds"):
        errs.nonnegative(path.child("terminationGracePeriodSeconds"), spec.termination_grace_period_seconds)
    validate_tolerations(errs, spec.tolerations, path.child("tolerations"))
    if spec.HasField("affinity"):
        validate_affinity(errs, spec.affinity, path.child("affinity"))
    validate_topology_spread(errs, spec.topology_spread_constraints, path.child("topologySpreadConstraints"))
    _validate_misc(errs, spec, path)
    if spec.HasField("security_context"):
        _validate_pod_security(errs, spec.security_context, path.child("securityContext"))


def _validate_choice(errs: ErrorList, path: Path, value: str, supported: tuple[str, ...]) -> None:
    if not value:
        errs.required(path)
    elif value not in supported:
        errs.not_supported(path, value, supported)


def _validate_dns_config(errs: ErrorList, spec: core_pb2.PodSpec, path: Path) -> None:
    if spec.dns_policy == "None" and not spec.HasField("dns_config"):
        errs.required(path.child("dnsConfig"), "must provide `dnsConfig` when `dnsPolicy` is None")
        return
    if not spec.HasField("dns_config"):
        return
    cfg, p = spec.dns_config, path.child("dnsConfig")
    if spec.dns_policy == "None" and not cfg.nameservers:
        errs.required(p.child("nameservers"), "must provide at least one DNS nameserver when `dnsPolicy` is None")
    if len(cfg.nameservers) > 3:
        errs.invalid(p.child("nameservers"), list(cfg.nameservers), "must not have more than 3 nameservers")
    for i, ns in enumerate(cfg.nameservers):
        errs.invalid_each(p.child("nameservers").index(i), ns, names.is_valid_ip(ns))
    if len(cfg.searches) > 32:
        errs.invalid(p.child("searches"), list(cfg.searches), "must not have more than 32 search paths")
    for i, option in enumerate(cfg.options):
        if not option.name:
            errs.required(p.child("options").index(i), "Option.Name must not be empty")


def _validate_misc(errs: ErrorList, spec: core_pb2.PodSpec, path: Path) -> None:
    for i, alias in enumerate(spec.host_aliases):
        p = path.child("hostAliases").index(i)
        errs.invalid_each(p.child("ip"), alias.ip, names.is_valid_ip(alias.ip))
        for hostname in alias.hostnames:
            errs.invalid_each(p.child("hostnames"), hostname, names.is_dns1123_subdomain(hostname))
    for i, gate in enumerate(spec.readiness_gates):
        errs.invalid_each(path.child("readinessGates").index(i).child("conditionType"), gate.condition_type,
                          names.is_qualified_name(gate.condition_type))
    if spec.HasField("os") and spec.os.name not in ("linux", "windows"):
        errs.not_supported(path.child("os", "name"), spec.os.name, ("linux", "windows"))
    if spec.HasField("preemption_policy") and spec.preemption_policy not in ("Never", "PreemptLowerPriority"):
        errs.not_supported(path.child("preemptionPolicy"), spec.preemption_policy, ("Never", "PreemptLowerPriority"))
    for name in sorted(spec.overhead):
        validate_resource_quantity(errs, path.child("overhead").key(name), name, spec.overhead[name])


def _validate_pod_security(errs: ErrorList, sc: core_pb2.PodSecurityContext, path: Path) -> None:
    ranged = [(sc.run_as_user, "runAsUser", sc.HasField("run_as_user")),
              (sc.run_as_group, "runAsGroup", sc.HasField("run_as_group")),
              (sc.fs_group, "fsGroup", sc.HasField("fs_group"))]
    for value, json_name, present in ranged:
        if present and not 0 <= value <= MAX_INT32:
            errs.invalid(path.child(json_name), value, f"must be between 0 and {MAX_INT32}, inclusive")
    for i, gid in enumerate(sc.supplemental_groups):
        if not 0 <= gid <= MAX_INT32:
            errs.invalid(path.child("supplementalGroups").index(i), gid, f"must be between 0 and {MAX_INT32}, inclusive")
    if sc.HasField("fs_group_change_policy") and sc.fs_group_change_policy not in ("OnRootMismatch", "Always"):
        errs.not_supported(path.child("fsGroupChangePolicy"), sc.fs_group_change_policy, ("OnRootMismatch", "Always"))


# --- volumes -------------------------------------------------------------------------------

def _validate_volumes(errs: ErrorList, spec: core_pb2.PodSpec, path: Path) -> set[str]:
    """Every volume's problems; returns the set of volume names mounts may refer to."""
    seen: set[str] = set()
    for i, vol in enumerate(spec.volumes):
        p = path.index(i)
        _validate_volume_source(errs, vol, p)
        if not vol.name:
            errs.required(p.child("name"))
        else:
            errs.invalid_each(p.child("name"), vol.name, names.is_dns1123_label(vol.name))
        if vol.name in seen:
            errs.duplicate(p.child("name"), vol.name)
        seen.add(vol.name)
    return seen


def _validate_volume_source(errs: ErrorList, vol: core_pb2.Volume, path: Path) -> None:
    count = 0
    for field_name, json_name in VOLUME_SOURCES:
        if not vol.HasField(field_name):
            continue
        if count:
            errs.forbidden(path.child(json_name), "may not specify more than 1 volume type")
            continue
        count += 1
        _validate_one_source(errs, vol, field_name, path.child(json_name))
    if count == 0:
        errs.required(path, "must specify a volume type")


def _validate_one_source(errs: ErrorList, vol: core_pb2.Volume, field_name: str, p: Path) -> None:
    if field_name == "host_path":
        if not vol.host_path.path:
            errs.required(p.child("path"))
        elif ".." in vol.host_path.path.split("/"):
            errs.invalid(p.child("path"), vol.host_path.path, "must not contain '..'")
        if vol.host_path.HasField("type") and vol.host_path.type not in HOST_PATH_TYPES:
            errs.not_supported(p.child("type"), vol.host_path.type, HOST_PATH_TYPES)
    elif field_name == "empty_dir":
        if vol.empty_dir.size_limit:
            q = parse_quantity(errs, p.child("sizeLimit"), vol.empty_dir.size_limit)
            if q is not None and q.nanos < 0:
                errs.forbidden(p.child("sizeLimit"), "SizeLimit field must be a valid resource quantity")
    elif field_name == "secret":
        if not vol.secret.secret_name:
            errs.required(p.child("secretName"))
        _validate_items(errs, vol.secret.items, vol.secret, p)
    elif field_name == "config_map":
        if not vol.config_map.name:
            errs.required(p.child("name"))
        _validate_items(errs, vol.config_map.items, vol.config_map, p)
    elif field_name == "persistent_volume_claim":
        if not vol.persistent_volume_claim.claim_name:
            errs.required(p.child("claimName"))
    elif field_name == "nfs":
        if not vol.nfs.server:
            errs.required(p.child("server"))
        if not vol.nfs.path:
            errs.required(p.child("path"))
        elif not vol.nfs.path.startswith("/"):
            errs.invalid(p.child("path"), vol.nfs.path, "must be an absolute path")
    elif field_name == "downward_api":
        _validate_mode(errs, vol.downward_api, "default_mode", p.child("defaultMode"))
        for i, item in enumerate(vol.downward_api.items):
            _validate_downward_file(errs, item, p.child("items").index(i))
    elif field_name == "projected":
        _validate_projected(errs, vol.projected, p)


def _validate_mode(errs: ErrorList, msg: Message, field_name: str, path: Path) -> None:
    if msg.HasField(field_name):
        mode = getattr(msg, field_name)
        if not 0 <= mode <= 0o777:
            errs.invalid(path, mode, FILE_MODE_ERROR)


def _validate_items(errs: ErrorList, items: Sequence[core_pb2.KeyToPath], source: Message, path: Path) -> None:
    _validate_mode(errs, source, "default_mode", path.child("defaultMode"))
    for i, item in enumerate(items):
        p = path.child("items").index(i)
        if not item.key:
            errs.required(p.child("key"))
        _validate_relative_path(errs, item.path, p.child("path"))
        _validate_mode(errs, item, "mode", p.child("mode"))


def _validate_relative_path(errs: ErrorList, value: str, path: Path) -> None:
    if not value:
        errs.required(path)
        return
    validate_local_descending_path(errs, path, value)
    if value.startswith("..") and ".." not in value.split("/"):
        errs.invalid(path, value, "must not start with '..'")


def _validate_downward_file(errs: ErrorList, item: core_pb2.DownwardAPIVolumeFile, path: Path) -> None:
    _validate_relative_path(errs, item.path, path.child("path"))
    _validate_mode(errs, item, "mode", path.child("mode"))
    refs = [n for n in ("field_ref", "resource_field_ref") if item.HasField(n)]
    if len(refs) != 1:
        errs.invalid(path, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously"
                     if refs else "one of fieldRef and resourceFieldRef is required")


def _validate_projected(errs: ErrorList, projected: core_pb2.ProjectedVolumeSource, path: Path) -> None:
    _validate_mode(errs, projected, "default_mode", path.child("defaultMode"))
    kinds = (("secret", "secret"), ("downward_api", "downwardAPI"), ("config_map", "configMap"),
             ("service_account_token", "serviceAccountToken"))
    for i, source in enumerate(projected.sources):
        p = path.child("sources").index(i)
        present = [(n, j) for n, j in kinds if source.HasField(n)]
        if not present:
            errs.required(p, "must specify exactly 1 of: secret, downwardAPI, configMap, serviceAccountToken")
        for n, j in present[1:]:
            errs.forbidden(p.child(j), "may not specify more than 1 volume type per source")
        for n, j in present[:1]:
            if n == "service_account_token":
                _validate_relative_path(errs, source.service_account_token.path, p.child(j, "path"))
            elif n == "downward_api":
                for k, item in enumerate(source.downward_api.items):
                    _validate_downward_file(errs, item, p.child(j, "items").index(k))
            else:
                _validate_items(errs, getattr(source, n).items, getattr(source, n), p.child(j))


# --- pods and templates --------------------------------------------------------------------

def validate_pod_template(errs: ErrorList, template: core_pb2.PodTemplateSpec, path: Path,
                          extra_volumes: frozenset[str] = frozenset()) -> None:
    meta_path = path.child("metadata")
    names.validate_labels(errs, meta_path.child("labels"), template.metadata.labels)
    names.validate_annotations(errs, meta_path.child("annotations"), template.metadata.annotations)
    validate_pod_spec(errs, template.spec, path.child("spec"), extra_volumes)


def validate_pod_update(errs: ErrorList, new: core_pb2.Pod, old: core_pb2.Pod) -> None:
    spec_path = Path("spec")
    if len(new.spec.containers) != len(old.spec.containers):
        errs.forbidden(spec_path.child("containers"), "pod updates may not add or remove containers")
        return
    if len(new.spec.init_containers) != len(old.spec.init_containers):
        errs.forbidden(spec_path.child("initContainers"), "pod updates may not add or remove containers")
        return
    if not _validate_deadline_update(errs, new.spec, old.spec, spec_path.child("activeDeadlineSeconds")):
        return
    munged = core_pb2.PodSpec()
    munged.CopyFrom(new.spec)
    for ctr, old_ctr in zip(munged.containers, old.spec.containers):
        ctr.image = old_ctr.image
    for ctr, old_ctr in zip(munged.init_containers, old.spec.init_containers):
        ctr.image = old_ctr.image
    _copy_optional(munged, old.spec, "active_deadline_seconds")
    del munged.tolerations[:]
    munged.tolerations.extend(old.spec.tolerations)
    _validate_added_tolerations(errs, list(new.spec.tolerations), list(old.spec.tolerations),
                                spec_path.child("tolerations"))
    old_grace = old.spec.termination_grace_period_seconds
    if old.spec.HasField("termination_grace_period_seconds") and old_grace < 0 \
            and munged.termination_grace_period_seconds == 1:
        munged.termination_grace_period_seconds = old_grace
    if munged != old.spec:
        changed = changed_fields(old.spec, munged, spec_path)
        errs.forbidden(spec_path, POD_UPDATE_FORBIDDEN + "\nchanged: " + ", ".join(changed))


def _copy_optional(dst: core_pb2.PodSpec, src: core_pb2.PodSpec, field_name: str) -> None:
    if src.HasField(field_name):
        setattr(dst, field_name, getattr(src, field_name))
    else:
        dst.ClearField(field_name)


def _validate_deadline_update(errs: ErrorList, new: core_pb2.PodSpec, old: core_pb2.PodSpec, path: Path) -> bool:
    """Kubernetes: activeDeadlineSeconds may be set or lowered, never raised or removed."""
    if new.HasField("active_deadline_seconds"):
        value = new.active_deadline_seconds
        if not 0 <= value <= MAX_INT32:
            errs.invalid(path, value, f"must be between 0 and {MAX_INT32}, inclusive")
            return False
        if old.HasField("active_deadline_seconds") and old.active_deadline_seconds < value:
            errs.invalid(path, value, "must be less than or equal to previous value")
            return False
    elif old.HasField("active_deadline_seconds"):
        errs.invalid(path, None, "must not update from a positive integer to nil value")
    return True


def _validate_added_tolerations(errs: ErrorList, new: list[core_pb2.Toleration],
                                old: list[core_pb2.Toleration], path: Path) -> None:
    def same_but_seconds(a: core_pb2.Toleration, b: core_pb2.Toleration) -> bool:
        return (a.key, a.operator, a.value, a.effect) == (b.key, b.operator, b.value, b.effect)

    for old_t in old:
        if not any(same_but_seconds(old_t, new_t) for new_t in new):
            errs.forbidden(path, "existing toleration can not be modified except its tolerationSeconds")
            return


def validate_pod_status(errs: ErrorList, pod: core_pb2.Pod, old: core_pb2.Pod | None) -> None:
    status, path = pod.status, Path("status")
    if status.phase and status.phase not in POD_PHASES:
        errs.not_supported(path.child("phase"), status.phase, POD_PHASES)
    if old is not None and old.status.phase in ("Succeeded", "Failed") and status.phase != old.status.phase:
        target = status.phase or '""'
        errs.forbidden(path.child("phase"),
                       f"cannot transition from terminal phase {old.status.phase} to {target}")
    for value, json_name in ((status.pod_ip, "podIP"), (status.host_ip, "hostIP")):
        if value:
            errs.invalid_each(path.child(json_name), value, names.is_valid_ip(value))
    for i, ip in enumerate(status.pod_ips):
        errs.invalid_each(path.child("podIPs").index(i).child("ip"), ip.ip, names.is_valid_ip(ip.ip))
    for field_name, json_name in (("init_container_statuses", "initContainerStatuses"),
                                  ("container_statuses", "containerStatuses")):
        for i, cs in enumerate(getattr(status, field_name)):
            errs.nonnegative(path.child(json_name).index(i).child("restartCount"), cs.restart_count)
