"""Containers: names, images, ports, env, resources, volume mounts, probes, lifecycle hooks.

Kubernetes' rules (core/validation's validateContainers and friends), with its messages:
- names are DNS-1123 labels, unique across init and regular containers; image is required;
- ports: containerPort required and 1-65535, hostPort 1-65535 when set (equal to containerPort
  on the host network), names IANA service names unique within the container, protocol one of
  SCTP, TCP, UDP; a host port (protocol/hostIP/port) may be claimed once per pod;
- env: names required and valid; valueFrom names exactly one source; envFrom one source;
- resources: names standard (cpu, memory, ephemeral-storage, hugepages-*) or domain-qualified,
  each quantity parses and is >= 0, extended resources whole numbers with request == limit,
  and a request never above its limit;
- volumeMounts: name a pod volume, mountPath required and unique, subPath relative without '..';
- probes and lifecycle handlers: exactly one handler; thresholds >= 1 (Kubernetes defaults 0 to
  1, so only an undefaulted object can carry 0), delays >= 0; liveness and startup probes need
  successThreshold 1; imagePullPolicy and terminationMessagePolicy from their enums.
"""
from __future__ import annotations

from controlplane.apiserver.validation import names
from controlplane.apiserver.validation.field import ErrorList, Path
from controlplane.apiserver.validation.meta import validate_port_num_or_name
from controlplane.client import quantity
from controlplane.client.pods import termination_grace
from protos.skiff.api.v1 import core_pb2

PROTOCOLS = ("SCTP", "TCP", "UDP")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
MOUNT_PROPAGATIONS = ("Bidirectional", "HostToContainer", "None")
STANDARD_CONTAINER_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage"})
QUANTITY_FORMAT = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
FIELD_REF_PATHS = ("metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                   "metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP",
                   "status.hostIPs", "status.podIP", "status.podIPs")
RESOURCE_REF_NAMES = ("limits.cpu", "limits.ephemeral-storage", "limits.memory",
                      "requests.cpu", "requests.ephemeral-storage", "requests.memory")


def validate_containers(errs: ErrorList, spec: core_pb2.PodSpec, path: Path, volumes: set[str]) -> None:
    """spec.initContainers and spec.containers, plus the pod-wide checks across them."""
    if not spec.containers:
        errs.required(path.child("containers"))
    seen: set[str] = set()
    host_ports: set[str] = set()
    grace = termination_grace(spec)
    for field_name, init in (("initContainers", True), ("containers", False)):
        for i, ctr in enumerate(getattr(spec, "init_containers" if init else "containers")):
            ctr_path = path.child(field_name).index(i)
            if ctr.name and ctr.name in seen:
                errs.duplicate(ctr_path.child("name"), ctr.name)
            seen.add(ctr.name)
            _validate_container(errs, ctr, ctr_path, volumes, spec.host_network, grace)
            _validate_container_kind(errs, ctr, ctr_path, init)
            _accumulate_host_ports(errs, ctr, ctr_path, host_ports)


def _validate_container(errs: ErrorList, ctr: core_pb2.Container, path: Path, volumes: set[str],
                        host_network: bool, grace: int) -> None:
    if not ctr.name:
        errs.required(path.child("name"))
    else:
        errs.invalid_each(path.child("name"), ctr.name, names.is_dns1123_label(ctr.name))
    if not ctr.image:
        errs.required(path.child("image"))
    _validate_enum(errs, path.child("imagePullPolicy"), ctr.image_pull_policy, PULL_POLICIES)
    policy = ctr.termination_message_policy
    if policy not in ("File", "FallbackToLogsOnError"):
        detail = "must be 'File' or 'FallbackToLogsOnError'"
        if not policy:
            errs.required(path.child("terminationMessagePolicy"), detail)
        else:
            errs.invalid(path.child("terminationMessagePolicy"), policy, detail)
    _validate_ports(errs, ctr, path.child("ports"), host_network)
    _validate_env(errs, ctr, path)
    validate_resources(errs, ctr.resources, path.child("resources"))
    _validate_mounts(errs, ctr, path.child("volumeMounts"), volumes)
    for probe_name in ("liveness_probe", "readiness_probe", "startup_probe"):
        if ctr.HasField(probe_name):
            json_name = core_pb2.Container.DESCRIPTOR.fields_by_name[probe_name].json_name
            _validate_probe(errs, getattr(ctr, probe_name), path.child(json_name), json_name, grace)
    if ctr.HasField("lifecycle"):
        for hook in ("post_start", "pre_stop"):
            if ctr.lifecycle.HasField(hook):
                hook_path = path.child("lifecycle", "postStart" if hook == "post_start" else "preStop")
                validate_handler(errs, getattr(ctr.lifecycle, hook), hook_path, grace)


def _validate_container_kind(errs: ErrorList, ctr: core_pb2.Container, path: Path, init: bool) -> None:
    """Rules that differ between init containers (sidecars allowed) and regular ones."""
    if not init:
        if ctr.HasField("restart_policy"):
            errs.forbidden(path.child("restartPolicy"), "may not be set for non-init containers")
        return
    if ctr.HasField("restart_policy") and ctr.restart_policy != "Always":
        errs.not_supported(path.child("restartPolicy"), ctr.restart_policy, ["Always"])
    if ctr.HasField("restart_policy") and ctr.restart_policy == "Always":
        return
    for probe_name, json_name in (("liveness_probe", "livenessProbe"),
                                  ("readiness_probe", "readinessProbe"),
                                  ("startup_probe", "startupProbe")):
        if ctr.HasField(probe_name):
            errs.forbidden(path.child(json_name),
                           "may not be set for init containers without restartPolicy=Always")


def _validate_enum(errs: ErrorList, path: Path, value: str, supported: tuple[str, ...]) -> None:
    """Required when empty, Unsupported when not one of `supported`."""
    if not value:
        errs.required(path)
    elif value not in supported:
        errs.not_supported(path, value, supported)


def _validate_ports(errs: ErrorList, ctr: core_pb2.Container, path: Path, host_network: bool) -> None:
    port_names: set[str] = set()
    for i, port in enumerate(ctr.ports):
        p = path.index(i)
        if port.name:
            msgs = names.is_valid_port_name(port.name)
            if msgs:
                errs.invalid_each(p.child("name"), port.name, msgs)
            elif port.name in port_names:
                errs.duplicate(p.child("name"), port.name)
            port_names.add(port.name)
        if port.container_port == 0:
            errs.required(p.child("containerPort"))
        else:
            errs.invalid_each(p.child("containerPort"), port.container_port,
                              names.is_valid_port_num(port.container_port))
        if port.host_port != 0:
            errs.invalid_each(p.child("hostPort"), port.host_port, names.is_valid_port_num(port.host_port))
            if host_network and port.host_port != port.container_port:
                errs.invalid(p.child("hostPort"), port.host_port,
                             "must match `containerPort` when `hostNetwork` is true")
        _validate_enum(errs, p.child("protocol"), port.protocol, PROTOCOLS)


def _accumulate_host_ports(errs: ErrorList, ctr: core_pb2.Container, path: Path, seen: set[str]) -> None:
    for i, port in enumerate(ctr.ports):
        if port.host_port == 0:
            continue
        key = f"{port.protocol}/{port.host_ip}/{port.host_port}"
        if key in seen:
            errs.duplicate(path.child("ports").index(i).child("hostPort"), key)
        seen.add(key)


def _validate_env(errs: ErrorList, ctr: core_pb2.Container, path: Path) -> None:
    for i, env in enumerate(ctr.env):
        p = path.child("env").index(i)
        if not env.name:
            errs.required(p.child("name"))
        else:
            errs.invalid_each(p.child("name"), env.name, names.is_env_var_name(env.name))
        if env.HasField("value_from"):
            _validate_env_source(errs, env, p.child("valueFrom"))
    for i, source in enumerate(ctr.env_from):
        p = path.child("envFrom").index(i)
        if source.prefix:
            errs.invalid_each(p.child("prefix"), source.prefix, names.is_env_var_name(source.prefix))
        refs = [n for n in ("config_map_ref", "secret_ref") if source.HasField(n)]
        if not refs:
            errs.invalid(p, "", "must specify one of: `configMapRef` or `secretRef`")
        elif len(refs) > 1:
            errs.invalid(p, "", "may not have more than one field specified at a time")
        for ref_name in refs:
            ref = getattr(source, ref_name)
            ref_path = p.child("configMapRef" if ref_name == "config_map_ref" else "secretRef", "name")
            if not ref.name:
                errs.required(ref_path)
            else:
                errs.invalid_each(ref_path, ref.name, names.is_dns1123_subdomain(ref.name))


def _validate_env_source(errs: ErrorList, env: core_pb2.EnvVar, path: Path) -> None:
    src = env.value_from
    kinds = [n for n in ("field_ref", "resource_field_ref", "config_map_key_ref", "secret_key_ref")
             if src.HasField(n)]
    if not kinds:
        errs.invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                               "`configMapKeyRef` or `secretKeyRef`")
        return
    if len(kinds) > 1:
        errs.invalid(path, "", "may not have more than one field specified at a time")
    if env.value:
        errs.invalid(path, "", "may not be specified when `value` is not empty")
    if src.HasField("field_ref"):
        ref_path = path.child("fieldRef")
        if not src.field_ref.api_version:
            errs.required(ref_path.child("apiVersion"))
        fp = src.field_ref.field_path
        base = fp.split("[", 1)[0]
        if not fp:
            errs.required(ref_path.child("fieldPath"))
        elif base not in FIELD_REF_PATHS or (base != fp and base not in ("metadata.labels", "metadata.annotations")):
            errs.not_supported(ref_path.child("fieldPath"), fp, FIELD_REF_PATHS)
    if src.HasField("resource_field_ref"):
        resource = src.resource_field_ref.resource
        ref_path = path.child("resourceFieldRef", "resource")
        if not resource:
            errs.required(ref_path)
        elif resource not in RESOURCE_REF_NAMES:
            errs.not_supported(ref_path, resource, RESOURCE_REF_NAMES)
    for ref_name, json_name in (("config_map_key_ref", "configMapKeyRef"), ("secret_key_ref", "secretKeyRef")):
        if src.HasField(ref_name):
            ref = getattr(src, ref_name)
            if not ref.name:
                errs.required(path.child(json_name, "name"))
            if not ref.key:
                errs.required(path.child(json_name, "key"))
            else:
                errs.invalid_each(path.child(json_name, "key"), ref.key, names.is_config_map_key(ref.key))


# --- resources -----------------------------------------------------------------------------

def _is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def _overcommit_allowed(name: str) -> bool:
    return _is_native(name) and not name.startswith("hugepages-")


def parse_quantity(errs: ErrorList, path: Path, text: str) -> quantity.Quantity | None:
    """The parsed quantity, or None after recording why it does not parse."""
    try:
        return quantity.parse(text)
    except ValueError:
        errs.invalid(path, text, QUANTITY_FORMAT)
        return None


def validate_resource_quantity(errs: ErrorList, path: Path, name: str, text: str) -> quantity.Quantity | None:
    q = parse_quantity(errs, path, text)
    if q is None:
        return None
    if q.nanos < 0:
        errs.invalid(path, str(q), "must be greater than or equal to 0")
    elif not _is_native(name) and q.nanos % quantity.NANO:
        errs.invalid(path, str(q), "must be an integer")
    return q


def _validate_resource_name(errs: ErrorList, path: Path, name: str) -> None:
    errs.invalid_each(path, name, names.is_qualified_name(name))
    if "/" not in name:
        if name not in STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            errs.invalid(path, name, "must be a standard resource for containers")
    elif not _is_native(name) and name.startswith("requests."):
        errs.invalid(path, name, "doesn't follow extended resource name standard")


def validate_resources(errs: ErrorList, res: core_pb2.ResourceRequirements, path: Path) -> None:
    limits: dict[str, quantity.Quantity] = {}
    for name in sorted(res.limits):
        p = path.child("limits").key(name)
        _validate_resource_name(errs, p, name)
        q = validate_resource_quantity(errs, p, name, res.limits[name])
        if q is not None:
            limits[name] = q
    for name in sorted(res.requests):
        p = path.child("requests").key(name)
        _validate_resource_name(errs, p, name)
        q = validate_resource_quantity(errs, p, name, res.requests[name])
        if q is None:
            continue
        limit = limits.get(name)
        if limit is not None:
            if q != limit and not _overcommit_allowed(name):
                errs.invalid(path.child("requests"), str(q), f"must be equal to {name} limit of {limit}")
            elif q > limit:
                errs.invalid(path.child("requests"), str(q),
                             f"must be less than or equal to {name} limit of {limit}")
        elif name not in res.limits and not _overcommit_allowed(name):
            errs.required(path.child("limits"), "Limit must be set for non overcommitable resources")


# --- mounts --------------------------------------------------------------------------------

def validate_local_descending_path(errs: ErrorList, path: Path, target: str) -> None:
    if target.startswith("/"):
        errs.invalid(path, target, "must be a relative path")
    if ".." in target.split("/"):
        errs.invalid(path, target, "must not contain '..'")


def _validate_mounts(errs: ErrorList, ctr: core_pb2.Container, path: Path, volumes: set[str]) -> None:
    mount_points: set[str] = set()
    privileged = ctr.HasField("security_context") and ctr.security_context.privileged
    for i, mnt in enumerate(ctr.volume_mounts):
        p = path.index(i)
        if not mnt.name:
            errs.required(p.child("name"))
        if mnt.name not in volumes:
            errs.not_found(p.child("name"), mnt.name)
        if not mnt.mount_path:
            errs.required(p.child("mountPath"))
        elif mnt.mount_path in mount_points:
            errs.invalid(p.child("mountPath"), mnt.mount_path, "must be unique")
        mount_points.add(mnt.mount_path)
        if mnt.sub_path:
            validate_local_descending_path(errs, p.child("subPath"), mnt.sub_path)
        if mnt.sub_path_expr:
            if mnt.sub_path:
                errs.invalid(p.child("subPathExpr"), mnt.sub_path_expr,
                             "subPathExpr and subPath are mutually exclusive")
            validate_local_descending_path(errs, p.child("subPathExpr"), mnt.sub_path_expr)
        if mnt.HasField("mount_propagation"):
            prop = mnt.mount_propagation
            if prop not in MOUNT_PROPAGATIONS:
                errs.not_supported(p.child("mountPropagation"), prop, MOUNT_PROPAGATIONS)
            elif prop == "Bidirectional" and not privileged:
                errs.forbidden(p.child("mountPropagation"),
                               "Bidirectional mount propagation is available only to privileged containers")


# --- probes and handlers -------------------------------------------------------------------

_PROBE_HANDLERS = (("exec", "exec"), ("http_get", "httpGet"), ("tcp_socket", "tcpSocket"), ("grpc", "grpc"))
_HOOK_HANDLERS = (("exec", "exec"), ("http_get", "httpGet"), ("tcp_socket", "tcpSocket"), ("sleep", "sleep"))


def validate_handler(errs: ErrorList, handler: core_pb2.Probe | core_pb2.LifecycleHandler,
                     path: Path, grace: int) -> None:
    """Exactly one handler; each valid on its own."""
    kinds = _PROBE_HANDLERS if isinstance(handler, core_pb2.Probe) else _HOOK_HANDLERS
    count = 0
    for field_name, json_name in kinds:
        if not handler.HasField(field_name):
            continue
        if count:
            errs.forbidden(path.child(json_name), "may not specify more than 1 handler type")
            continue
        count += 1
        _validate_action(errs, getattr(handler, field_name), path.child(json_name), grace)
    if count == 0:
        errs.required(path, "must specify a handler type")


def _validate_action(errs: ErrorList, action: object, path: Path, grace: int) -> None:
    if isinstance(action, core_pb2.ExecAction):
        if not action.command:
            errs.required(path.child("command"))
    elif isinstance(action, core_pb2.HTTPGetAction):
        if not action.path:
            errs.required(path.child("path"))
        validate_port_num_or_name(errs, action.port, path.child("port"))
        if action.scheme not in ("HTTP", "HTTPS"):
            errs.not_supported(path.child("scheme"), action.scheme, ("HTTP", "HTTPS"))
    elif isinstance(action, core_pb2.TCPSocketAction):
        validate_port_num_or_name(errs, action.port, path.child("port"))
    elif isinstance(action, core_pb2.GRPCAction):
        errs.invalid_each(path.child("port"), action.port, names.is_valid_port_num(action.port))
    elif isinstance(action, core_pb2.SleepAction):
        if action.seconds <= 0 or action.seconds > grace:
            errs.invalid(path.child("seconds"), action.seconds,
                         f"must be greater than 0 and less than terminationGracePeriodSeconds ({grace})")


def _validate_probe(errs: ErrorList, probe: core_pb2.Probe, path: Path, kind: str, grace: int) -> None:
    validate_handler(errs, probe, path, grace)
    errs.nonnegative(path.child("initialDelaySeconds"), probe.initial_delay_seconds)
    for field_name, json_name in (("timeout_seconds", "timeoutSeconds"), ("period_seconds", "periodSeconds"),
                                  ("success_threshold", "successThreshold"),
                                  ("failure_threshold", "failureThreshold")):
        value = getattr(probe, field_name)
        if value < 0:
            errs.nonnegative(path.child(json_name), value)
        elif value == 0 and probe.HasField(field_name):
            errs.invalid(path.child(json_name), value, "must be greater than or equal to 1")
    if kind in ("livenessProbe", "startupProbe") and probe.HasField("success_threshold") \
            and probe.success_threshold != 1:
        errs.invalid(path.child("successThreshold"), probe.success_threshold, "must be 1")
    if probe.HasField("termination_grace_period_seconds"):
        if kind == "readinessProbe":
            errs.invalid(path.child("terminationGracePeriodSeconds"), probe.termination_grace_period_seconds,
                         "must not be set for readinessProbes")
        elif probe.termination_grace_period_seconds <= 0:
            errs.invalid(path.child("terminationGracePeriodSeconds"), probe.termination_grace_period_seconds,
                         "must be greater than 0")

