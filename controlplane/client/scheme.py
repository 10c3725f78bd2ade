"""The scheme: every kind skiff serves, its names, and the protobuf message that carries it.

Contract:
- `KINDS` lists each served kind once. A `Kind` is frozen and ties Kubernetes' names (kind,
  group, version, lower-case plural resource, singular, kubectl's short names) to the generated
  message class, its scope (namespaced or cluster-scoped) and whether it has a status
  subresource.
- Lookups are exact functions of these names: `by_resource` accepts every form kubectl accepts
  (plural, singular, short name, Kind name in any case, "resource.group"); `by_kind` takes an
  apiVersion and a Kind; `by_message` a message or its class. Unknown names raise KeyError with
  a message a person can act on.
- `to_any`/`from_any` pack an object as google.protobuf.Any with the type URL
  `type.googleapis.com/skiff.api.v1.<Message>` and unpack it into the registered class.

Invariants: no two kinds share a resource, a (group, kind) or a message; every name form maps
to exactly one kind (checked at import); every kind's message starts with fields api_version,
kind, metadata (numbers 1, 2, 3). PersistentVolumeClaim is a type (StatefulSet's
volumeClaimTemplates) and is not served, so it is not in KINDS.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from protos.skiff.api.v1 import apps_pb2, coordination_pb2, core_pb2, node_pb2

TYPE_URL_PREFIX = "type.googleapis.com/"

# Top-level fields every kind has that are not its desired state.
_NON_SPEC_FIELDS = frozenset({"api_version", "kind", "metadata", "status"})


@dataclass(frozen=True)
class Kind:
    """One served kind and every name it is known by."""

    kind: str
    group: str
    version: str
    resource: str
    singular: str
    message: type[Message]
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = False

    @property
    def api_version(self) -> str:
        """"apps/v1", or "v1" for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """Kind.group as in Kubernetes' error messages: "Deployment.apps", "Pod"."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def group_resource(self) -> str:
        """resource.group: "deployments.apps", "pods"."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


def _core(kind: str, resource: str, message: type[Message], namespaced: bool,
          short: tuple[str, ...], status: bool) -> Kind:
    return Kind(kind, "", "v1", resource, kind.lower(), message, namespaced, short, status)


def _apps(kind: str, resource: str, message: type[Message], short: tuple[str, ...]) -> Kind:
    return Kind(kind, "apps", "v1", resource, kind.lower(), message, True, short, True)


KINDS: tuple[Kind, ...] = (
    _core("Namespace", "namespaces", core_pb2.Namespace, False, ("ns",), True),
    _core("Node", "nodes", core_pb2.Node, False, ("no",), True),
    _core("Pod", "pods", core_pb2.Pod, True, ("po",), True),
    _core("Service", "services", core_pb2.Service, True, ("svc",), True),
    _core("Endpoints", "endpoints", core_pb2.Endpoints, True, ("ep",), False),
    _core("ReplicationController", "replicationcontrollers", core_pb2.ReplicationController,
          True, ("rc",), True),
    _core("ConfigMap", "configmaps", core_pb2.ConfigMap, True, ("cm",), False),
    _core("Secret", "secrets", core_pb2.Secret, True, (), False),
    _core("Event", "events", core_pb2.Event, True, ("ev",), False),
    _apps("ReplicaSet", "replicasets", apps_pb2.ReplicaSet, ("rs",)),
    _apps("Deployment", "deployments", apps_pb2.Deployment, ("deploy",)),
    _apps("DaemonSet", "daemonsets", apps_pb2.DaemonSet, ("ds",)),
    _apps("StatefulSet", "statefulsets", apps_pb2.StatefulSet, ("sts",)),
    Kind("Lease", "coordination.k8s.io", "v1", "leases", "lease", coordination_pb2.Lease,
         True, (), False),
    Kind("RuntimeClass", "node.k8s.io", "v1", "runtimeclasses", "runtimeclass",
         node_pb2.RuntimeClass, False, (), False),
)
# Kubernetes' singular of Endpoints is "endpoints" (kubectl get endpoints); kind.lower() gives it.


def _index_names(kinds: tuple[Kind, ...]) -> dict[str, Kind]:
    """Every lower-cased name form -> its kind; a name claimed by two kinds is a bug here."""
    index: dict[str, Kind] = {}
    for k in kinds:
        names = {k.resource, k.singular, k.kind.lower(), k.group_resource, *k.short_names}
        if k.group:
            names |= {f"{k.singular}.{k.group}", f"{k.kind.lower()}.{k.group}",
                      f"{k.resource}.{k.version}.{k.group}"}
        for name in names:
            other = index.setdefault(name, k)
            if other is not k:
                raise AssertionError(f"name {name!r} names both {other.kind} and {k.kind}")
    return index


_BY_NAME = _index_names(KINDS)
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}
_BY_FULL_NAME = {k.message.DESCRIPTOR.full_name: k for k in KINDS}
assert len(_BY_KIND) == len(KINDS) == len(_BY_FULL_NAME), "duplicate kind or message in KINDS"


def by_resource(name: str) -> Kind:
    """The kind a kubectl-style resource name means: "deployments", "deployment", "deploy",
    "Deployment", "deployments.apps"; case-insensitive. KeyError when no kind has the name."""
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise KeyError(
            f'the server doesn\'t have a resource type "{name}" '
            f"(known: {', '.join(k.resource for k in KINDS)})"
        ) from None


def by_kind(api_version: str, kind: str) -> Kind:
    """The kind for a manifest's apiVersion and kind ("apps/v1", "Deployment"); exact match."""
    try:
        return _BY_KIND[(api_version, kind)]
    except KeyError:
        known = [k for k in KINDS if k.kind == kind]
        hint = f"; {kind} is served as apiVersion {known[0].api_version}" if known else ""
        raise KeyError(
            f'no kind "{kind}" is registered for version "{api_version}"{hint}'
        ) from None


def by_message(message: Message | type[Message]) -> Kind:
    """The kind a message instance or message class carries."""
    full_name = message.DESCRIPTOR.full_name
    try:
        return _BY_FULL_NAME[full_name]
    except KeyError:
        raise KeyError(f"message {full_name} is not a served kind") from None


def to_any(obj: Message) -> any_pb2.Any:
    """Pack a served object as Any (type URL type.googleapis.com/skiff.api.v1.<Message>)."""
    by_message(obj)  # refuse sub-messages and foreign types early, with a clear error
    value = any_pb2.Any()
    value.Pack(obj, type_url_prefix=TYPE_URL_PREFIX)
    return value


def from_any(value: any_pb2.Any) -> Message:
    """Unpack an Any into its registered class; ValueError for a type URL no kind has."""
    full_name = value.type_url.rpartition("/")[2]
    kind = _BY_FULL_NAME.get(full_name)
    if kind is None or not value.type_url.startswith(TYPE_URL_PREFIX):
        raise ValueError(f"cannot decode object of type URL {value.type_url!r}: not a served kind")
    obj = kind.message()
    if not value.Unpack(obj):
        raise ValueError(f"cannot decode object of type URL {value.type_url!r}")
    return obj


def spec_fields(kind: Kind) -> tuple[str, ...]:
    """The top-level fields that hold desired state (a change bumps metadata.generation):
    every field but api_version, kind, metadata and status, in field-number order."""
    fields = sorted(kind.message.DESCRIPTOR.fields, key=lambda f: f.number)
    return tuple(f.name for f in fields if f.name not in _NON_SPEC_FIELDS)
