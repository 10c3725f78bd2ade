"""Pod validation: containers, ports, env, resources, mounts, volumes, probes, scheduling,
pod updates and status. Each rule: a valid case and an invalid one with the exact message."""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from controlplane.apiserver.defaults import apply_defaults
from controlplane.apiserver.validation import validate_object
from controlplane.client.codec import decode_object

LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
PORT_MSG = "must be between 1 and 65535, inclusive"

POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
}

Mutation = Callable[[dict[str, Any]], object]


def pod_errors(mutate: Mutation, defaults: bool = True) -> list[str]:
    doc = copy.deepcopy(POD)
    mutate(doc)
    obj = decode_object(doc)
    if defaults:
        apply_defaults(obj)
    return validate_object(obj, None)


def ctr(doc: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return doc["spec"]["containers"][i]


def set_ctr(**fields: Any) -> Mutation:
    return lambda doc: ctr(doc).update(fields)


def set_spec(**fields: Any) -> Mutation:
    return lambda doc: doc["spec"].update(fields)


def add_ctr(**fields: Any) -> Mutation:
    return lambda doc: doc["spec"]["containers"].append({"name": "side", "image": "busybox", **fields})


CASES: list[tuple[str, Mutation, list[str]]] = [
    ("valid", lambda doc: None, []),
    ("no containers", set_spec(containers=[]), ["spec.containers: Required value"]),
    ("image required", set_ctr(image=""), ["spec.containers[0].image: Required value"]),
    ("image whitespace", set_ctr(image=" nginx"),
     ['spec.containers[0].image: Invalid value: " nginx": must not have leading or trailing whitespace']),
    ("name required", set_ctr(name=""), ["spec.containers[0].name: Required value"]),
    ("name a label", set_ctr(name="Web"), [f'spec.containers[0].name: Invalid value: "Web": {LABEL_MSG}']),
    ("duplicate name", add_ctr(name="web"), ['spec.containers[1].name: Duplicate value: "web"']),
    ("init duplicate name", set_spec(initContainers=[{"name": "web", "image": "busybox"}]),
     ['spec.containers[0].name: Duplicate value: "web"']),
    ("restartPolicy", set_spec(restartPolicy="Sometimes"),
     ['spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"']),
    ("restartPolicy ok", set_spec(restartPolicy="OnFailure"), []),
    ("dnsPolicy", set_spec(dnsPolicy="Google"),
     ['spec.dnsPolicy: Unsupported value: "Google": supported values: "ClusterFirst", '
      '"ClusterFirstWithHostNet", "Default", "None"']),
    ("dnsPolicy None needs config", set_spec(dnsPolicy="None"),
     ["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]),
    ("dnsPolicy None ok", set_spec(dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"]}), []),
    ("imagePullPolicy", set_ctr(imagePullPolicy="Sometimes"),
     ['spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", '
      '"IfNotPresent", "Never"']),
    ("terminationMessagePolicy", set_ctr(terminationMessagePolicy="Stderr"),
     ['spec.containers[0].terminationMessagePolicy: Invalid value: "Stderr": must be \'File\' or '
      "'FallbackToLogsOnError'"]),
    # ports
    ("ports ok", set_ctr(ports=[{"name": "http", "containerPort": 80, "hostPort": 8080}]), []),
    ("containerPort required", set_ctr(ports=[{"name": "http"}]),
     ["spec.containers[0].ports[0].containerPort: Required value"]),
    ("containerPort range", set_ctr(ports=[{"containerPort": 70000}]),
     [f"spec.containers[0].ports[0].containerPort: Invalid value: 70000: {PORT_MSG}"]),
    ("hostPort range", set_ctr(ports=[{"containerPort": 80, "hostPort": -1}]),
     [f"spec.containers[0].ports[0].hostPort: Invalid value: -1: {PORT_MSG}"]),
    ("protocol", set_ctr(ports=[{"containerPort": 80, "protocol": "ICMP"}]),
     ['spec.containers[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", '
      '"UDP"']),
    ("duplicate port names", set_ctr(ports=[{"name": "http", "containerPort": 80},
                                            {"name": "http", "containerPort": 81}]),
     ['spec.containers[0].ports[1].name: Duplicate value: "http"']),
    ("bad port name", set_ctr(ports=[{"name": "8080", "containerPort": 80}]),
     ['spec.containers[0].ports[0].name: Invalid value: "8080": must contain at least one letter (a-z)']),
    ("host port conflict", lambda doc: (set_ctr(ports=[{"containerPort": 80, "hostPort": 80}])(doc),
                                        add_ctr(ports=[{"containerPort": 81, "hostPort": 80}])(doc)),
     ['spec.containers[1].ports[0].hostPort: Duplicate value: "TCP//80"']),
    ("hostNetwork ports", set_spec(hostNetwork=True, containers=[
        {"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "hostPort": 81}]}]),
     ["spec.containers[0].ports[0].hostPort: Invalid value: 81: must match `containerPort` when "
      "`hostNetwork` is true"]),
    # env
    ("env ok", set_ctr(env=[{"name": "A", "value": "1"},
                            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]), []),
    ("env name required", set_ctr(env=[{"value": "1"}]), ["spec.containers[0].env[0].name: Required value"]),
    ("env name invalid", set_ctr(env=[{"name": "1A"}]),
     ['spec.containers[0].env[0].name: Invalid value: "1A": a valid environment variable name must consist '
      "of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. "
      "'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is "
      "'[-._a-zA-Z][-._a-zA-Z0-9]*')"]),
    ("env two sources", set_ctr(env=[{"name": "A", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}}]),
     ['spec.containers[0].env[0].valueFrom: Invalid value: "": may not have more than one field specified '
      "at a time"]),
    ("env value and source", set_ctr(env=[{"name": "A", "value": "x",
                                           "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
     ['spec.containers[0].env[0].valueFrom: Invalid value: "": may not be specified when `value` is not '
      "empty"]),
    ("env fieldPath", set_ctr(env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.foo"}}}]),
     ['spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: "spec.foo": supported '
      'values: "metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace", '
      '"metadata.uid", "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", '
      '"status.podIP", "status.podIPs"']),
    ("envFrom none", set_ctr(envFrom=[{"prefix": "X_"}]),
     ['spec.containers[0].envFrom[0]: Invalid value: "": must specify one of: `configMapRef` or `secretRef`']),
    # resources
    ("resources ok", set_ctr(resources={"requests": {"cpu": "100m", "memory": "64Mi"},
                                        "limits": {"cpu": "1", "memory": "128Mi"}}), []),
    ("negative quantity", set_ctr(resources={"requests": {"cpu": "-1"}}),
     ['spec.containers[0].resources.requests[cpu]: Invalid value: "-1": must be greater than or equal to 0']),
    ("request above limit", set_ctr(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}),
     ['spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit '
      "of 500m"]),
    ("unknown resource", set_ctr(resources={"limits": {"gpu": "1"}}),
     # defaulting copies the limit into requests, so Kubernetes reports both
     ['spec.containers[0].resources.limits[gpu]: Invalid value: "gpu": must be a standard resource for '
      "containers",
      'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": must be a standard resource for '
      "containers"]),
    ("extended resource fractional", set_ctr(resources={"limits": {"example.com/gpu": "500m"}}),
     ['spec.containers[0].resources.limits[example.com/gpu]: Invalid value: "500m": must be an integer',
      'spec.containers[0].resources.requests[example.com/gpu]: Invalid value: "500m": must be an integer']),
    ("extended request != limit", set_ctr(resources={"limits": {"example.com/gpu": "2"},
                                                     "requests": {"example.com/gpu": "1"}}),
     ['spec.containers[0].resources.requests: Invalid value: "1": must be equal to example.com/gpu limit '
      "of 2"]),
    # volumes and mounts
    ("volume ok", lambda doc: (set_spec(volumes=[{"name": "data", "emptyDir": {}}])(doc),
                               set_ctr(volumeMounts=[{"name": "data", "mountPath": "/data"}])(doc)), []),
    ("mount names no volume", set_ctr(volumeMounts=[{"name": "data", "mountPath": "/data"}]),
     ['spec.containers[0].volumeMounts[0].name: Not found: "data"']),
    ("mountPath required", lambda doc: (set_spec(volumes=[{"name": "data", "emptyDir": {}}])(doc),
                                        set_ctr(volumeMounts=[{"name": "data"}])(doc)),
     ["spec.containers[0].volumeMounts[0].mountPath: Required value"]),
    ("mountPath unique", lambda doc: (set_spec(volumes=[{"name": "a", "emptyDir": {}}])(doc),
                                      set_ctr(volumeMounts=[{"name": "a", "mountPath": "/x"},
                                                            {"name": "a", "mountPath": "/x"}])(doc)),
     ['spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/x": must be unique']),
    ("subPath escapes", lambda doc: (set_spec(volumes=[{"name": "a", "emptyDir": {}}])(doc),
                                     set_ctr(volumeMounts=[{"name": "a", "mountPath": "/x",
                                                            "subPath": "../etc"}])(doc)),
     ["spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../etc\": must not contain '..'"]),
    ("two volume sources", set_spec(volumes=[{"name": "a", "emptyDir": {}, "hostPath": {"path": "/tmp"}}]),
     ["spec.volumes[0].emptyDir: Forbidden: may not specify more than 1 volume type"]),
    ("duplicate volume", set_spec(volumes=[{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]),
     ['spec.volumes[1].name: Duplicate value: "a"']),
    ("volume name", set_spec(volumes=[{"name": "A", "emptyDir": {}}]),
     [f'spec.volumes[0].name: Invalid value: "A": {LABEL_MSG}']),
    ("secret name required", set_spec(volumes=[{"name": "s", "secret": {}}]),
     ["spec.volumes[0].secret.secretName: Required value"]),
    ("configMap mode", set_spec(volumes=[{"name": "c", "configMap": {"name": "c", "defaultMode": 1000}}]),
     ["spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 "
      "(octal), both inclusive"]),
    ("hostPath type", set_spec(volumes=[{"name": "h", "hostPath": {"path": "/x", "type": "Dir"}}]),
     ['spec.volumes[0].hostPath.type: Unsupported value: "Dir": supported values: "", "BlockDevice", '
      '"CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket"']),
    ("pvc claimName", set_spec(volumes=[{"name": "p", "persistentVolumeClaim": {}}]),
     ["spec.volumes[0].persistentVolumeClaim.claimName: Required value"]),
    # probes
    ("probe ok", set_ctr(livenessProbe={"httpGet": {"port": 80}}, readinessProbe={"tcpSocket": {"port": "http"}},
                         ports=[{"name": "http", "containerPort": 80}]), []),
    ("probe no handler", set_ctr(livenessProbe={"periodSeconds": 5}),
     ["spec.containers[0].livenessProbe: Required value: must specify a handler type"]),
    ("probe two handlers", set_ctr(readinessProbe={"exec": {"command": ["true"]}, "httpGet": {"port": 80}}),
     ["spec.containers[0].readinessProbe.httpGet: Forbidden: may not specify more than 1 handler type"]),
    ("probe negative threshold", set_ctr(readinessProbe={"exec": {"command": ["true"]}, "failureThreshold": -1}),
     ["spec.containers[0].readinessProbe.failureThreshold: Invalid value: -1: must be greater than or "
      "equal to 0"]),
    ("liveness success 1", set_ctr(livenessProbe={"exec": {"command": ["true"]}, "successThreshold": 2}),
     ["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"]),
    ("probe port", set_ctr(startupProbe={"httpGet": {"port": 0}}),
     [f"spec.containers[0].startupProbe.httpGet.port: Invalid value: 0: {PORT_MSG}"]),
    ("exec command", set_ctr(livenessProbe={"exec": {}}),
     ["spec.containers[0].livenessProbe.exec.command: Required value"]),
    ("lifecycle handler", set_ctr(lifecycle={"preStop": {}}),
     ["spec.containers[0].lifecycle.preStop: Required value: must specify a handler type"]),
    ("init container probes", set_spec(initContainers=[{"name": "init", "image": "busybox",
                                                        "readinessProbe": {"exec": {"command": ["true"]}}}]),
     ["spec.initContainers[0].readinessProbe: Forbidden: may not be set for init containers without "
      "restartPolicy=Always"]),
    ("sidecar ok", set_spec(initContainers=[{"name": "side", "image": "busybox", "restartPolicy": "Always",
                                             "readinessProbe": {"exec": {"command": ["true"]}}}]), []),
    # scheduling
    ("tolerations ok", set_spec(tolerations=[{"key": "k", "operator": "Equal", "value": "v",
                                              "effect": "NoSchedule"}, {"operator": "Exists"}]), []),
    ("toleration empty key", set_spec(tolerations=[{"operator": "Equal", "value": "v"}]),
     ['spec.tolerations[0].operator: Invalid value: "Equal": operator must be Exists when `key` is empty, '
      'which means "match all values and all keys"']),
    ("toleration operator", set_spec(tolerations=[{"key": "k", "operator": "In"}]),
     ['spec.tolerations[0].operator: Unsupported value: "In": supported values: "Equal", "Exists"']),
    ("toleration effect", set_spec(tolerations=[{"key": "k", "operator": "Exists", "effect": "Evict"}]),
     ['spec.tolerations[0].effect: Unsupported value: "Evict": supported values: "NoSchedule", '
      '"PreferNoSchedule", "NoExecute"']),
    ("tolerationSeconds needs NoExecute", set_spec(tolerations=[{"key": "k", "operator": "Exists",
                                                                 "effect": "NoSchedule", "tolerationSeconds": 5}]),
     ['spec.tolerations[0].effect: Invalid value: "NoSchedule": effect must be \'NoExecute\' when '
      "`tolerationSeconds` is set"]),
    ("Exists with value", set_spec(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
     ['spec.tolerations[0].operator: Invalid value: core.Toleration{Key:"k", Operator:"Exists", Value:"v", '
      'Effect:"", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is \'Exists\'']),
    ("node affinity ok", set_spec(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}, {"key": "gpu", "operator": "Exists"},
            {"key": "cores", "operator": "Gt", "values": ["4"]}]}]}}}), []),
    ("node affinity rules", set_spec(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In"}, {"key": "gpu", "operator": "DoesNotExist", "values": ["x"]},
            {"key": "cores", "operator": "Lt", "values": ["1", "2"]},
            {"key": "cores", "operator": "Gt", "values": ["many"]},
            {"key": "zone", "operator": "Near", "values": ["a"]}]}]}}}),
     ["spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
      "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or "
      "'DoesNotExist'",
      "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      ".matchExpressions[2].values: Required value: must be specified single value when `operator` is 'Lt' "
      "or 'Gt'",
      "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      '.matchExpressions[3].values[0]: Invalid value: "many": must be an integer when `operator` is \'Lt\' '
      "or 'Gt'",
      "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
      '.matchExpressions[4].operator: Invalid value: "Near": not a valid selector operator']),
    ("node affinity no terms", set_spec(affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}),
     ["spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required "
      "value: must have at least one node selector term"]),
    ("preferred weight", set_spec(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 0, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}}),
     ["spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: "
      "must be in the range 1-100"]),
    ("pod affinity topologyKey", set_spec(affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "web"}}}]}}),
     ["spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required "
      "value: can not be empty"]),
    ("nodeSelector labels", set_spec(nodeSelector={"disk": "ssd fast"}),
     ['spec.nodeSelector: Invalid value: "ssd fast": a valid label must be an empty string or consist of '
      "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
      "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
      "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]),
    ("activeDeadlineSeconds", set_spec(activeDeadlineSeconds=0),
     ["spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"]),
    ("topology spread", set_spec(topologySpreadConstraints=[{"maxSkew": 0, "topologyKey": "zone",
                                                             "whenUnsatisfiable": "Maybe"}]),
     ["spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero",
      'spec.topologySpreadConstraints[0].whenUnsatisfiable: Unsupported value: "Maybe": supported values: '
      '"DoNotSchedule", "ScheduleAnyway"']),
]


@pytest.mark.parametrize("name, mutate, expected", CASES, ids=[c[0] for c in CASES])
def test_pod_rules(name: str, mutate: Mutation, expected: list[str]) -> None:
    assert pod_errors(mutate) == expected


def test_undefaulted_pod_reports_missing_enums() -> None:
    errs = pod_errors(lambda doc: None, defaults=False)
    assert errs == [
        "spec.containers[0].imagePullPolicy: Required value",
        "spec.containers[0].terminationMessagePolicy: Required value: must be 'File' or 'FallbackToLogsOnError'",
        "spec.restartPolicy: Required value",
        "spec.dnsPolicy: Required value",
    ]


# --- updates -------------------------------------------------------------------------------

def pod_update_errors(mutate: Mutation, base: Mutation = lambda doc: None) -> list[str]:
    old_doc = copy.deepcopy(POD)
    base(old_doc)
    new_doc = copy.deepcopy(old_doc)
    mutate(new_doc)
    old, new = decode_object(old_doc), decode_object(new_doc)
    apply_defaults(old)
    apply_defaults(new)
    return validate_object(new, old)


def test_pod_update_allows_image_and_toleration_additions() -> None:
    def change(doc: dict[str, Any]) -> None:
        ctr(doc)["image"] = "nginx:1.26"
        doc["spec"]["tolerations"] = [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]
        doc["spec"]["activeDeadlineSeconds"] = 100
    assert pod_update_errors(change) == []


def test_pod_update_forbids_other_changes() -> None:
    errs = pod_update_errors(set_ctr(command=["sh"]))
    assert errs == [
        "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)\nchanged: spec.containers[0].command"]


def test_pod_update_containers_count() -> None:
    assert pod_update_errors(add_ctr()) == ["spec.containers: Forbidden: pod updates may not add or remove containers"]


def test_pod_update_tolerations_only_added() -> None:
    base = set_spec(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}])
    assert pod_update_errors(set_spec(tolerations=[]), base) == [
        "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
    more = [{"key": "k", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "j", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]
    assert pod_update_errors(set_spec(tolerations=more), base) == []


def test_pod_update_active_deadline() -> None:
    base = set_spec(activeDeadlineSeconds=100)
    assert pod_update_errors(set_spec(activeDeadlineSeconds=50), base) == []
    assert pod_update_errors(set_spec(activeDeadlineSeconds=200), base) == [
        "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"]
    assert pod_update_errors(lambda doc: doc["spec"].pop("activeDeadlineSeconds"), base) == [
        "spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"]


def test_pod_status_rules() -> None:
    def status(**fields: Any) -> Mutation:
        return lambda doc: doc.setdefault("status", {}).update(fields)
    assert pod_update_errors(status(phase="Running", podIP="10.1.0.5")) == []
    assert pod_update_errors(status(phase="Sleeping")) == [
        'status.phase: Unsupported value: "Sleeping": supported values: "Pending", "Running", "Succeeded", '
        '"Failed", "Unknown"']
    assert pod_update_errors(status(podIP="10.1")) == [
        'status.podIP: Invalid value: "10.1": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)']
    assert pod_update_errors(status(phase="Running"), status(phase="Succeeded")) == [
        "status.phase: Forbidden: cannot transition from terminal phase Succeeded to Running"]
    assert pod_update_errors(status(containerStatuses=[{"name": "web", "restartCount": -1}])) == [
        "status.containerStatuses[0].restartCount: Invalid value: -1: must be greater than or equal to 0"]
