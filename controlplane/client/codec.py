"""The codec: Kubernetes-shaped YAML/JSON data <-> skiff's protobuf objects, strictly.

`decode(data, Message)` walks the message descriptor by JSON name (`containerPort`; the proto
name `container_port` is accepted too, as protobuf's json_format does) and collects EVERY error
of the document as a FieldError with a Kubernetes field path (`spec.containers[0].ports[1].
containerPort`, `metadata.labels[app]`), raised together as one DecodeError. Rules:
- unknown fields are errors (kubectl's strict decoding); null means unset, everywhere;
- strings must be strings and bools bools (no YAML `8080` for a string, no `1` for a bool);
- integers accept ints and integral floats (2.0), never 1.5 or a bool; 64-bit integers also
  accept decimal strings, as protobuf's JSON mapping does; ranges are checked;
- IntOrString (`targetPort`, `maxSurge`) accepts a bare int or string;
- quantity maps (QUANTITY_FIELDS: requests, limits, capacity, ...) accept numbers, stored as
  their decimal text (`cpu: 1` -> "1"), and every value must parse as a quantity;
- timestamps (TIME_FIELDS) accept RFC 3339 strings and the datetime/date values YAML produces,
  stored as RFC 3339 UTC: whole seconds ("2026-11-28T18:00:00Z") for Kubernetes' Time,
  microseconds for MicroTime (Event.eventTime, Lease renewTime);
- bytes fields (Secret.data) accept base64 text (standard or URL-safe) or raw bytes.
IntOrString is the only oneof in skiff's protos (core.proto says why), handled as above.

`encode(obj)` gives JSON-ready data with Kubernetes' JSON names, leaving out unset and empty
fields (omitempty) but keeping `optional` fields and sub-messages that are set, even to 0,
false or {} (`emptyDir: {}`). Keys come as apiVersion, kind, metadata, spec, status, then the
rest in field-number order; map keys sorted. A served kind always gets its apiVersion and kind.
For every message m: decode(encode(m), type(m)) == m, except that a served kind gains its
apiVersion and kind, and timestamps come back in normal form.

FieldError/DecodeError carry no gRPC: the API server maps DecodeError to INVALID_ARGUMENT, the
CLI prints it.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Any, Literal, Mapping, Sequence, TypeVar

import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from controlplane.client import quantity, scheme
from protos.skiff.api.v1 import meta_pb2

M = TypeVar("M", bound=Message)


def _full_names(*names: str) -> frozenset[str]:
    return frozenset(f"skiff.api.v1.{name}" for name in names)


# map<string, string> fields that are Kubernetes ResourceLists (values are quantities).
QUANTITY_FIELDS: frozenset[str] = _full_names(
    "ResourceRequirements.limits", "ResourceRequirements.requests",
    "VolumeResourceRequirements.limits", "VolumeResourceRequirements.requests",
    "PersistentVolumeClaimStatus.capacity", "PodSpec.overhead",
    "NodeStatus.capacity", "NodeStatus.allocatable", "Overhead.pod_fixed",
)

Precision = Literal["seconds", "micro"]
# string fields that hold timestamps: Kubernetes' metav1.Time (whole seconds) or MicroTime.
_TIME = _full_names(
    "ObjectMeta.creation_timestamp", "ObjectMeta.deletion_timestamp",
    "Condition.last_transition_time", "PodCondition.last_probe_time",
    "PodCondition.last_transition_time", "PodStatus.start_time",
    "ContainerStateRunning.started_at", "ContainerStateTerminated.started_at",
    "ContainerStateTerminated.finished_at", "NamespaceCondition.last_transition_time",
    "NodeCondition.last_heartbeat_time", "NodeCondition.last_transition_time",
    "ReplicationControllerCondition.last_transition_time", "Event.first_timestamp",
    "Event.last_timestamp", "ReplicaSetCondition.last_transition_time",
    "DeploymentCondition.last_update_time", "DeploymentCondition.last_transition_time",
    "DaemonSetCondition.last_transition_time", "StatefulSetCondition.last_transition_time",
)
_MICRO_TIME = _full_names("Event.event_time", "EventSeries.last_observed_time",
                          "LeaseSpec.acquire_time", "LeaseSpec.renew_time")
TIME_FIELDS: Mapping[str, Precision] = {**dict.fromkeys(_TIME, "seconds"),
                                        **dict.fromkeys(_MICRO_TIME, "micro")}

_INT_VAL = meta_pb2.IntOrString.DESCRIPTOR.fields_by_name["int_val"]
_FRONT = {"apiVersion": 0, "kind": 1, "metadata": 2, "spec": 3, "status": 4}
_I32, _U32 = (-(2**31), 2**31 - 1), (0, 2**32 - 1)
_I64, _U64 = (-(2**63), 2**63 - 1), (0, 2**64 - 1)
_FD = FieldDescriptor
_INT_RANGES = {
    _FD.TYPE_INT32: _I32, _FD.TYPE_SINT32: _I32, _FD.TYPE_SFIXED32: _I32,
    _FD.TYPE_UINT32: _U32, _FD.TYPE_FIXED32: _U32,
    _FD.TYPE_INT64: _I64, _FD.TYPE_SINT64: _I64, _FD.TYPE_SFIXED64: _I64,
    _FD.TYPE_UINT64: _U64, _FD.TYPE_FIXED64: _U64,
}
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
                      re.ASCII | re.IGNORECASE)
_WIDE_INTS = {t for t, (_, hi) in _INT_RANGES.items() if hi >= 2**63 - 1}
_FLOATS = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


@dataclass(frozen=True)
class FieldError:
    """One problem at one field path ("" is the document itself)."""

    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}" if self.path else self.detail


@dataclass(eq=False)
class DecodeError(ValueError):
    """Every error found in one document, in document order (never empty)."""

    errors: list[FieldError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.errors)  # keeps the exception picklable

    @classmethod
    def at(cls, path: str, detail: str) -> DecodeError:
        return cls([FieldError(path, detail)])

    @property
    def path(self) -> str:
        """The first error's path."""
        return self.errors[0].path if self.errors else ""

    @property
    def message(self) -> str:
        """The first error's detail."""
        return self.errors[0].detail if self.errors else ""

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)


class _Invalid(ValueError):
    """A value that does not fit its field; the message is the FieldError detail."""


def describe(value: Any) -> str:
    """How an error names a value's JSON type: 'string "three"', 'integer 3', 'an object'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return f"string {json.dumps(text)}"
    if isinstance(value, (datetime, date)):
        return f"timestamp {value.isoformat()}"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@lru_cache(maxsize=None)
def _fields_by_key(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    index = {f.name: f for f in descriptor.fields}
    index.update({f.json_name: f for f in descriptor.fields})
    return index


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


# --- scalar conversion ---------------------------------------------------------------------

def normalize_timestamp(value: Any, precision: Precision = "seconds") -> str:
    """An RFC 3339 string, datetime or date -> RFC 3339 UTC text; ValueError otherwise.
    Whole seconds for Time (as Kubernetes truncates), six fraction digits for MicroTime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        moment = _parse_rfc3339(value)
    else:
        raise _Invalid(f"expected an RFC 3339 timestamp, got {describe(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # YAML timestamps without an offset are UTC
    moment = moment.astimezone(timezone.utc)
    if precision == "micro":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> datetime:
    try:
        if not _RFC3339.fullmatch(text):
            raise ValueError(text)
        normal = text[:-1] + "+00:00" if text[-1] in "Zz" else text
        return datetime.fromisoformat(normal[:10] + "T" + normal[11:])
    except ValueError:
        raise _Invalid(f'expected an RFC 3339 timestamp like "2026-11-28T18:00:00Z", '
                       f"got {describe(text)}") from None


def _to_int(value: Any, fd: FieldDescriptor) -> int:
    lo, hi = _INT_RANGES[fd.type]
    if isinstance(value, bool):
        raise _Invalid(f"expected an integer, got {describe(value)}")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise _Invalid(f"expected an integer, got {describe(value)}")
        value = int(value)
    elif isinstance(value, str) and fd.type in _WIDE_INTS and _DECIMAL.fullmatch(value):
        value = int(value)
    if not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {describe(value)}")
    if not lo <= value <= hi:
        raise _Invalid(f"integer {value} is out of range [{lo}, {hi}]")
    return value


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise _Invalid(f"expected base64-encoded data, got {describe(value)}")
    text = value.strip().replace("\n", "")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise _Invalid("illegal base64 data (Secret data must be base64-encoded; "
                       "use stringData for plain text)") from None


def _to_quantity_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(f"expected a quantity like 100m or 1Gi, got {describe(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"expected a quantity like 100m or 1Gi, got {describe(value)}")
        text = repr(value)  # shortest exact repr: 1.5 -> "1.5", 1e-05 -> "1e-05"
        text = text[:-2] if text.endswith(".0") else text
    else:
        text = str(value)
    try:
        quantity.parse(text)
    except ValueError as err:
        raise _Invalid(str(err)) from None
    return text


def _scalar(value: Any, fd: FieldDescriptor, full_name: str) -> Any:
    """The Python value to store in a scalar field (or map value) fd; _Invalid when it won't do."""
    kind = fd.type
    if full_name in QUANTITY_FIELDS:
        return _to_quantity_text(value)
    if full_name in TIME_FIELDS:
        return "" if value == "" else normalize_timestamp(value, TIME_FIELDS[full_name])
    if kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {describe(value)}")
        return value
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _Invalid(f"expected a boolean (true or false), got {describe(value)}")
        return value
    if kind in _INT_RANGES:
        return _to_int(value, fd)
    if kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {describe(value)}")
        return float(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        return _to_bytes(value)
    # skiff's API has no enums (Kubernetes' enums are strings) and no groups.
    raise _Invalid(f"unsupported field type {kind}")


# --- decoding ------------------------------------------------------------------------------

class _Decoder:
    """Fills messages from data, recording every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, detail: str) -> None:
        self.errors.append(FieldError(path, detail))

    def message(self, data: Any, msg: Message, path: str) -> None:
        if not isinstance(data, Mapping):
            self.fail(path, f"expected an object, got {describe(data)}")
            return
        index = _fields_by_key(msg.DESCRIPTOR)
        seen: dict[str, str] = {}
        for key, value in data.items():
            sub = _join(path, str(key))
            fd = index.get(key) if isinstance(key, str) else None
            if fd is None:
                self.fail(sub, f'unknown field "{key}"')
                continue
            if fd.name in seen:
                self.fail(sub, f'duplicate field: "{key}" and "{seen[fd.name]}" are the same field')
                continue
            seen[fd.name] = str(key)
            if value is not None:
                self.field(value, msg, fd, sub)

    def field(self, value: Any, msg: Message, fd: FieldDescriptor, path: str) -> None:
        if _is_map(fd):
            self.map(value, msg, fd, path)
        elif fd.is_repeated:
            self.repeated(value, msg, fd, path)
        elif fd.message_type is not None:
            self.submessage(value, getattr(msg, fd.name), path)
        else:
            try:
                setattr(msg, fd.name, _scalar(value, fd, fd.full_name))
            except _Invalid as err:
                self.fail(path, str(err))

    def submessage(self, value: Any, child: Message, path: str) -> None:
        if isinstance(child, meta_pb2.IntOrString):
            if isinstance(value, str):
                child.str_val = value
                return
            try:
                child.int_val = _to_int(value, _INT_VAL)
            except _Invalid:
                self.fail(path, f"expected an integer or a string, got {describe(value)}")
        else:
            child.SetInParent()  # `emptyDir: {}` is set, not absent
            self.message(value, child, path)

    def repeated(self, value: Any, msg: Message, fd: FieldDescriptor, path: str) -> None:
        if not isinstance(value, (list, tuple)):
            self.fail(path, f"expected a list, got {describe(value)}")
            return
        container = getattr(msg, fd.name)
        for i, item in enumerate(value):
            sub = f"{path}[{i}]"
            if item is None:
                self.fail(sub, "null is not allowed in a list")
            elif fd.message_type is not None:
                self.submessage(item, container.add(), sub)
            else:
                try:
                    container.append(_scalar(item, fd, fd.full_name))
                except _Invalid as err:
                    self.fail(sub, str(err))

    def map(self, value: Any, msg: Message, fd: FieldDescriptor, path: str) -> None:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected an object, got {describe(value)}")
            return
        container = getattr(msg, fd.name)
        value_fd = fd.message_type.fields_by_name["value"]
        for key, item in value.items():
            sub = f"{path}[{key}]"
            if isinstance(key, int) and not isinstance(key, bool):
                key = str(key)  # YAML reads `1: x` as an int key; JSON keys are strings
            if not isinstance(key, str):
                self.fail(sub, f"expected a string key, got {describe(key)}")
            elif item is None:
                continue
            elif value_fd.message_type is not None:
                self.submessage(item, container[key], sub)
            else:
                try:
                    container[key] = _scalar(item, value_fd, fd.full_name)
                except _Invalid as err:
                    self.fail(sub, str(err))


def _check_kind(data: Mapping[str, Any], message_type: type[Message],
                errors: list[FieldError]) -> None:
    """A served kind's data must not claim to be another kind."""
    try:
        kind = scheme.by_message(message_type)
    except KeyError:
        return
    for key, want in (("apiVersion", kind.api_version), ("kind", kind.kind)):
        got = data.get(key)
        if isinstance(got, str) and got and got != want:
            errors.append(FieldError(key, f'expected "{want}" for a {kind.kind}, got "{got}"'))


def decode(data: Mapping[str, Any], message_type: type[M], path: str = "") -> M:
    """A new message_type filled from data; DecodeError listing every problem found."""
    decoder = _Decoder()
    msg = message_type()
    decoder.message(data, msg, path)
    if not path and isinstance(data, Mapping):
        _check_kind(data, message_type, decoder.errors)
    if decoder.errors:
        raise DecodeError(decoder.errors)
    return msg


def decode_object(data: Mapping[str, Any]) -> Message:
    """Decode a whole object, choosing its message by apiVersion and kind (scheme.by_kind)."""
    if not isinstance(data, Mapping):
        raise DecodeError.at(
            "", f"expected an object with apiVersion and kind, got {describe(data)}")
    errors = []
    for key in ("apiVersion", "kind"):
        value = data.get(key)
        if value is None or value == "":
            errors.append(FieldError(key, "required field is missing"))
        elif not isinstance(value, str):
            errors.append(FieldError(key, f"expected a string, got {describe(value)}"))
    if errors:
        raise DecodeError(errors)
    try:
        kind = scheme.by_kind(data["apiVersion"], data["kind"])
    except KeyError as err:
        raise DecodeError.at("kind", str(err.args[0])) from None
    return decode(data, kind.message)


# --- encoding ------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _ordered_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    return tuple(sorted(descriptor.fields,
                        key=lambda f: (_FRONT.get(f.json_name, len(_FRONT)), f.number)))


def _encode_value(value: Any) -> Any:
    """One value's JSON form; None for an IntOrString holding neither (left out)."""
    if isinstance(value, meta_pb2.IntOrString):
        which = value.WhichOneof("value")
        return None if which is None else getattr(value, which)
    if isinstance(value, Message):
        return _encode_message(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _encode_message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd in _ordered_fields(msg.DESCRIPTOR):
        value = getattr(msg, fd.name)
        if _is_map(fd):
            if value:
                out[fd.json_name] = {k: _encode_value(value[k]) for k in sorted(value)}
        elif fd.is_repeated:
            if value:
                out[fd.json_name] = [_encode_value(v) for v in value]
        elif fd.message_type is not None or fd.has_presence:
            if msg.HasField(fd.name):
                encoded = _encode_value(value)
                if encoded is not None:
                    out[fd.json_name] = encoded
        elif value != fd.default_value:
            out[fd.json_name] = _encode_value(value)
    return out


def encode(obj: Message) -> dict[str, Any]:
    """JSON-ready data with Kubernetes' names and key order; a served kind always carries its
    apiVersion and kind, even when the message leaves them empty."""
    out = _encode_message(obj)
    try:
        kind = scheme.by_message(obj)
    except KeyError:
        return out
    if out.get("apiVersion") and out.get("kind"):
        return out
    head = {"apiVersion": out.get("apiVersion") or kind.api_version,
            "kind": out.get("kind") or kind.kind}
    return {**head, **{k: v for k, v in out.items() if k not in head}}


class _Dumper(yaml.SafeDumper):
    """kubectl-like YAML: multi-line strings as literal blocks, double quotes where needed."""

    def choose_scalar_style(self) -> str:
        style = str(super().choose_scalar_style())
        return '"' if style == "'" else style


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(obj: Message | Sequence[Message]) -> str:
    """YAML text of one object (or a list of them, as `kind: List`) for `skiff get -o yaml`."""
    data = _encode_list(obj) if isinstance(obj, Sequence) else encode(obj)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 16)


def to_json(obj: Message | Sequence[Message]) -> str:
    """JSON text, indented by 2, ending in a newline."""
    data = _encode_list(obj) if isinstance(obj, Sequence) else encode(obj)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _encode_list(objects: Sequence[Message]) -> dict[str, Any]:
    """Several objects as kubectl prints them: a v1 List."""
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
            "items": [encode(o) for o in objects]}
