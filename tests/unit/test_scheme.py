"""The object model and the scheme: names, JSON names, Any packing, manifests parsing."""
from __future__ import annotations

from tests.manifests import NGINX_DEPLOYMENT

from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from controlplane.client import scheme
from protos.skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2, node_pb2

SERVED = {
    "Namespace", "Node", "Pod", "Service", "Endpoints", "ReplicationController", "ConfigMap",
    "Secret", "Event", "ReplicaSet", "Deployment", "DaemonSet", "StatefulSet", "Lease",
    "RuntimeClass",
}


def test_served_kinds_and_scopes() -> None:
    assert {k.kind for k in scheme.KINDS} == SERVED
    assert {k.kind for k in scheme.KINDS if not k.namespaced} == {
        "Namespace", "Node", "RuntimeClass"}
    assert {k.kind for k in scheme.KINDS if k.has_status} == {
        "Namespace", "Node", "Pod", "Service", "ReplicationController",
        "ReplicaSet", "Deployment", "DaemonSet", "StatefulSet"}
    for k in scheme.KINDS:
        assert k.message.DESCRIPTOR.name == k.kind


@pytest.mark.parametrize("name", [
    "deployments", "deployment", "deploy", "Deployment", "DEPLOYMENTS", "deployments.apps",
    "deployment.apps", "deployments.v1.apps",
])
def test_by_resource_every_name_form(name: str) -> None:
    assert scheme.by_resource(name).message is apps_pb2.Deployment


@pytest.mark.parametrize("short,resource", [
    ("po", "pods"), ("svc", "services"), ("rc", "replicationcontrollers"),
    ("rs", "replicasets"), ("ds", "daemonsets"), ("sts", "statefulsets"),
    ("ns", "namespaces"), ("no", "nodes"), ("cm", "configmaps"), ("ev", "events"),
    ("ep", "endpoints"), ("deploy", "deployments"),
])
def test_short_names(short: str, resource: str) -> None:
    assert scheme.by_resource(short).resource == resource


def test_by_resource_other_groups_and_unknown() -> None:
    assert scheme.by_resource("leases.coordination.k8s.io").kind == "Lease"
    assert scheme.by_resource("RuntimeClass").resource == "runtimeclasses"
    assert scheme.by_resource("endpoints").kind == "Endpoints"
    with pytest.raises(KeyError, match="sepc"):
        scheme.by_resource("sepc")
    with pytest.raises(KeyError):
        scheme.by_resource("persistentvolumeclaims")


def test_kind_names() -> None:
    deploy = scheme.by_resource("deploy")
    assert (deploy.api_version, deploy.qualified, deploy.group_resource) == (
        "apps/v1", "Deployment.apps", "deployments.apps")
    pod = scheme.by_resource("pod")
    assert (pod.api_version, pod.qualified, pod.group_resource, pod.singular) == (
        "v1", "Pod", "pods", "pod")
    lease = scheme.by_resource("lease")
    assert lease.api_version == "coordination.k8s.io/v1"


def test_by_kind_and_by_message() -> None:
    assert scheme.by_kind("apps/v1", "Deployment").resource == "deployments"
    assert scheme.by_kind("v1", "Pod").resource == "pods"
    assert scheme.by_kind("node.k8s.io/v1", "RuntimeClass").namespaced is False
    with pytest.raises(KeyError, match=r"Deployment.*extensions/v1beta1"):
        scheme.by_kind("extensions/v1beta1", "Deployment")
    assert scheme.by_message(core_pb2.Pod()).kind == "Pod"
    assert scheme.by_message(apps_pb2.StatefulSet).kind == "StatefulSet"
    with pytest.raises(KeyError, match="PodSpec"):
        scheme.by_message(core_pb2.PodSpec())


def test_every_kind_starts_with_api_version_kind_metadata() -> None:
    for k in scheme.KINDS:
        fields = k.message.DESCRIPTOR.fields_by_number
        assert [fields[n].name for n in (1, 2, 3)] == ["api_version", "kind", "metadata"]
        assert fields[3].message_type is meta_pb2.ObjectMeta.DESCRIPTOR
        if "spec" in k.message.DESCRIPTOR.fields_by_name:
            assert k.message.DESCRIPTOR.fields_by_name["spec"].number == 4
        if k.has_status:
            assert k.message.DESCRIPTOR.fields_by_name["status"].number == 5


def test_spec_fields() -> None:
    assert scheme.spec_fields(scheme.by_resource("deploy")) == ("spec",)
    assert scheme.spec_fields(scheme.by_resource("cm")) == ("data", "binary_data", "immutable")
    assert scheme.spec_fields(scheme.by_resource("runtimeclasses")) == (
        "handler", "overhead", "scheduling")
    assert scheme.spec_fields(scheme.by_resource("ep")) == ("subsets",)


def test_any_round_trip() -> None:
    pod = core_pb2.Pod(api_version="v1", kind="Pod",
                       metadata=meta_pb2.ObjectMeta(name="web", namespace="default"))
    pod.spec.containers.add(name="c", image="busybox")
    packed = scheme.to_any(pod)
    assert packed.type_url == "type.googleapis.com/skiff.api.v1.Pod"
    back = scheme.from_any(packed)
    assert isinstance(back, core_pb2.Pod) and back == pod
    lease = coordination_pb2.Lease(spec=coordination_pb2.LeaseSpec(holder_identity="a"))
    assert scheme.from_any(scheme.to_any(lease)) == lease


def test_from_any_unknown_type() -> None:
    from google.protobuf import any_pb2
    with pytest.raises(ValueError, match="PodSpec"):
        scheme.from_any(any_pb2.Any(type_url="type.googleapis.com/skiff.api.v1.PodSpec"))
    with pytest.raises(ValueError):
        scheme.from_any(any_pb2.Any(type_url="type.googleapis.com/other.Pod"))
    with pytest.raises(KeyError):
        scheme.to_any(core_pb2.PodSpec())


# Kubernetes' JSON names that are not the lowerCamel of the snake name (acronyms, "Port").
JSON_NAMES: list[tuple[type[Message], str, str]] = [
    (core_pb2.NodeSpec, "pod_cidr", "podCIDR"),
    (core_pb2.NodeSpec, "pod_cidrs", "podCIDRs"),
    (core_pb2.NodeSpec, "provider_id", "providerID"),
    (core_pb2.ServiceSpec, "cluster_ip", "clusterIP"),
    (core_pb2.ServiceSpec, "cluster_ips", "clusterIPs"),
    (core_pb2.ServiceSpec, "external_ips", "externalIPs"),
    (core_pb2.ServiceSpec, "load_balancer_ip", "loadBalancerIP"),
    (core_pb2.ServiceSpec, "ip_families", "ipFamilies"),
    (core_pb2.ServiceSpec, "ip_family_policy", "ipFamilyPolicy"),
    (core_pb2.SessionAffinityConfig, "client_ip", "clientIP"),
    (core_pb2.PodStatus, "pod_ip", "podIP"),
    (core_pb2.PodStatus, "pod_ips", "podIPs"),
    (core_pb2.PodStatus, "host_ip", "hostIP"),
    (core_pb2.PodStatus, "host_ips", "hostIPs"),
    (core_pb2.PodStatus, "qos_class", "qosClass"),
    (core_pb2.ContainerStatus, "image_id", "imageID"),
    (core_pb2.ContainerStatus, "container_id", "containerID"),
    (core_pb2.ContainerStateTerminated, "container_id", "containerID"),
    (core_pb2.NodeSystemInfo, "machine_id", "machineID"),
    (core_pb2.NodeSystemInfo, "system_uuid", "systemUUID"),
    (core_pb2.NodeSystemInfo, "boot_id", "bootID"),
    (core_pb2.NodeSystemInfo, "os_image", "osImage"),
    (core_pb2.PodSpec, "host_pid", "hostPID"),
    (core_pb2.PodSpec, "host_ipc", "hostIPC"),
    (core_pb2.PodSpec, "set_hostname_as_fqdn", "setHostnameAsFQDN"),
    (core_pb2.ContainerPort, "host_ip", "hostIP"),
    (core_pb2.Volume, "downward_api", "downwardAPI"),
    (core_pb2.VolumeProjection, "downward_api", "downwardAPI"),
    (core_pb2.DaemonEndpoint, "port", "Port"),
    (core_pb2.LoadBalancerIngress, "ip_mode", "ipMode"),
    (core_pb2.Probe, "http_get", "httpGet"),
    (core_pb2.Probe, "tcp_socket", "tcpSocket"),
    (core_pb2.HTTPGetAction, "http_headers", "httpHeaders"),
    (core_pb2.SecurityContext, "se_linux_options", "seLinuxOptions"),
    (core_pb2.PodSecurityContext, "fs_group", "fsGroup"),
    (meta_pb2.ListMeta, "continue_token", "continue"),
]


@pytest.mark.parametrize("message,field,json_name", JSON_NAMES,
                         ids=[f"{m.__name__}.{f}" for m, f, _ in JSON_NAMES])
def test_kubernetes_json_names(message: type[Message], field: str, json_name: str) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].json_name == json_name


def _all_messages() -> list[type[Message]]:
    found = []
    for module in (core_pb2, apps_pb2, coordination_pb2, node_pb2):
        for name in module.DESCRIPTOR.message_types_by_name:
            found.append(getattr(module, name))
    return found


def test_no_field_json_name_keeps_an_uncapitalised_acronym() -> None:
    # Any field ending in a known acronym must spell it as Kubernetes does (podIP, not podIp).
    suspicious = ("Ip", "Ips", "Id", "Uuid", "Cidr", "Cidrs", "Pid", "Ipc", "Fqdn", "Api")
    bad = []
    for message in _all_messages():
        for f in message.DESCRIPTOR.fields:
            if f.json_name.endswith(suspicious) and f.json_name != "uid":
                bad.append(f"{message.__name__}.{f.name} -> {f.json_name}")
    assert bad == []




def test_parse_nginx_deployment() -> None:
    doc = yaml.safe_load(NGINX_DEPLOYMENT)
    kind = scheme.by_kind(doc["apiVersion"], doc["kind"])
    dep = json_format.ParseDict(doc, kind.message())
    assert isinstance(dep, apps_pb2.Deployment)
    assert dep.spec.HasField("replicas") and dep.spec.replicas == 3
    assert dep.spec.selector.match_labels == {"app": "nginx"}
    assert dep.spec.template.spec.containers[0].ports[0].container_port == 80
    assert not dep.spec.HasField("revision_history_limit")
    assert json_format.MessageToDict(dep) == doc


# Quantities are strings and int-or-string values are {"intVal"/"strVal"} here: the codec
# turns Kubernetes' bare numbers into these forms before ParseDict.
POD = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 0
  hostPID: false
  nodeSelector: {disktype: ssd}
  securityContext: {runAsUser: 1000, runAsNonRoot: true, fsGroup: 2000}
  initContainers:
  - name: init
    image: busybox
    command: [sh, -c, "echo hi > /work/index.html"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: web
    image: nginx:1.25
    imagePullPolicy: IfNotPresent
    ports: [{name: http, containerPort: 80, hostPort: 8080, hostIP: 127.0.0.1, protocol: TCP}]
    env:
    - {name: MODE, value: prod}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password, optional: false}}
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: cfg, key: level}}
    envFrom: [{configMapRef: {name: cfg}, prefix: CFG_}]
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: "1", memory: 128Mi}
    livenessProbe:
      httpGet:
        path: /healthz
        port: {strVal: http}
        httpHeaders: [{name: X-Probe, value: "1"}]
      initialDelaySeconds: 3
      periodSeconds: 5
      failureThreshold: 0
    readinessProbe:
      tcpSocket: {port: {intVal: 80}}
      timeoutSeconds: 2
    startupProbe:
      exec: {command: [cat, /tmp/ready]}
    securityContext:
      privileged: false
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
      readOnlyRootFilesystem: true
    volumeMounts:
    - {name: work, mountPath: /usr/share/nginx/html, readOnly: true}
    - {name: cfg, mountPath: /etc/cfg}
  volumes:
  - name: work
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  - name: cfg
    configMap: {name: cfg, defaultMode: 420, items: [{key: a, path: a.conf, mode: 256}]}
  - name: creds
    secret: {secretName: creds, optional: true}
  - name: host
    hostPath: {path: /var/log, type: Directory}
  - name: data
    persistentVolumeClaim: {claimName: data, readOnly: true}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: zone, operator: In, values: [a, b]}]
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 10
        preference: {matchExpressions: [{key: gpu, operator: Exists}]}
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {matchLabels: {app: cache}}
        topologyKey: kubernetes.io/hostname
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          labelSelector:
            matchExpressions: [{key: app, operator: In, values: [web]}]
          topologyKey: topology.kubernetes.io/zone
  tolerations:
  - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 300}
  - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
status:
  phase: Running
  hostIP: 10.0.0.1
  podIP: 10.244.1.5
  podIPs: [{ip: 10.244.1.5}]
  qosClass: Burstable
  containerStatuses:
  - name: web
    ready: true
    started: false
    restartCount: 0
    imageID: docker.io/library/nginx@sha256:abc
    containerID: containerd://1234
    state: {running: {startedAt: "2026-11-28T18:00:00Z"}}
"""


def test_parse_pod_with_probes_volumes_affinity_tolerations() -> None:
    doc = yaml.safe_load(POD)
    pod = json_format.ParseDict(doc, core_pb2.Pod())
    spec = pod.spec
    assert spec.HasField("termination_grace_period_seconds")
    assert spec.termination_grace_period_seconds == 0
    assert spec.security_context.run_as_non_root is True
    web = spec.containers[0]
    assert web.ports[0].host_ip == "127.0.0.1"
    assert web.env[1].value_from.field_ref.field_path == "status.podIP"
    assert web.resources.requests["cpu"] == "100m"
    assert web.liveness_probe.http_get.port.str_val == "http"
    assert web.liveness_probe.HasField("failure_threshold")
    assert not web.liveness_probe.HasField("success_threshold")
    assert web.readiness_probe.tcp_socket.port.int_val == 80
    assert spec.volumes[1].config_map.default_mode == 420
    assert spec.volumes[2].secret.HasField("optional")
    assert spec.volumes[5].downward_api.items[0].path == "labels"
    terms = spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
    assert list(terms.node_selector_terms[0].match_expressions[0].values) == ["a", "b"]
    anti = spec.affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution
    assert anti[0].pod_affinity_term.topology_key == "topology.kubernetes.io/zone"
    assert spec.tolerations[0].toleration_seconds == 300
    assert not spec.tolerations[1].HasField("toleration_seconds")
    status = pod.status.container_statuses[0]
    assert status.HasField("started") and status.image_id.startswith("docker.io")
    # Everything written comes back under the same names: the JSON names match Kubernetes'.
    # (Values may differ in form: int64 prints as a string; plain zero scalars are omitted.)
    missing = _paths(doc) - _paths(json_format.MessageToDict(pod))
    assert missing == {"spec.hostPID", "status.containerStatuses.0.restartCount"}
    assert _paths(json_format.MessageToDict(pod)) <= _paths(doc)


def _paths(value: object, prefix: str = "") -> set[str]:
    """Every key path in a JSON-like document ("spec.containers.0.image")."""
    found: set[str] = set()
    items: list[tuple[str, object]] = []
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(str(i), v) for i, v in enumerate(value)]
    for key, child in items:
        path = f"{prefix}.{key}" if prefix else key
        found |= {path} | _paths(child, path)
    return found


def test_unknown_field_is_rejected() -> None:
    doc = yaml.safe_load(NGINX_DEPLOYMENT)
    doc["spec"]["template"]["sepc"] = {}
    with pytest.raises(json_format.ParseError, match="sepc"):
        json_format.ParseDict(doc, apps_pb2.Deployment())


def test_other_kinds_parse() -> None:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": {"strVal": "http"},
                             "nodePort": 30080}],
                  "sessionAffinity": "ClientIP",
                  "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque",
         "data": {"password": "c2VjcmV0"}, "stringData": {"user": "admin"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
         "data": {"a": "1"}, "binaryData": {"b": "AAE="}, "immutable": True},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
         "spec": {"serviceName": "db", "replicas": 3, "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": {"app": "db"}},
                  "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                  "template": {"metadata": {"labels": {"app": "db"}},
                               "spec": {"containers": [{"name": "db", "image": "db"}]}},
                  "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                      "accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}]}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
         "spec": {"selector": {"matchLabels": {"app": "a"}},
                  "updateStrategy": {"rollingUpdate": {"maxUnavailable": {"strVal": "10%"}}},
                  "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
         "spec": {"holderIdentity": "host-1", "leaseDurationSeconds": 15,
                  "renewTime": "2026-11-28T18:00:00.000000Z", "leaseTransitions": 0}},
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "proc"},
         "handler": "process", "overhead": {"podFixed": {"cpu": "10m"}},
         "scheduling": {"nodeSelector": {"runtime": "process"},
                        "tolerations": [{"key": "k", "operator": "Exists"}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
         "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
         "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                    "nodeInfo": {"machineID": "m", "systemUUID": "u", "bootID": "b"},
                    "allocatable": {"cpu": "4", "pods": "110"}}},
    ]
    for doc in docs:
        kind = scheme.by_kind(doc["apiVersion"], doc["kind"])
        obj = json_format.ParseDict(doc, kind.message())
        assert json_format.MessageToDict(obj) == doc, doc["kind"]
    rollout = json_format.ParseDict(docs[3], apps_pb2.StatefulSet()).spec.update_strategy
    assert rollout.rolling_update.HasField("partition")
