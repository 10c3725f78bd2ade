"""Validation basics: error formatting, name formats, ObjectMeta and label selectors.

Each rule has a valid and an invalid case with Kubernetes' exact message.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest

from controlplane.apiserver.defaults import apply_defaults
from controlplane.apiserver.validation import names, validate_object
from controlplane.apiserver.validation.field import ErrorList, GoLiteral, Path, go_quote
from controlplane.client.codec import decode_object

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
             "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
             "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
               "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
               "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
QNAME_PART_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                  "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                  "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def check(doc: dict[str, Any], old_doc: dict[str, Any] | None = None) -> list[str]:
    """Decode, default (as the API server does) and validate; the messages."""
    obj = decode_object(doc)
    apply_defaults(obj)
    old = None
    if old_doc is not None:
        old = decode_object(old_doc)
        apply_defaults(old)
    return validate_object(obj, old)


CONFIG_MAP: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "b"}}


def with_meta(**meta: Any) -> dict[str, Any]:
    doc = copy.deepcopy(CONFIG_MAP)
    doc["metadata"].update(meta)
    return doc


# --- formatting ----------------------------------------------------------------------------

def test_error_formats_match_kubernetes() -> None:
    errs = ErrorList()
    p = Path("spec").child("template", "spec").child("containers").index(1)
    errs.required(p.child("image"))
    errs.required(Path("metadata").child("name"), "name or generateName is required")
    errs.invalid(Path("spec").child("replicas"), -1, "must be greater than or equal to 0")
    errs.invalid(Path("spec").child("template", "metadata", "labels"), {"app": "x"},
                 "`selector` does not match template `labels`")
    errs.not_supported(Path("spec").child("restartPolicy"), "Sometimes", ["Always", "OnFailure", "Never"])
    errs.duplicate(p.child("name"), "web")
    errs.forbidden(Path("spec"), "no")
    errs.too_long(Path("metadata").child("annotations"), 262144)
    errs.too_many(Path("spec").child("x"), 5, 3)
    errs.not_found(p.child("volumeMounts").index(0).child("name"), "data")
    errs.invalid(Path("a"), True, "b")
    errs.invalid(Path("a"), None, "c")
    errs.invalid(Path("a"), ["x", "y"], "d")
    errs.invalid(Path("a"), GoLiteral("v1.Thing{}"), "e")
    errs.invalid(Path("a").key("cpu"), {}, "f")
    assert errs.messages() == [
        "spec.template.spec.containers[1].image: Required value",
        "metadata.name: Required value: name or generateName is required",
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        'spec.template.metadata.labels: Invalid value: map[string]string{"app":"x"}: '
        "`selector` does not match template `labels`",
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
        'spec.template.spec.containers[1].name: Duplicate value: "web"',
        "spec: Forbidden: no",
        "metadata.annotations: Too long: may not be more than 262144 bytes",
        "spec.x: Too many: 5: must have at most 3 items",
        'spec.template.spec.containers[1].volumeMounts[0].name: Not found: "data"',
        "a: Invalid value: true: b",
        "a: Invalid value: null: c",
        'a: Invalid value: []string{"x", "y"}: d',
        "a: Invalid value: v1.Thing{}: e",
        "a[cpu]: Invalid value: map[string]string(nil): f",
    ]


@pytest.mark.parametrize("text, quoted", [
    ("plain", '"plain"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("tab\t", '"tab\\t"'),
    ("\x01", '"\\x01"'), ("é", '"é"'), ("\u200b", '"\\u200b"'),
])
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


# --- name formats --------------------------------------------------------------------------

@pytest.mark.parametrize("check_fn, value, expected", [
    (names.is_dns1123_label, "my-name", []),
    (names.is_dns1123_label, "My_name", [LABEL_MSG]),
    (names.is_dns1123_label, "a" * 64, ["must be no more than 63 characters"]),
    (names.is_dns1123_label, "a.b", [LABEL_MSG]),
    (names.is_dns1123_subdomain, "example.com", []),
    (names.is_dns1123_subdomain, "Web_1", [SUBDOMAIN_MSG]),
    (names.is_dns1123_subdomain, "a" * 254, ["must be no more than 253 characters"]),
    (names.is_dns1035_label, "web", []),
    (names.is_dns1035_label, "1web", [DNS1035_MSG]),
    (names.is_qualified_name, "app", []),
    (names.is_qualified_name, "example.com/app_1.x", []),
    (names.is_qualified_name, "-app", [QNAME_PART_MSG]),
    (names.is_qualified_name, "/app", ["prefix part must be non-empty"]),
    (names.is_qualified_name, "Example.com/app", ["prefix part " + SUBDOMAIN_MSG]),
    (names.is_qualified_name, "a" * 64, ["name part must be no more than 63 characters"]),
    (names.is_qualified_name, "", ["name part must be non-empty", QNAME_PART_MSG]),
    (names.is_qualified_name, "a/b/c", [
        "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
        "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
        "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and "
        "'/' (e.g. 'example.com/MyName')"]),
    (names.is_valid_label_value, "", []),
    (names.is_valid_label_value, "v1.2_x", []),
    (names.is_valid_label_value, "bad value", [LABEL_VALUE_MSG]),
    (names.is_valid_label_value, "a" * 64, ["must be no more than 63 characters"]),
    (names.is_valid_port_name, "http", []),
    (names.is_valid_port_name, "HTTP", ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                                        "must contain at least one letter (a-z)"]),
    (names.is_valid_port_name, "8080", ["must contain at least one letter (a-z)"]),
    (names.is_valid_port_name, "a--b", ["must not contain consecutive hyphens"]),
    (names.is_valid_port_name, "-ab", ["must not begin or end with a hyphen"]),
    (names.is_valid_port_name, "abcdefghijklmnop", ["must be no more than 15 characters"]),
    (names.is_env_var_name, "MY_VAR.x-1", []),
    (names.is_env_var_name, "1VAR", [
        "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', "
        "and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex "
        "used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"]),
    (names.is_env_var_name, "..", ["must not be '..'"]),
    (names.is_valid_percent, "25%", []),
    (names.is_valid_percent, "25", [
        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', "
        "regex used for validation is '[0-9]+%')"]),
    (names.is_config_map_key, "key.name", []),
    (names.is_config_map_key, "a/b", [
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
        "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]),
    (names.is_valid_ip, "10.0.0.1", []),
    (names.is_valid_ip, "10.0.0", ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]),
    (names.is_valid_cidr, "10.0.0.0/24", []),
    (names.is_valid_cidr, "10.0.0.0", ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]),
])
def test_name_formats(check_fn: Any, value: str, expected: list[str]) -> None:
    assert check_fn(value) == expected


# --- ObjectMeta ----------------------------------------------------------------------------

@pytest.mark.parametrize("meta, expected", [
    ({}, []),
    ({"name": ""}, ["metadata.name: Required value: name or generateName is required"]),
    ({"name": "Web_1"}, [f'metadata.name: Invalid value: "Web_1": {SUBDOMAIN_MSG}']),
    ({"name": "", "generateName": "web-"}, ["metadata.name: Required value: name or generateName is required"]),
    ({"generateName": "Web-"}, [f'metadata.generateName: Invalid value: "Web-": {SUBDOMAIN_MSG}']),
    ({"namespace": ""}, ["metadata.namespace: Required value"]),
    ({"namespace": "Bad"}, [f'metadata.namespace: Invalid value: "Bad": {LABEL_MSG}']),
    ({"labels": {"app": "web", "example.com/tier": "front"}}, []),
    ({"labels": {"-app": "web"}}, [f'metadata.labels: Invalid value: "-app": {QNAME_PART_MSG}']),
    ({"labels": {"app": "bad value"}}, [f'metadata.labels: Invalid value: "bad value": {LABEL_VALUE_MSG}']),
    ({"annotations": {"Example.com/Note": "free text!"}}, []),
    ({"annotations": {"a b": "x"}}, [f'metadata.annotations: Invalid value: "a b": {QNAME_PART_MSG}']),
    ({"annotations": {"big": "x" * 262142}}, ["metadata.annotations: Too long: may not be more than 262144 bytes"]),
    ({"finalizers": ["example.com/cleanup", "kubernetes"]}, []),
    ({"finalizers": ["cleanup"]}, ['metadata.finalizers: Invalid value: "cleanup": name is neither a standard '
                                   "finalizer name nor is it fully qualified"]),
    ({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1"}]}, []),
    ({"ownerReferences": [{"apiVersion": "", "kind": "ReplicaSet", "name": "a", "uid": ""}]}, [
        'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty']),
    ({"ownerReferences": [
        {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": True},
        {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": True}]}, [
        'metadata.ownerReferences: Invalid value: []string{"a", "b"}: Only one reference can have Controller '
        'set to true. Found "true" in references for a and b']),
])
def test_object_meta(meta: dict[str, Any], expected: list[str]) -> None:
    assert check(with_meta(**meta)) == expected


def test_annotation_size_limit_counts_keys_and_values() -> None:
    assert check(with_meta(annotations={"big": "x" * (262144 - 3)})) == []


def test_namespace_forbidden_on_cluster_scoped_kinds() -> None:
    doc = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "namespace": "default"}}
    assert check(doc) == ["metadata.namespace: Forbidden: not allowed on this type"]


@pytest.mark.parametrize("kind, name, expected", [
    ("Namespace", "team-a", []),
    ("Namespace", "team.a", [f'metadata.name: Invalid value: "team.a": {LABEL_MSG}']),
    ("Node", "node-1.example.com", []),
])
def test_names_per_kind(kind: str, name: str, expected: list[str]) -> None:
    assert check({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}) == expected


def test_service_names_are_dns1035_labels() -> None:
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web", "namespace": "default"},
           "spec": {"ports": [{"port": 80}]}}
    assert check(doc) == [f'metadata.name: Invalid value: "1web": {DNS1035_MSG}']


def test_metadata_immutable_on_update() -> None:
    old = with_meta(uid="u1", creationTimestamp="2026-01-01T00:00:00Z")
    new = with_meta(name="other", uid="u2", creationTimestamp="2026-01-01T00:00:00Z")
    assert check(new, old) == [
        'metadata.name: Invalid value: "other": field is immutable',
        'metadata.uid: Invalid value: "u2": field is immutable',
    ]
    assert check(old, old) == []


def test_no_new_finalizers_while_deleting() -> None:
    old = with_meta(deletionTimestamp="2026-01-01T00:00:00Z", finalizers=["example.com/a"])
    new = with_meta(deletionTimestamp="2026-01-01T00:00:00Z", finalizers=["example.com/a", "example.com/b"])
    assert check(new, old) == ['metadata.finalizers: Forbidden: no new finalizers can be added if the object '
                               'is being deleted, found new finalizers []string{"example.com/b"}']
    assert check(with_meta(deletionTimestamp="2026-01-01T00:00:00Z"), old) == []


def test_every_problem_is_reported() -> None:
    errs = check(with_meta(name="Bad_Name", labels={"-x": "y y"}))
    assert len(errs) == 3
