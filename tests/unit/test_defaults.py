"""Defaulting: every Kubernetes default skiff applies, that it only fills what is unset, and
that applying it twice changes nothing."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf.message import Message

from controlplane.apiserver.defaults import apply_defaults, image_pull_policy
from controlplane.client.codec import decode_object, encode

POD_SPEC: dict[str, Any] = {"containers": [{"name": "web", "image": "nginx"}]}


def defaulted(doc: dict[str, Any]) -> Message:
    obj = decode_object(copy.deepcopy(doc))
    apply_defaults(obj)
    return obj


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {**copy.deepcopy(POD_SPEC), **spec}}


def workload(kind: str, **spec: Any) -> dict[str, Any]:
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    template = {"metadata": {"labels": {"app": "web"}}, "spec": copy.deepcopy(POD_SPEC)}
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "w", "namespace": "default"},
            "spec": {"template": template, **spec}}


@pytest.mark.parametrize("image, policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
    ("localhost:5000/nginx", "Always"), ("localhost:5000/nginx:1.0", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"), ("registry.io/team/app:latest", "Always"),
])
def test_image_pull_policy(image: str, policy: str) -> None:
    assert image_pull_policy(image) == policy


def test_pod_spec_defaults() -> None:
    p = defaulted(pod(volumes=[{"name": "scratch"}, {"name": "s", "secret": {"secretName": "s"}},
                               {"name": "h", "hostPath": {"path": "/tmp"}}]))
    spec = p.spec
    assert (spec.restart_policy, spec.dns_policy, spec.scheduler_name) == ("Always", "ClusterFirst", "default-scheduler")
    assert spec.termination_grace_period_seconds == 30
    assert spec.HasField("security_context")
    assert spec.enable_service_links is True
    assert spec.volumes[0].HasField("empty_dir")  # a volume without a source is an emptyDir
    assert spec.volumes[1].secret.default_mode == 0o644
    assert spec.volumes[2].host_path.HasField("type") and spec.volumes[2].host_path.type == ""
    c = spec.containers[0]
    assert (c.image_pull_policy, c.termination_message_path, c.termination_message_policy) == (
        "Always", "/dev/termination-log", "File")


def test_container_port_probe_and_env_defaults() -> None:
    ctr = {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}],
           "livenessProbe": {"httpGet": {"port": 80}},
           "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
           "lifecycle": {"preStop": {"httpGet": {"port": 80}}},
           "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
    c = defaulted(pod(containers=[ctr])).spec.containers[0]
    assert c.ports[0].protocol == "TCP"
    live = c.liveness_probe
    assert (live.timeout_seconds, live.period_seconds, live.success_threshold, live.failure_threshold) == (1, 10, 1, 3)
    assert (live.http_get.path, live.http_get.scheme) == ("/", "HTTP")
    assert c.readiness_probe.period_seconds == 5
    assert (c.lifecycle.pre_stop.http_get.path, c.lifecycle.pre_stop.http_get.scheme) == ("/", "HTTP")
    assert c.env[0].value_from.field_ref.api_version == "v1"


def test_pod_only_defaults() -> None:
    ctr = {"name": "web", "image": "nginx", "resources": {"limits": {"cpu": "1", "memory": "1Gi"},
                                                          "requests": {"cpu": "100m"}},
           "ports": [{"containerPort": 8080}]}
    p = defaulted(pod(containers=[ctr], hostNetwork=True))
    c = p.spec.containers[0]
    assert dict(c.resources.requests) == {"cpu": "100m", "memory": "1Gi"}
    assert c.ports[0].host_port == 8080
    tolerations = [(t.key, t.operator, t.effect, t.toleration_seconds) for t in p.spec.tolerations]
    assert tolerations == [("node.kubernetes.io/not-ready", "Exists", "NoExecute", 300),
                           ("node.kubernetes.io/unreachable", "Exists", "NoExecute", 300)]


def test_default_tolerations_respect_existing_ones() -> None:
    own = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 5}]
    p = defaulted(pod(tolerations=own))
    assert [(t.key, t.toleration_seconds) for t in p.spec.tolerations] == [
        ("node.kubernetes.io/unreachable", 5), ("node.kubernetes.io/not-ready", 300)]
    everything = defaulted(pod(tolerations=[{"operator": "Exists"}]))
    assert len(everything.spec.tolerations) == 1


@pytest.mark.parametrize("kind", ["ReplicaSet", "Deployment", "DaemonSet", "StatefulSet", "ReplicationController"])
def test_templates_get_pod_spec_defaults_but_not_pod_only_ones(kind: str) -> None:
    obj = defaulted(workload(kind))
    spec = obj.spec.template.spec
    assert (spec.restart_policy, spec.dns_policy, spec.termination_grace_period_seconds) == ("Always", "ClusterFirst", 30)
    assert spec.containers[0].image_pull_policy == "Always"
    assert not spec.tolerations and not spec.HasField("enable_service_links")


def test_deployment_defaults() -> None:
    d = defaulted(workload("Deployment")).spec
    assert (d.replicas, d.revision_history_limit, d.progress_deadline_seconds) == (1, 10, 600)
    assert d.strategy.type == "RollingUpdate"
    assert (d.strategy.rolling_update.max_unavailable.str_val, d.strategy.rolling_update.max_surge.str_val) == ("25%", "25%")
    recreate = defaulted(workload("Deployment", strategy={"type": "Recreate"})).spec
    assert not recreate.strategy.HasField("rolling_update")
    kept = defaulted(workload("Deployment", replicas=0, strategy={"rollingUpdate": {"maxSurge": 2}})).spec
    assert kept.replicas == 0
    assert kept.strategy.rolling_update.max_surge.int_val == 2
    assert kept.strategy.rolling_update.max_unavailable.str_val == "25%"


def test_replica_set_and_rc_defaults() -> None:
    assert defaulted(workload("ReplicaSet")).spec.replicas == 1
    rc = defaulted(workload("ReplicationController"))
    assert rc.spec.replicas == 1
    assert dict(rc.spec.selector) == {"app": "web"}
    assert dict(rc.metadata.labels) == {"app": "web"}
    own = defaulted(workload("ReplicationController", selector={"app": "web", "x": "y"}))
    assert dict(own.spec.selector) == {"app": "web", "x": "y"}


def test_daemon_set_defaults() -> None:
    ds = defaulted(workload("DaemonSet")).spec
    assert ds.update_strategy.type == "RollingUpdate"
    ru = ds.update_strategy.rolling_update
    assert (ru.max_unavailable.WhichOneof("value"), ru.max_unavailable.int_val) == ("int_val", 1)
    assert (ru.max_surge.WhichOneof("value"), ru.max_surge.int_val) == ("int_val", 0)
    assert ds.revision_history_limit == 10


def test_stateful_set_defaults() -> None:
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}}
    sts = defaulted(workload("StatefulSet", volumeClaimTemplates=[claim])).spec
    assert (sts.replicas, sts.revision_history_limit, sts.pod_management_policy) == (1, 10, "OrderedReady")
    assert sts.update_strategy.type == "RollingUpdate"
    assert sts.update_strategy.rolling_update.HasField("partition") and sts.update_strategy.rolling_update.partition == 0
    retention = sts.persistent_volume_claim_retention_policy
    assert (retention.when_deleted, retention.when_scaled) == ("Retain", "Retain")
    assert sts.volume_claim_templates[0].spec.volume_mode == "Filesystem"
    on_delete = defaulted(workload("StatefulSet", updateStrategy={"type": "OnDelete"})).spec
    assert not on_delete.update_strategy.HasField("rolling_update")


def service(**spec: Any) -> Any:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
           "spec": {"ports": [{"port": 80}], **spec}}
    return defaulted(doc).spec


def test_service_defaults() -> None:
    s = service()
    assert (s.type, s.session_affinity, s.internal_traffic_policy) == ("ClusterIP", "None", "Cluster")
    assert (s.ports[0].protocol, s.ports[0].target_port.int_val) == ("TCP", 80)
    assert (s.ip_family_policy, list(s.ip_families)) == ("SingleStack", ["IPv4"])
    assert not s.external_traffic_policy
    lb = service(type="LoadBalancer", ports=[{"port": 80, "targetPort": "http"}])
    assert (lb.external_traffic_policy, lb.allocate_load_balancer_node_ports) == ("Cluster", True)
    assert lb.ports[0].target_port.str_val == "http"
    sticky = service(sessionAffinity="ClientIP")
    assert sticky.session_affinity_config.client_ip.timeout_seconds == 10800
    ip = service(clusterIP="10.96.0.10")
    assert list(ip.cluster_ips) == ["10.96.0.10"]
    v6 = service(clusterIPs=["fd00::10"])
    assert (v6.cluster_ip, list(v6.ip_families)) == ("fd00::10", ["IPv6"])
    ext = service(type="ExternalName", externalName="db.example.com")
    assert not ext.ip_families and not ext.HasField("ip_family_policy") and not ext.HasField("internal_traffic_policy")


def test_namespace_secret_node_endpoints_defaults() -> None:
    ns = defaulted({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    assert list(ns.spec.finalizers) == ["kubernetes"]
    assert ns.metadata.labels["kubernetes.io/metadata.name"] == "team"
    assert ns.status.phase == "Active"
    deleting = defaulted({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": "team", "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert not deleting.spec.finalizers
    secret = defaulted({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                        "data": {"a": "eA=="}, "stringData": {"a": "y", "b": "z"}})
    assert secret.type == "Opaque"
    assert dict(secret.data) == {"a": b"y", "b": b"z"}
    assert not secret.string_data
    node = defaulted({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
                      "spec": {"podCIDR": "10.244.0.0/24"}, "status": {"capacity": {"cpu": "2"}}})
    assert dict(node.status.allocatable) == {"cpu": "2"}
    assert list(node.spec.pod_cidrs) == ["10.244.0.0/24"]
    ep = defaulted({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e", "namespace": "default"},
                    "subsets": [{"ports": [{"port": 80}]}]})
    assert ep.subsets[0].ports[0].protocol == "TCP"


@pytest.mark.parametrize("doc", [
    {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}},
    {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l", "namespace": "default"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}},
])
def test_kinds_without_defaults_are_untouched(doc: dict[str, Any]) -> None:
    before = decode_object(doc)
    assert defaulted(doc) == before


EVERYTHING = [
    pod(), pod(hostNetwork=True, containers=[{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}},
                                              "ports": [{"containerPort": 1}], "startupProbe": {"grpc": {"port": 1}}}]),
    workload("Deployment"), workload("ReplicaSet"), workload("DaemonSet"), workload("StatefulSet"),
    workload("ReplicationController"),
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "d"},
     "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "d"}, "stringData": {"a": "b"}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "status": {"capacity": {"cpu": "1"}}},
]


@pytest.mark.parametrize("doc", EVERYTHING, ids=[d["kind"] for d in EVERYTHING])
def test_idempotent(doc: dict[str, Any]) -> None:
    once = defaulted(doc)
    twice = type(once)()
    twice.CopyFrom(once)
    apply_defaults(twice)
    assert twice == once
    assert encode(twice) == encode(once)
