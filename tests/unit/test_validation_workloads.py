"""Workload validation: ReplicaSet, ReplicationController, Deployment, DaemonSet, StatefulSet —
selectors, templates, strategies, counts, immutability and status."""
from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from controlplane.apiserver.defaults import apply_defaults
from controlplane.apiserver.validation import validate_object
from controlplane.client.codec import decode_object

Mutation = Callable[[dict[str, Any]], object]
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}


def workload(kind: str) -> dict[str, Any]:
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    selector: Any = {"app": "web"} if kind == "ReplicationController" else {"matchLabels": {"app": "web"}}
    spec: dict[str, Any] = {"selector": selector, "template": copy.deepcopy(TEMPLATE)}
    if kind != "DaemonSet":
        spec["replicas"] = 2
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "web", "namespace": "default"}, "spec": spec}


def errors(kind: str, mutate: Mutation, old_mutate: Mutation | None = None) -> list[str]:
    doc = workload(kind)
    mutate(doc)
    obj = decode_object(doc)
    apply_defaults(obj)
    old = None
    if old_mutate is not None:
        old_doc = workload(kind)
        old_mutate(old_doc)
        old = decode_object(old_doc)
        apply_defaults(old)
    return validate_object(obj, old)


def spec(**fields: Any) -> Mutation:
    return lambda doc: doc["spec"].update(fields)


def template_spec(**fields: Any) -> Mutation:
    return lambda doc: doc["spec"]["template"]["spec"].update(fields)


def nothing(doc: dict[str, Any]) -> None:
    return None


APPS = ("ReplicaSet", "Deployment", "DaemonSet", "StatefulSet")
WHAT = {"ReplicaSet": "deployment", "Deployment": "deployment", "DaemonSet": "daemonset",
        "StatefulSet": "statefulset"}


@pytest.mark.parametrize("kind", APPS + ("ReplicationController",))
def test_valid_workloads(kind: str) -> None:
    assert errors(kind, nothing) == []


@pytest.mark.parametrize("kind", APPS)
def test_selector_required(kind: str) -> None:
    errs = errors(kind, lambda doc: doc["spec"].pop("selector"))
    assert errs[0] == "spec.selector: Required value"


@pytest.mark.parametrize("kind", APPS)
def test_empty_selector(kind: str) -> None:
    assert errors(kind, spec(selector={})) == [
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        f"MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}: empty selector is invalid for {WHAT[kind]}"]


@pytest.mark.parametrize("kind", APPS)
def test_selector_must_match_template(kind: str) -> None:
    assert errors(kind, spec(selector={"matchLabels": {"app": "db"}})) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`"]


def test_rc_selector_rules() -> None:
    assert errors("ReplicationController", spec(selector={"app": "db"})) == [
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
        "`selector` does not match template `labels`"]
    # an empty RC selector is defaulted from the template's labels, as in Kubernetes
    assert errors("ReplicationController", spec(selector={})) == []
    assert errors("ReplicationController", lambda doc: doc["spec"].pop("template")) == [
        "spec.template: Required value"]


def test_selector_expressions() -> None:
    sel = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]},
                                {"key": "tier", "operator": "DoesNotExist"}]}
    assert errors("ReplicaSet", spec(selector=sel)) == []
    bad = {"matchExpressions": [{"key": "app", "operator": "In"}, {"key": "x", "operator": "Exists", "values": ["a"]},
                                {"key": "y", "operator": "Has"}]}
    assert errors("ReplicaSet", spec(selector=bad)) == [
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is "
        "'In' or 'NotIn'",
        "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is "
        "'Exists' or 'DoesNotExist'",
        'spec.selector.matchExpressions[2].operator: Invalid value: "Has": not a valid selector operator',
    ]


@pytest.mark.parametrize("kind", ("ReplicaSet", "Deployment", "StatefulSet", "ReplicationController"))
def test_replicas_nonnegative(kind: str) -> None:
    assert errors(kind, spec(replicas=-1)) == ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]


@pytest.mark.parametrize("kind", APPS + ("ReplicationController",))
def test_template_restart_policy_always(kind: str) -> None:
    assert errors(kind, template_spec(restartPolicy="Never")) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"']


def test_template_restart_policy_unknown_reports_both() -> None:
    assert errors("Deployment", template_spec(restartPolicy="Sometimes")) == [
        'spec.template.spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", '
        '"OnFailure", "Never"',
        'spec.template.spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always"']


def test_template_pod_spec_is_validated() -> None:
    def two(doc: dict[str, Any]) -> None:
        doc["spec"]["template"]["spec"]["containers"].append({"name": "web", "image": ""})
    assert errors("Deployment", two) == ["spec.template.spec.containers[1].name: Duplicate value: \"web\"",
                                         "spec.template.spec.containers[1].image: Required value"]


def test_template_active_deadline_forbidden() -> None:
    assert errors("ReplicaSet", template_spec(activeDeadlineSeconds=10)) == [
        "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"]


# --- Deployment strategy -------------------------------------------------------------------

def strategy(value: dict[str, Any]) -> Mutation:
    return spec(strategy=value)


@pytest.mark.parametrize("value, expected", [
    ({"type": "Recreate"}, []),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, []),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "10%"}}, []),
    ({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}},
     ["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]),
    ({"type": "BlueGreen"},
     ['spec.strategy.type: Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"']),
    ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
     ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, "
      'StrVal:""}: may not be 0 when `maxSurge` is 0']),
    ({"rollingUpdate": {"maxSurge": -1}},
     ["spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0"]),
    ({"rollingUpdate": {"maxUnavailable": "half"}},
     ['spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, '
      'StrVal:"half"}: a valid percent string must be a numeric string followed by an ending \'%\' (e.g. '
      "'1%',  or '93%', regex used for validation is '[0-9]+%')"]),
    ({"rollingUpdate": {"maxUnavailable": "150%"}},
     ['spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, '
      'StrVal:"150%"}: must not be greater than 100%']),
])
def test_deployment_strategy(value: dict[str, Any], expected: list[str]) -> None:
    assert errors("Deployment", strategy(value)) == expected


def test_deployment_numbers() -> None:
    assert errors("Deployment", spec(minReadySeconds=10, progressDeadlineSeconds=5)) == [
        "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"]
    assert errors("Deployment", spec(revisionHistoryLimit=-1)) == [
        "spec.revisionHistoryLimit: Invalid value: -1: must be greater than or equal to 0"]
    assert errors("Deployment", spec(minReadySeconds=-1)) == [
        "spec.minReadySeconds: Invalid value: -1: must be greater than or equal to 0"]


# --- DaemonSet strategy --------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ({"type": "OnDelete"}, []),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}, []),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}},
     ["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}},
     ["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:0, IntVal:1, "
      'StrVal:""}: may not be set when maxUnavailable is non-zero']),
    ({"type": "Sometimes"},
     ['spec.updateStrategy.type: Unsupported value: "Sometimes": supported values: "RollingUpdate", "OnDelete"']),
])
def test_daemon_set_strategy(value: dict[str, Any], expected: list[str]) -> None:
    assert errors("DaemonSet", spec(updateStrategy=value)) == expected


# --- StatefulSet ---------------------------------------------------------------------------

@pytest.mark.parametrize("fields, expected", [
    ({"podManagementPolicy": "Parallel"}, []),
    ({"podManagementPolicy": "Random"},
     ["spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'"]),
    ({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}},
     ["spec.updateStrategy.rollingUpdate.partition: Invalid value: -1: must be greater than or equal to 0"]),
    ({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 1}}},
     ["spec.updateStrategy.rollingUpdate: Invalid value: null: only allowed for updateStrategy 'RollingUpdate'"]),
    ({"updateStrategy": {"type": "Rolling"}},
     ["spec.updateStrategy: Invalid value: \"Rolling\": must be 'RollingUpdate' or 'OnDelete'"]),
    ({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}}},
     ['spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, '
      'StrVal:""}: cannot be 0']),
    ({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep"}},
     ['spec.persistentVolumeClaimRetentionPolicy.whenDeleted: Unsupported value: "Keep": supported values: '
      '"Retain", "Delete"']),
    ({"ordinals": {"start": -1}}, ["spec.ordinals.start: Invalid value: -1: must be greater than or equal to 0"]),
    ({"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                                     "resources": {"requests": {"storage": "1Gi"}}}}]},
     []),
    ({"volumeClaimTemplates": [{"metadata": {"name": "Data"}, "spec": {"accessModes": ["ReadWriteSome"]}}]},
     ['spec.volumeClaimTemplates[0].metadata.name: Invalid value: "Data": a lowercase RFC 1123 subdomain must '
      "consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
      "character (e.g. 'example.com', regex used for validation is "
      "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      'spec.volumeClaimTemplates[0].spec.accessModes: Unsupported value: "ReadWriteSome": supported values: '
      '"ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"',
      "spec.volumeClaimTemplates[0].spec.resources[storage]: Required value"]),
])
def test_stateful_set_rules(fields: dict[str, Any], expected: list[str]) -> None:
    assert errors("StatefulSet", spec(**fields)) == expected


# --- updates -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", APPS)
def test_selector_immutable(kind: str) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "front"}}
        doc["spec"]["template"]["metadata"]["labels"]["tier"] = "front"
    expected = [
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web", '
        '"tier":"front"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable']
    if kind == "StatefulSet":  # the selector is not among a StatefulSet's mutable fields either
        expected.append(
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
            "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are "
            "forbidden")
    assert errors(kind, change, nothing) == expected
    assert errors(kind, nothing, nothing) == []


def test_rc_selector_is_mutable() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["spec"]["selector"] = {"app": "web", "tier": "front"}
        doc["spec"]["template"]["metadata"]["labels"]["tier"] = "front"
    assert errors("ReplicationController", change, nothing) == []


def test_stateful_set_update_rules() -> None:
    allowed = spec(replicas=5, minReadySeconds=3, updateStrategy={"type": "OnDelete"}, ordinals={"start": 2},
                   persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Retain"})
    assert errors("StatefulSet", allowed, nothing) == []
    assert errors("StatefulSet", template_spec(containers=[{"name": "web", "image": "nginx:2"}]), nothing) == []
    assert errors("StatefulSet", spec(serviceName="other"), nothing) == [
        "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
        "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"]
    assert errors("StatefulSet", spec(podManagementPolicy="Parallel"), nothing)[0].startswith("spec: Forbidden")


# --- status --------------------------------------------------------------------------------

def status(**fields: Any) -> Mutation:
    return lambda doc: doc.setdefault("status", {}).update(fields)


def test_status_counts() -> None:
    assert errors("Deployment", status(replicas=2, readyReplicas=2, availableReplicas=1)) == []
    assert errors("Deployment", status(replicas=-1)) == [
        "status.replicas: Invalid value: -1: must be greater than or equal to 0"]
    assert errors("ReplicaSet", status(replicas=1, readyReplicas=2, availableReplicas=2)) == [
        "status.readyReplicas: Invalid value: 2: cannot be greater than status.replicas",
        "status.availableReplicas: Invalid value: 2: cannot be greater than status.replicas"]
    assert errors("StatefulSet", status(replicas=3, readyReplicas=1, availableReplicas=2)) == [
        "status.availableReplicas: Invalid value: 2: cannot be greater than readyReplicas"]
    assert errors("DaemonSet", status(numberReady=-2)) == [
        "status.numberReady: Invalid value: -2: must be greater than or equal to 0"]


def test_stateful_set_mounts_may_name_claim_templates() -> None:
    def mount(doc: dict[str, Any]) -> None:
        doc["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
    assert errors("StatefulSet", mount) == ['spec.template.spec.containers[0].volumeMounts[0].name: Not found: "www"']

    def with_claim(doc: dict[str, Any]) -> None:
        mount(doc)
        doc["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "www"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    assert errors("StatefulSet", with_claim) == []
