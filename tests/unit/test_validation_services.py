"""Service, Endpoints, Namespace, Node, ConfigMap, Secret, Event, Lease and RuntimeClass rules."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.apiserver.defaults import apply_defaults
from controlplane.apiserver.validation import validate_object
from controlplane.client.codec import decode_object

SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}
PORT_MSG = "must be between 1 and 65535, inclusive"


def check(doc: dict[str, Any], old_doc: dict[str, Any] | None = None) -> list[str]:
    obj = decode_object(doc)
    apply_defaults(obj)
    old = None
    if old_doc is not None:
        old = decode_object(old_doc)
        apply_defaults(old)
    return validate_object(obj, old)


def svc(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SERVICE)
    doc["spec"].update(spec)
    return doc


@pytest.mark.parametrize("spec, expected", [
    ({}, []),
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}, []),
    ({"clusterIP": "None"}, []),
    ({"clusterIP": "None", "ports": []}, []),
    ({"type": "ExternalName", "externalName": "db.example.com", "ports": []}, []),
    ({"type": "Magic"}, ['spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", '
                         '"LoadBalancer", "NodePort"']),
    ({"ports": []}, ["spec.ports: Required value"]),
    ({"ports": [{"port": 0}]}, [f"spec.ports[0].port: Invalid value: 0: {PORT_MSG}",
                                f"spec.ports[0].targetPort: Invalid value: 0: {PORT_MSG}"]),
    ({"ports": [{"port": 80, "protocol": "HTTP"}]},
     ['spec.ports[0].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"']),
    ({"ports": [{"port": 80, "targetPort": "web-http"}]}, []),
    ({"ports": [{"port": 80, "targetPort": "Web"}]},
     ['spec.ports[0].targetPort: Invalid value: "Web": must contain only alpha-numeric characters (a-z, 0-9), '
      "and hyphens (-)"]),
    ({"ports": [{"port": 80, "targetPort": 70000}]}, [f"spec.ports[0].targetPort: Invalid value: 70000: {PORT_MSG}"]),
    ({"ports": [{"port": 80}, {"port": 81}]},
     ["spec.ports[0].name: Required value", "spec.ports[1].name: Required value"]),
    ({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}, ['spec.ports[1].name: Duplicate value: "a"']),
    ({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]},
     ['spec.ports[1]: Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), '
      'Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}']),
    ({"ports": [{"port": 80, "nodePort": 30080}]},
     ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
    ({"type": "NodePort", "ports": [{"name": "a", "port": 80, "nodePort": 30080},
                                    {"name": "b", "port": 81, "nodePort": 30080}]},
     ["spec.ports[1].nodePort: Duplicate value: 30080"]),
    ({"type": "NodePort", "clusterIP": "None"},
     ['spec.clusterIPs[0]: Invalid value: "None": may not be set to \'None\' for NodePort services']),
    ({"clusterIP": "10.96.0.300"},
     ['spec.clusterIPs[0]: Invalid value: "10.96.0.300": must be a valid IP address, (e.g. 10.9.8.7 or '
      "2001:db8::ffff)"]),
    ({"type": "ExternalName", "ports": []}, ["spec.externalName: Required value"]),
    ({"type": "ExternalName", "externalName": "db", "clusterIP": "10.96.0.5"},
     ["spec.clusterIPs: Forbidden: may not be set for ExternalName services"]),
    ({"sessionAffinity": "Sticky"},
     ['spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"']),
    ({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     ["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less "
      "than 86400"]),
    ({"externalTrafficPolicy": "Local"},
     ["spec.externalTrafficPolicy: Forbidden: may only be set for externally-accessible services"]),
    ({"type": "LoadBalancer", "externalTrafficPolicy": "Nearest"},
     ['spec.externalTrafficPolicy: Unsupported value: "Nearest": supported values: "Cluster", "Local"']),
    ({"loadBalancerSourceRanges": ["10.0.0.0/8"]},
     ["spec.loadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"]),
    ({"selector": {"app": "a b"}},
     ['spec.selector: Invalid value: "a b": a valid label must be an empty string or consist of alphanumeric '
      "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  "
      "or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]),
])
def test_service_rules(spec: dict[str, Any], expected: list[str]) -> None:
    assert check(svc(**spec)) == expected


def test_cluster_ip_immutable_once_set() -> None:
    old = svc(clusterIP="10.96.0.10")
    assert check(svc(clusterIP="10.96.0.10"), old) == []
    assert check(svc(clusterIP="10.96.0.11"), old) == [
        'spec.clusterIP: Invalid value: "10.96.0.11": field is immutable']
    assert check(svc(clusterIP="10.96.0.11"), svc()) == []
    assert check(svc(type="ExternalName", externalName="x.example.com", ports=[]), old) == []


def test_endpoints() -> None:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web", "namespace": "default"},
           "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}]}
    assert check(doc) == []
    doc["subsets"][0]["addresses"][0]["ip"] = "nope"
    doc["subsets"][0]["ports"].append({"port": 0})
    assert check(doc) == [
        'subsets[0].addresses[0].ip: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or '
        "2001:db8::ffff)",
        "subsets[0].ports[0].name: Required value",
        "subsets[0].ports[1].name: Required value",
        f"subsets[0].ports[1].port: Invalid value: 0: {PORT_MSG}",
    ]


# --- the smaller kinds ---------------------------------------------------------------------

def test_namespace() -> None:
    ns: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    assert check(ns) == []
    bad = copy.deepcopy(ns)
    bad["spec"] = {"finalizers": ["cleanup"]}
    assert check(bad) == ['spec.finalizers: Invalid value: "cleanup": name is neither a standard finalizer name '
                          "nor is it fully qualified"]


def node(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": spec,
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}


@pytest.mark.parametrize("spec, expected", [
    ({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}], "podCIDR": "10.244.1.0/24"}, []),
    ({"taints": [{"key": "dedicated", "effect": ""}]}, ["spec.taints[0].effect: Required value"]),
    ({"taints": [{"key": "dedicated", "effect": "Repel"}]},
     ['spec.taints[0].effect: Unsupported value: "Repel": supported values: "NoSchedule", "PreferNoSchedule", '
      '"NoExecute"']),
    ({"taints": [{"key": "", "effect": "NoSchedule"}]},
     ['spec.taints[0].key: Invalid value: "": name part must be non-empty',
      "spec.taints[0].key: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or "
      "'.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
      "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"]),
    ({"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "value": "x", "effect": "NoSchedule"}]},
     ['spec.taints[1]: Duplicate value: core.Taint{Key:"a", Value:"x", Effect:"NoSchedule", '
      "TimeAdded:(*v1.Time)(nil)}: taints must be unique by key and effect pair"]),
    ({"podCIDR": "10.244.1.0"},  # defaulting copies podCIDR into podCIDRs
     ['spec.podCIDRs[0]: Invalid value: "10.244.1.0": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
      "2001:db8::/64)",
      'spec.podCIDR: Invalid value: "10.244.1.0": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)']),
])
def test_node(spec: dict[str, Any], expected: list[str]) -> None:
    assert check(node(**spec)) == expected


def test_node_capacity_and_updates() -> None:
    doc = node()
    doc["status"]["capacity"]["cpu"] = "-1"
    assert check(doc) == [
        'status.capacity[cpu]: Invalid value: "-1": must be greater than or equal to 0',
        'status.allocatable[cpu]: Invalid value: "-1": must be greater than or equal to 0']
    assert check(node(podCIDR="10.244.1.0/24"), node()) == []
    assert check(node(podCIDR="10.244.2.0/24"), node(podCIDR="10.244.1.0/24")) == [
        'spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid']


def test_config_map_and_secret() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
          "data": {"app.conf": "x"}}
    assert check(cm) == []
    bad = copy.deepcopy(cm)
    bad["data"] = {"a/b": "x"}
    assert check(bad) == [
        "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' "
        "or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]
    tls: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
           "type": "kubernetes.io/tls", "stringData": {"tls.crt": "c"}}
    assert check(tls) == ["data[tls.key]: Required value"]
    tls["stringData"]["tls.key"] = "k"
    assert check(tls) == []


def test_immutable_config_map_and_secret() -> None:
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
          "data": {"a": "1"}, "immutable": True}
    changed = copy.deepcopy(cm)
    changed["data"]["a"] = "2"
    del changed["immutable"]
    assert check(changed, cm) == ["immutable: Forbidden: field is immutable when `immutable` is set",
                                  "data: Forbidden: field is immutable when `immutable` is set"]
    assert check(cm, cm) == []
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
              "stringData": {"a": "1"}}
    retyped = copy.deepcopy(secret)
    retyped["type"] = "kubernetes.io/basic-auth"
    retyped["stringData"] = {"username": "u"}
    assert check(retyped, secret) == ['type: Invalid value: "kubernetes.io/basic-auth": field is immutable']


def test_event() -> None:
    ev: dict[str, Any] = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "default"},
          "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started",
          "type": "Normal", "count": 1}
    assert check(ev) == []
    bad = copy.deepcopy(ev)
    bad["involvedObject"] = {"namespace": "other"}
    bad["type"] = "Info"
    assert check(bad) == [
        "involvedObject.kind: Required value", "involvedObject.name: Required value",
        'involvedObject.namespace: Invalid value: "other": does not match event.namespace',
        'type: Unsupported value: "Info": supported values: "Normal", "Warning"']


def test_lease() -> None:
    lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "n1", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}
    assert check(lease) == []
    lease["spec"]["leaseDurationSeconds"] = 0
    lease["spec"]["leaseTransitions"] = -1
    assert check(lease) == ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0"]


def test_runtime_class() -> None:
    rc: dict[str, Any] = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "process"},
          "handler": "process", "overhead": {"podFixed": {"cpu": "10m"}}}
    assert check(rc) == []
    other = copy.deepcopy(rc)
    other["handler"] = "runc"
    assert check(other, rc) == ['handler: Invalid value: "runc": field is immutable']
    other["handler"] = "Run_C"
    assert check(other)[0].startswith('handler: Invalid value: "Run_C": a lowercase RFC 1123 label')
