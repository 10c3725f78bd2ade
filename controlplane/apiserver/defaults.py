"""Defaulting of API objects with Kubernetes' defaults: `apply_defaults(obj)`.

Contract:
- `apply_defaults(obj)` mutates obj in place and only fills what is unset, so applying it twice
  changes nothing the second time (idempotent). The API server calls it on create and on
  update, before validation.
- "Unset" follows Kubernetes: for `optional` and message fields it means absent; for plain
  ints whose Go type is a non-pointer int (probe thresholds) it means 0, as in Kubernetes.
- What is defaulted, per kind (Kubernetes' SetDefaults_* functions in core/v1 and apps/v1,
  plus the DefaultTolerationSeconds admission plugin for pods):
  * every pod spec (Pods and the templates of RCs, ReplicaSets, Deployments, DaemonSets,
    StatefulSets): restartPolicy Always, terminationGracePeriodSeconds 30, dnsPolicy
    ClusterFirst, schedulerName default-scheduler, securityContext {}; volumes without a source
    become emptyDir, secret/configMap/downwardAPI/projected defaultMode 0644, hostPath type "";
    containers: imagePullPolicy (Always for `:latest` or no tag, else IfNotPresent),
    terminationMessagePath /dev/termination-log, terminationMessagePolicy File, ports protocol
    TCP, probes (timeout 1, period 10, success 1, failure 3), httpGet (path "/", scheme HTTP),
    fieldRef apiVersion v1;
  * Pods only (Kubernetes does these for Pods, not templates): enableServiceLinks true,
    requests copied from limits where a request is missing, hostPort = containerPort on the
    host network, and the not-ready/unreachable NoExecute tolerations for 300 s unless the pod
    already tolerates those taints;
  * Service: type ClusterIP, sessionAffinity None (config dropped; ClientIP gets a 10800 s
    timeout), ports protocol TCP and targetPort = port, externalTrafficPolicy Cluster when
    externally reachable, internalTrafficPolicy Cluster, allocateLoadBalancerNodePorts true for
    LoadBalancer, clusterIP/clusterIPs kept consistent, ipFamilyPolicy SingleStack and
    ipFamilies [IPv4] (IPv6 for an IPv6 clusterIP) except for ExternalName;
  * Deployment: replicas 1, strategy RollingUpdate with maxUnavailable/maxSurge 25%,
    revisionHistoryLimit 10, progressDeadlineSeconds 600;
  * ReplicaSet: replicas 1. ReplicationController: replicas 1, selector and metadata.labels
    from the template's labels when empty;
  * DaemonSet: updateStrategy RollingUpdate with maxUnavailable 1, maxSurge 0,
    revisionHistoryLimit 10;
  * StatefulSet: replicas 1, podManagementPolicy OrderedReady, updateStrategy RollingUpdate with
    partition 0, revisionHistoryLimit 10, PVC retention Retain/Retain, claim volumeMode
    Filesystem;
  * Namespace: label kubernetes.io/metadata.name = name (Kubernetes always sets it),
    spec.finalizers ["kubernetes"] unless the namespace is being deleted (so the namespace
    controller can remove it), status.phase Active;
  * Secret: type Opaque; stringData merged into data (stringData wins) and cleared, as
    Kubernetes does on write;
  * Node: podCIDR and podCIDRs[0] filled from each other, status.allocatable = capacity when
    allocatable is empty; Endpoints: ports TCP.
  Event, Lease, ConfigMap and RuntimeClass have no defaults in Kubernetes. metadata.namespace is
  the server's business, not this module's.
"""
from __future__ import annotations

from typing import Callable, Iterable

from google.protobuf.message import Message

from protos.skiff.api.v1 import apps_pb2, core_pb2, meta_pb2

DEFAULT_FILE_MODE = 0o644
DEFAULT_TOLERATION_SECONDS = 300
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"
CLIENT_IP_TIMEOUT = 10800


def apply_defaults(obj: Message) -> None:
    """Fill obj's unset fields with Kubernetes' defaults, in place; idempotent."""
    defaulter = _DEFAULTERS.get(obj.DESCRIPTOR.full_name)
    if defaulter is not None:
        defaulter(obj)


# --- pod specs -----------------------------------------------------------------------------

def image_pull_policy(image: str) -> str:
    """Always for a `latest` or missing tag, IfNotPresent for another tag or a digest."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def default_pod_spec(spec: core_pb2.PodSpec) -> None:
    """The defaults every pod spec gets, in a Pod or in a template."""
    spec.restart_policy = spec.restart_policy or "Always"
    spec.dns_policy = spec.dns_policy or "ClusterFirst"
    spec.scheduler_name = spec.scheduler_name or "default-scheduler"
    if not spec.HasField("termination_grace_period_seconds"):
        spec.termination_grace_period_seconds = 30
    spec.security_context.SetInParent()
    for volume in spec.volumes:
        _default_volume(volume)
    for ctr in _all_containers(spec):
        _default_container(ctr)


def _all_containers(spec: core_pb2.PodSpec) -> Iterable[core_pb2.Container]:
    yield from spec.init_containers
    yield from spec.containers


def _default_container(ctr: core_pb2.Container) -> None:
    ctr.image_pull_policy = ctr.image_pull_policy or image_pull_policy(ctr.image)
    ctr.termination_message_path = ctr.termination_message_path or "/dev/termination-log"
    ctr.termination_message_policy = ctr.termination_message_policy or "File"
    for port in ctr.ports:
        port.protocol = port.protocol or "TCP"
    for name in ("liveness_probe", "readiness_probe", "startup_probe"):
        if ctr.HasField(name):
            _default_probe(getattr(ctr, name))
    if ctr.HasField("lifecycle"):
        for hook in (ctr.lifecycle.post_start, ctr.lifecycle.pre_stop):
            if hook.HasField("http_get"):
                _default_http_get(hook.http_get)
    for env in ctr.env:
        if env.value_from.HasField("field_ref") and not env.value_from.field_ref.api_version:
            env.value_from.field_ref.api_version = "v1"


def _default_probe(probe: core_pb2.Probe) -> None:
    # Kubernetes' fields are plain ints: 0 means "not given", so 0 gets the default too.
    for name, value in (("timeout_seconds", 1), ("period_seconds", 10),
                        ("success_threshold", 1), ("failure_threshold", 3)):
        if getattr(probe, name) == 0:
            setattr(probe, name, value)
    if probe.HasField("http_get"):
        _default_http_get(probe.http_get)


def _default_http_get(action: core_pb2.HTTPGetAction) -> None:
    action.path = action.path or "/"
    action.scheme = action.scheme or "HTTP"


_VOLUME_SOURCES = ("host_path", "empty_dir", "secret", "config_map", "persistent_volume_claim",
                   "downward_api", "projected", "nfs")


def _default_volume(volume: core_pb2.Volume) -> None:
    if not any(volume.HasField(name) for name in _VOLUME_SOURCES):
        volume.empty_dir.SetInParent()
    for name in ("secret", "config_map", "downward_api", "projected"):
        if volume.HasField(name):
            source = getattr(volume, name)
            if not source.HasField("default_mode"):
                source.default_mode = DEFAULT_FILE_MODE
    if volume.HasField("host_path") and not volume.host_path.HasField("type"):
        volume.host_path.type = ""


# --- pods ----------------------------------------------------------------------------------

def _default_pod(pod: core_pb2.Pod) -> None:
    spec = pod.spec
    default_pod_spec(spec)
    if not spec.HasField("enable_service_links"):
        spec.enable_service_links = True
    for ctr in _all_containers(spec):
        for name, limit in ctr.resources.limits.items():
            if name not in ctr.resources.requests:
                ctr.resources.requests[name] = limit
        if spec.host_network:
            for port in ctr.ports:
                if port.host_port == 0:
                    port.host_port = port.container_port
    for taint in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        if not any(_tolerates_no_execute(t, taint) for t in spec.tolerations):
            spec.tolerations.add(key=taint, operator="Exists", effect="NoExecute",
                                 toleration_seconds=DEFAULT_TOLERATION_SECONDS)


def _tolerates_no_execute(t: core_pb2.Toleration, key: str) -> bool:
    """DefaultTolerationSeconds' test: a toleration for this key (or every key) and NoExecute."""
    return t.key in (key, "") and t.effect in ("NoExecute", "")


# --- services ------------------------------------------------------------------------------

def _default_service(svc: core_pb2.Service) -> None:
    spec = svc.spec
    spec.type = spec.type or "ClusterIP"
    spec.session_affinity = spec.session_affinity or "None"
    if spec.session_affinity == "None":
        spec.ClearField("session_affinity_config")
    elif spec.session_affinity == "ClientIP":
        client_ip = spec.session_affinity_config.client_ip
        if not client_ip.HasField("timeout_seconds"):
            client_ip.timeout_seconds = CLIENT_IP_TIMEOUT
    for port in spec.ports:
        port.protocol = port.protocol or "TCP"
        which = port.target_port.WhichOneof("value")
        if which is None or (which == "int_val" and port.target_port.int_val == 0) \
                or (which == "str_val" and port.target_port.str_val == ""):
            port.target_port.int_val = port.port
    external = spec.type in ("NodePort", "LoadBalancer") or (spec.type == "ClusterIP" and bool(spec.external_ips))
    if external and not spec.external_traffic_policy:
        spec.external_traffic_policy = "Cluster"
    if spec.type != "ExternalName" and not spec.HasField("internal_traffic_policy"):
        spec.internal_traffic_policy = "Cluster"
    if spec.type == "LoadBalancer" and not spec.HasField("allocate_load_balancer_node_ports"):
        spec.allocate_load_balancer_node_ports = True
    _default_cluster_ips(spec)


def _default_cluster_ips(spec: core_pb2.ServiceSpec) -> None:
    if spec.type == "ExternalName":
        return
    if spec.cluster_ip and not spec.cluster_ips:
        spec.cluster_ips.append(spec.cluster_ip)
    elif spec.cluster_ips and not spec.cluster_ip:
        spec.cluster_ip = spec.cluster_ips[0]
    if not spec.HasField("ip_family_policy"):
        spec.ip_family_policy = "SingleStack"
    if not spec.ip_families:
        spec.ip_families.append("IPv6" if ":" in spec.cluster_ip else "IPv4")


def _default_endpoints(ep: core_pb2.Endpoints) -> None:
    for subset in ep.subsets:
        for port in subset.ports:
            port.protocol = port.protocol or "TCP"


# --- workloads -----------------------------------------------------------------------------

def _default_int_or_string(value: meta_pb2.IntOrString, default: int | str) -> None:
    if value.WhichOneof("value") is not None:
        return
    if isinstance(default, int):
        value.int_val = default
    else:
        value.str_val = default


def _default_optional(msg: Message, name: str, value: int) -> None:
    if not msg.HasField(name):
        setattr(msg, name, value)


def _default_replica_set(rs: apps_pb2.ReplicaSet) -> None:
    _default_optional(rs.spec, "replicas", 1)
    default_pod_spec(rs.spec.template.spec)


def _default_replication_controller(rc: core_pb2.ReplicationController) -> None:
    spec = rc.spec
    if spec.HasField("template"):
        labels = spec.template.metadata.labels
        if labels and not spec.selector:
            spec.selector.update(labels)
        if labels and not rc.metadata.labels:
            rc.metadata.labels.update(labels)
        default_pod_spec(spec.template.spec)
    _default_optional(spec, "replicas", 1)


def _default_deployment(d: apps_pb2.Deployment) -> None:
    spec = d.spec
    _default_optional(spec, "replicas", 1)
    strategy = spec.strategy
    strategy.type = strategy.type or "RollingUpdate"
    if strategy.type == "RollingUpdate":
        _default_int_or_string(strategy.rolling_update.max_unavailable, "25%")
        _default_int_or_string(strategy.rolling_update.max_surge, "25%")
    _default_optional(spec, "revision_history_limit", 10)
    _default_optional(spec, "progress_deadline_seconds", 600)
    default_pod_spec(spec.template.spec)


def _default_daemon_set(ds: apps_pb2.DaemonSet) -> None:
    spec = ds.spec
    strategy = spec.update_strategy
    strategy.type = strategy.type or "RollingUpdate"
    if strategy.type == "RollingUpdate":
        _default_int_or_string(strategy.rolling_update.max_unavailable, 1)
        _default_int_or_string(strategy.rolling_update.max_surge, 0)
    _default_optional(spec, "revision_history_limit", 10)
    default_pod_spec(spec.template.spec)


def _default_stateful_set(sts: apps_pb2.StatefulSet) -> None:
    spec = sts.spec
    spec.pod_management_policy = spec.pod_management_policy or "OrderedReady"
    strategy = spec.update_strategy
    if not strategy.type:
        strategy.type = "RollingUpdate"
        strategy.rolling_update.SetInParent()
    if strategy.type == "RollingUpdate" and strategy.HasField("rolling_update"):
        _default_optional(strategy.rolling_update, "partition", 0)
    retention = spec.persistent_volume_claim_retention_policy
    retention.when_deleted = retention.when_deleted or "Retain"
    retention.when_scaled = retention.when_scaled or "Retain"
    _default_optional(spec, "replicas", 1)
    _default_optional(spec, "revision_history_limit", 10)
    for claim in spec.volume_claim_templates:
        if not claim.spec.HasField("volume_mode"):
            claim.spec.volume_mode = "Filesystem"
    default_pod_spec(spec.template.spec)


# --- the rest ------------------------------------------------------------------------------

def _default_namespace(ns: core_pb2.Namespace) -> None:
    if ns.metadata.name:
        ns.metadata.labels[METADATA_NAME_LABEL] = ns.metadata.name
    if not ns.spec.finalizers and not ns.metadata.deletion_timestamp:
        ns.spec.finalizers.append("kubernetes")
    ns.status.phase = ns.status.phase or "Active"


def _default_secret(secret: core_pb2.Secret) -> None:
    secret.type = secret.type or "Opaque"
    for key, value in secret.string_data.items():
        secret.data[key] = value.encode()
    secret.ClearField("string_data")


def _default_node(node: core_pb2.Node) -> None:
    # Kubernetes keeps podCIDR and podCIDRs[0] equal (its conversion fills whichever is missing).
    spec = node.spec
    if spec.pod_cidr and not spec.pod_cidrs:
        spec.pod_cidrs.append(spec.pod_cidr)
    elif spec.pod_cidrs and not spec.pod_cidr:
        spec.pod_cidr = spec.pod_cidrs[0]
    if not node.status.allocatable and node.status.capacity:
        node.status.allocatable.update(node.status.capacity)


_DEFAULTERS: dict[str, Callable[[Message], None]] = {
    core_pb2.Pod.DESCRIPTOR.full_name: _default_pod,
    core_pb2.Service.DESCRIPTOR.full_name: _default_service,
    core_pb2.Endpoints.DESCRIPTOR.full_name: _default_endpoints,
    core_pb2.ReplicationController.DESCRIPTOR.full_name: _default_replication_controller,
    core_pb2.Namespace.DESCRIPTOR.full_name: _default_namespace,
    core_pb2.Secret.DESCRIPTOR.full_name: _default_secret,
    core_pb2.Node.DESCRIPTOR.full_name: _default_node,
    apps_pb2.ReplicaSet.DESCRIPTOR.full_name: _default_replica_set,
    apps_pb2.Deployment.DESCRIPTOR.full_name: _default_deployment,
    apps_pb2.DaemonSet.DESCRIPTOR.full_name: _default_daemon_set,
    apps_pb2.StatefulSet.DESCRIPTOR.full_name: _default_stateful_set,
}
