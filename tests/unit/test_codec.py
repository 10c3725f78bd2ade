"""The codec: strict decoding with every error and its path, omitempty encoding, key order."""
from __future__ import annotations

import json
import pickle
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from controlplane.client import codec, scheme
from controlplane.client.codec import DecodeError, FieldError, decode, decode_object, encode
from protos.skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, meta_pb2, node_pb2

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 1}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 30
      volumes:
      - name: scratch
        emptyDir: {}
      containers:
      - name: web
        image: nginx:1.25
        args: ["--port", "80"]
        ports:
        - containerPort: 80
          name: http
        env:
        - {name: MODE, value: prod}
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {cpu: 1, memory: 1.5}
        readinessProbe:
          httpGet: {path: /, port: http}
"""


def _data(text: str = DEPLOYMENT) -> dict[str, Any]:
    return yaml.safe_load(text)


def _errors(data: Any, message_type: type[Message] = apps_pb2.Deployment) -> list[str]:
    with pytest.raises(DecodeError) as err:
        decode(data, message_type)
    return [str(e) for e in err.value.errors]


def test_decode_deployment() -> None:
    d = decode(_data(), apps_pb2.Deployment)
    assert d.metadata.name == "web" and d.spec.replicas == 3
    assert d.spec.strategy.rolling_update.max_surge.str_val == "25%"
    assert d.spec.strategy.rolling_update.max_unavailable.int_val == 1
    pod = d.spec.template.spec
    assert pod.termination_grace_period_seconds == 30
    assert pod.volumes[0].HasField("empty_dir")
    c = pod.containers[0]
    assert c.ports[0].container_port == 80 and list(c.args) == ["--port", "80"]
    assert dict(c.resources.limits) == {"cpu": "1", "memory": "1.5"}
    assert c.readiness_probe.http_get.port.str_val == "http"


def test_round_trip_and_key_order() -> None:
    d = decode(_data(), apps_pb2.Deployment)
    out = encode(d)
    assert list(out) == ["apiVersion", "kind", "metadata", "spec"]
    assert list(out["spec"])[:3] == ["replicas", "selector", "template"]
    assert decode(out, apps_pb2.Deployment) == d
    assert decode(json.loads(codec.to_json(d)), apps_pb2.Deployment) == d
    assert decode(yaml.safe_load(codec.to_yaml(d)), apps_pb2.Deployment) == d


def test_proto_names_are_accepted() -> None:
    port = decode({"container_port": 80, "hostPort": 8080}, core_pb2.ContainerPort)
    assert port.container_port == 80 and port.host_port == 8080


def test_custom_json_names() -> None:
    spec = decode({"hostPID": True, "setHostnameAsFQDN": False}, core_pb2.PodSpec)
    assert spec.host_pid and spec.HasField("set_hostname_as_fqdn")
    assert _errors({"hostPid": True}, core_pb2.PodSpec) == ['hostPid: unknown field "hostPid"']
    assert encode(spec) == {"hostPID": True, "setHostnameAsFQDN": False}


def test_every_error_is_reported_with_its_path() -> None:
    data = _data()
    data["spec"]["replicas"] = "three"
    data["spec"]["template"]["sepc"] = {}
    container = data["spec"]["template"]["spec"]["containers"][0]
    container["ports"].append({"containerPort": 1.5})
    container["resources"]["limits"]["cpu"] = "lots"
    container["env"][0]["value"] = 8080
    assert _errors(data) == [
        'spec.replicas: expected an integer, got string "three"',
        "spec.template.spec.containers[0].ports[1].containerPort: expected an integer, got number 1.5",
        "spec.template.spec.containers[0].env[0].value: expected a string, got integer 8080",
        "spec.template.spec.containers[0].resources.limits[cpu]: invalid quantity 'lots': "
        "expected a number with an optional suffix, like 100m, 0.5, 128Mi or 1e3",
        'spec.template.sepc: unknown field "sepc"',  # document order: sepc comes after spec
    ]


def test_decode_error_shape() -> None:
    with pytest.raises(DecodeError) as err:
        decode({"spec": {"template": {"sepc": 1}}}, apps_pb2.Deployment)
    e = err.value
    assert isinstance(e, ValueError)
    assert e.errors == [FieldError("spec.template.sepc", 'unknown field "sepc"')]
    assert str(e) == 'spec.template.sepc: unknown field "sepc"'
    assert (e.path, e.message) == ("spec.template.sepc", 'unknown field "sepc"')
    assert pickle.loads(pickle.dumps(e)).errors == e.errors
    assert str(DecodeError.at("", "bad")) == "bad"
    assert str(DecodeError([FieldError("a", "x"), FieldError("b", "y")])) == "a: x; b: y"


@pytest.mark.parametrize("value,error", [
    ("3", 'expected an integer, got string "3"'),  # int32: no strings
    (True, "expected an integer, got boolean true"),
    (1.5, "expected an integer, got number 1.5"),
    (float("nan"), "expected an integer, got number nan"),
    ([3], "expected an integer, got a list"),
    ({"a": 1}, "expected an integer, got an object"),
    (2**31, "integer 2147483648 is out of range [-2147483648, 2147483647]"),
])
def test_int32_errors(value: Any, error: str) -> None:
    assert _errors({"spec": {"replicas": value}}) == [f"spec.replicas: {error}"]


def test_integral_floats_and_int64_strings() -> None:
    assert decode({"spec": {"replicas": 2.0}}, apps_pb2.Deployment).spec.replicas == 2
    spec = decode({"terminationGracePeriodSeconds": "45", "activeDeadlineSeconds": 2**40},
                  core_pb2.PodSpec)
    assert spec.termination_grace_period_seconds == 45 and spec.active_deadline_seconds == 2**40
    assert _errors({"terminationGracePeriodSeconds": "soon"}, core_pb2.PodSpec) == [
        'terminationGracePeriodSeconds: expected an integer, got string "soon"']


@pytest.mark.parametrize("value,error", [
    ("true", 'expected a boolean (true or false), got string "true"'),
    (1, "expected a boolean (true or false), got integer 1"),
])
def test_bool_must_be_bool(value: Any, error: str) -> None:
    assert _errors({"hostNetwork": value}, core_pb2.PodSpec) == [f"hostNetwork: {error}"]


@pytest.mark.parametrize("value,error", [
    (80, "expected a string, got integer 80"),
    (True, "expected a string, got boolean true"),
    (["a"], "expected a string, got a list"),
    (date(2026, 1, 1), "expected a string, got timestamp 2026-01-01"),
])
def test_string_must_be_string(value: Any, error: str) -> None:
    assert _errors({"image": value}, core_pb2.Container) == [f"image: {error}"]


def test_structure_errors() -> None:
    assert _errors({"metadata": []}) == ["metadata: expected an object, got a list"]
    assert _errors({"ports": {"containerPort": 80}}, core_pb2.Container) == [
        "ports: expected a list, got an object"]
    assert _errors({"ports": [None]}, core_pb2.Container) == ["ports[0]: null is not allowed in a list"]
    assert _errors({"command": ["sh", 1]}, core_pb2.Container) == [
        "command[1]: expected a string, got integer 1"]
    assert _errors({"metadata": {"labels": ["a"]}}) == ["metadata.labels: expected an object, got a list"]
    assert _errors({"metadata": {"labels": {"a": 1}}}) == [
        "metadata.labels[a]: expected a string, got integer 1"]
    assert _errors(["not", "an", "object"]) == ["expected an object, got a list"]


def test_duplicate_field_by_both_names() -> None:
    assert _errors({"containerPort": 1, "container_port": 2}, core_pb2.ContainerPort) == [
        'container_port: duplicate field: "container_port" and "containerPort" are the same field']


def test_null_means_unset() -> None:
    d = decode({"metadata": None, "spec": {"replicas": None, "template": {"spec": {
        "containers": None, "terminationGracePeriodSeconds": None, "nodeSelector": {"a": None}}}}},
        apps_pb2.Deployment)
    assert not d.HasField("metadata")
    assert not d.spec.HasField("replicas")
    assert not d.spec.template.spec.HasField("termination_grace_period_seconds")
    assert len(d.spec.template.spec.containers) == 0
    assert dict(d.spec.template.spec.node_selector) == {}


def test_map_int_keys_become_strings() -> None:
    assert dict(decode({"labels": {1: "x"}}, meta_pb2.ObjectMeta).labels) == {"1": "x"}
    assert _errors({"labels": {True: "x"}}, meta_pb2.ObjectMeta) == [
        "labels[True]: expected a string key, got boolean true"]


@pytest.mark.parametrize("value,expected", [(8080, 8080), ("http", "http"), (0, 0), (3.0, 3),
                                            ("25%", "25%")])
def test_int_or_string(value: Any, expected: Any) -> None:
    port = decode({"port": 80, "targetPort": value}, core_pb2.ServicePort)
    which = "int_val" if isinstance(expected, int) else "str_val"
    assert getattr(port.target_port, which) == expected
    assert encode(port)["targetPort"] == expected


@pytest.mark.parametrize("value", [True, 1.5, [1], {"a": 1}, 2**31])
def test_int_or_string_errors(value: Any) -> None:
    errors = _errors({"targetPort": value}, core_pb2.ServicePort)
    assert errors == [f"targetPort: expected an integer or a string, got {codec.describe(value)}"]


@pytest.mark.parametrize("value,stored", [(1, "1"), (1.5, "1.5"), ("100m", "100m"), (0.25, "0.25"),
                                          (2.0, "2"), (1e-05, "1e-05"), ("1Gi", "1Gi")])
def test_quantity_values(value: Any, stored: str) -> None:
    r = decode({"limits": {"x": value}, "requests": {"x": value}}, core_pb2.ResourceRequirements)
    assert r.limits["x"] == stored and r.requests["x"] == stored


@pytest.mark.parametrize("value", [True, "1 Gi", "lots", float("inf"), [1], {"a": 1}])
def test_quantity_errors(value: Any) -> None:
    errors = _errors({"status": {"capacity": {"cpu": value}}}, core_pb2.Node)
    assert len(errors) == 1 and errors[0].startswith("status.capacity[cpu]: ")


def test_quantity_tables_cover_runtime_class_and_pod_overhead() -> None:
    rc = decode({"overhead": {"podFixed": {"memory": 128}}}, node_pb2.RuntimeClass)
    assert rc.overhead.pod_fixed["memory"] == "128"
    assert _errors({"overhead": {"cpu": "x"}}, core_pb2.PodSpec)[0].startswith("overhead[cpu]: ")
    # Ordinary string maps are not quantities.
    assert _errors({"nodeSelector": {"a": 1}}, core_pb2.PodSpec) == [
        "nodeSelector[a]: expected a string, got integer 1"]


@pytest.mark.parametrize("value,stored", [
    ("2026-11-28T18:00:00Z", "2026-11-28T18:00:00Z"),
    ("2026-11-28T19:00:00+01:00", "2026-11-28T18:00:00Z"),
    ("2026-11-28t18:00:00.75z", "2026-11-28T18:00:00Z"),  # Time keeps whole seconds
    (datetime(2026, 11, 28, 18, 0, 0), "2026-11-28T18:00:00Z"),  # naive YAML timestamps are UTC
    (datetime(2026, 11, 28, 13, 0, tzinfo=timezone(timedelta(hours=-5))), "2026-11-28T18:00:00Z"),
    (date(2026, 11, 28), "2026-11-28T00:00:00Z"),
    ("", ""),
])
def test_timestamps(value: Any, stored: str) -> None:
    assert decode({"creationTimestamp": value}, meta_pb2.ObjectMeta).creation_timestamp == stored


def test_yaml_timestamps_decode() -> None:
    data = yaml.safe_load("metadata:\n  creationTimestamp: 2026-11-28T18:00:00Z\n")
    assert isinstance(data["metadata"]["creationTimestamp"], datetime)
    assert decode(data, core_pb2.Pod).metadata.creation_timestamp == "2026-11-28T18:00:00Z"


def test_micro_time() -> None:
    lease = decode({"spec": {"renewTime": "2026-11-28T18:00:00.123456Z",
                             "acquireTime": "2026-11-28T18:00:00Z"}}, coordination_pb2.Lease)
    assert lease.spec.renew_time == "2026-11-28T18:00:00.123456Z"
    assert lease.spec.acquire_time == "2026-11-28T18:00:00.000000Z"


@pytest.mark.parametrize("value", ["yesterday", "2026-11-28", "2026-11-28T18:00:00",
                                   "2026-13-01T00:00:00Z", "2026-11-28 18:00:00Z", 1700000000, True])
def test_timestamp_errors(value: Any) -> None:
    errors = _errors({"metadata": {"deletionTimestamp": value}}, core_pb2.Pod)
    assert len(errors) == 1
    assert errors[0].startswith("metadata.deletionTimestamp: expected an RFC 3339 timestamp")


def test_bytes_are_base64() -> None:
    secret = decode({"data": {"a": "aGVsbG8=", "b": "aGVsbG8", "c": "-_8=", "d": b"raw"},
                     "stringData": {"e": "plain"}}, core_pb2.Secret)
    assert dict(secret.data) == {"a": b"hello", "b": b"hello", "c": b"\xfb\xff", "d": b"raw"}
    out = encode(secret)
    assert out["data"] == {"a": "aGVsbG8=", "b": "aGVsbG8=", "c": "+/8=", "d": "cmF3"}
    assert out["stringData"] == {"e": "plain"}
    secret.api_version, secret.kind = "v1", "Secret"  # encode fills a served kind's header
    assert decode(out, core_pb2.Secret) == secret


def test_bad_base64() -> None:
    errors = _errors({"data": {"password": "hunter2!"}}, core_pb2.Secret)
    assert errors == ["data[password]: illegal base64 data (Secret data must be base64-encoded; "
                      "use stringData for plain text)"]
    assert _errors({"data": {"n": 5}}, core_pb2.Secret) == [
        "data[n]: expected base64-encoded data, got integer 5"]


def test_omitempty_and_optional_presence() -> None:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.spec.replicas = 0  # optional: set to zero is kept
    d.spec.paused = False  # plain bool at its default: left out
    out = encode(d)
    assert out == {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": 0}}
    spec = decode({"enableServiceLinks": False, "priority": 0}, core_pb2.PodSpec)
    assert encode(spec) == {"priority": 0, "enableServiceLinks": False}
    assert encode(core_pb2.PodSpec()) == {}


def test_set_empty_messages_are_kept() -> None:
    volume = decode({"name": "v", "emptyDir": {}}, core_pb2.Volume)
    assert encode(volume) == {"name": "v", "emptyDir": {}}
    assert codec.to_yaml(core_pb2.ConfigMap()).count("metadata") == 0


def test_encode_fills_api_version_and_kind_of_served_kinds() -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    assert list(encode(pod).items())[:2] == [("apiVersion", "v1"), ("kind", "Pod")]
    assert "apiVersion" not in encode(core_pb2.Container(name="c"))


def test_encode_map_keys_sorted() -> None:
    meta = meta_pb2.ObjectMeta(labels={"b": "2", "a": "1", "c": "3"})
    assert list(encode(meta)["labels"]) == ["a", "b", "c"]


def test_decode_object_picks_the_kind() -> None:
    obj = decode_object(_data())
    assert isinstance(obj, apps_pb2.Deployment)
    svc = decode_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    assert isinstance(svc, core_pb2.Service)


@pytest.mark.parametrize("data,errors", [
    ({"kind": "Pod"}, ["apiVersion: required field is missing"]),
    ({"apiVersion": "v1"}, ["kind: required field is missing"]),
    ({}, ["apiVersion: required field is missing", "kind: required field is missing"]),
    ({"apiVersion": 1, "kind": "Pod"}, ["apiVersion: expected a string, got integer 1"]),
    ({"apiVersion": "v1", "kind": "Deployment"},
     ['kind: no kind "Deployment" is registered for version "v1"; '
      "Deployment is served as apiVersion apps/v1"]),
    ({"apiVersion": "apps/v1", "kind": "Deploymnet"},
     ['kind: no kind "Deploymnet" is registered for version "apps/v1"']),
    ("text", ["expected an object with apiVersion and kind, got string \"text\""]),
])
def test_decode_object_errors(data: Any, errors: list[str]) -> None:
    with pytest.raises(DecodeError) as err:
        decode_object(data)
    assert [str(e) for e in err.value.errors] == errors


def test_decode_refuses_another_kinds_header() -> None:
    assert _errors({"apiVersion": "v1", "kind": "Service"}, core_pb2.Pod) == [
        'kind: expected "Pod" for a Pod, got "Service"']
    assert _errors({"apiVersion": "v2", "kind": "Pod"}, core_pb2.Pod) == [
        'apiVersion: expected "v1" for a Pod, got "v2"']


def test_decode_with_a_path_prefix() -> None:
    assert _errors_at({"nmae": "x"}, core_pb2.Container, "spec.containers[2]") == [
        'spec.containers[2].nmae: unknown field "nmae"']


def _errors_at(data: Any, message_type: type[Message], path: str) -> list[str]:
    with pytest.raises(DecodeError) as err:
        decode(data, message_type, path)
    return [str(e) for e in err.value.errors]


def test_to_yaml_reads_like_kubectl() -> None:
    cm = decode({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                 "data": {"script": "echo a\necho b\n", "port": "8080", "empty": ""}},
                core_pb2.ConfigMap)
    assert codec.to_yaml(cm) == (
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: cfg\n"
        "data:\n"
        '  empty: ""\n'
        '  port: "8080"\n'
        "  script: |\n"
        "    echo a\n"
        "    echo b\n"
    )


def test_to_json_and_lists() -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    assert codec.to_json(pod) == (
        '{\n  "apiVersion": "v1",\n  "kind": "Pod",\n  "metadata": {\n    "name": "p"\n  }\n}\n')
    listed = yaml.safe_load(codec.to_yaml([pod, pod]))
    assert listed["kind"] == "List" and len(listed["items"]) == 2
    assert json.loads(codec.to_json([]))["items"] == []


def test_every_served_kind_round_trips_an_empty_object() -> None:
    for kind in scheme.KINDS:
        obj = kind.message()
        obj.metadata.name = "x"
        data = encode(obj)
        assert (data["apiVersion"], data["kind"]) == (kind.api_version, kind.kind)
        back = decode_object(data)
        assert back.metadata.name == "x" and type(back) is kind.message


# --- the tables stay true to the protos ----------------------------------------------------

def _all_fields() -> list[FieldDescriptor]:
    seen: set[str] = set()
    out: list[FieldDescriptor] = []

    def walk(descriptor: Any) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for f in descriptor.fields:
            out.append(f)
            if f.message_type is not None:
                walk(f.message_type)

    for module in (core_pb2, apps_pb2, meta_pb2, node_pb2, coordination_pb2):
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            walk(descriptor)
    return out


def test_tables_name_real_fields() -> None:
    names = {f.full_name: f for f in _all_fields()}
    for name in codec.QUANTITY_FIELDS:
        f = names[name]
        assert f.message_type.GetOptions().map_entry
        assert f.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING
    for name in codec.TIME_FIELDS:
        assert names[name].type == FieldDescriptor.TYPE_STRING


def test_tables_are_complete() -> None:
    """Every field that looks like a resource list or a timestamp is in its table, so a new
    proto field is not silently decoded as a plain string."""
    resource_names = {"limits", "requests", "capacity", "allocatable", "overhead", "pod_fixed",
                      "hard", "used", "min", "max", "default", "default_request"}
    for f in _all_fields():
        is_string_map = (f.message_type is not None and f.message_type.GetOptions().map_entry
                         and f.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_STRING)
        if is_string_map and f.name in resource_names:
            assert f.full_name in codec.QUANTITY_FIELDS, f.full_name
        if f.type == FieldDescriptor.TYPE_STRING and f.name.endswith(("_time", "_timestamp", "_at")):
            assert f.full_name in codec.TIME_FIELDS, f.full_name


@pytest.mark.parametrize("value", ["1_000", " 5", "5.0", "0x10", "", "+"])
def test_int64_strings_are_plain_decimals(value: str) -> None:
    assert _errors({"activeDeadlineSeconds": value}, core_pb2.PodSpec) == [
        f"activeDeadlineSeconds: expected an integer, got {codec.describe(value)}"]


def test_normalize_timestamp_is_public() -> None:
    assert codec.normalize_timestamp("2026-11-28T18:00:00.5-02:00", "micro") == \
        "2026-11-28T20:00:00.500000Z"
    with pytest.raises(ValueError):
        codec.normalize_timestamp("2026-11-28T18:00+01:00")  # RFC 3339 wants seconds
