"""The downward API: a pod's own fields and its containers' resources, as environment variables
(`valueFrom.fieldRef` / `valueFrom.resourceFieldRef`) and as files of downwardAPI and projected
volumes. Pure: everything it needs is passed in.

- **fieldRef**: `metadata.name`, `metadata.namespace`, `metadata.uid`,
  `metadata.labels['KEY']`, `metadata.annotations['KEY']` (empty when absent), anywhere;
  `spec.nodeName`, `spec.serviceAccountName`, `status.podIP`, `status.hostIP` in env only;
  `metadata.labels` and `metadata.annotations` whole in volumes only, one `key="value"` line
  per entry, sorted by key (the kubelet's format). Anything else is a ValueError naming it.
- **resourceFieldRef**: `limits.cpu`, `limits.memory`, `limits.ephemeral-storage`,
  `requests.cpu`, `requests.memory`, `requests.ephemeral-storage` of the named container (the
  container itself for env), divided by `divisor` (default 1) and rounded up, as the kubelet
  does: CPU in units of the divisor's millicores, the others in bytes. A limit the container
  does not set is the node's allocatable amount; a request it does not set is 0.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from controlplane.client import quantity
from protos.skiff.api.v1 import core_pb2

ENV_ONLY_FIELDS = ("spec.nodeName", "spec.serviceAccountName", "status.podIP", "status.hostIP")
RESOURCES = ("limits.cpu", "limits.memory", "limits.ephemeral-storage",
             "requests.cpu", "requests.memory", "requests.ephemeral-storage")


def field_value(pod: core_pb2.Pod, path: str, *, pod_ip: str = "", host_ip: str = "", env: bool = True) -> str:
    """The value of a fieldRef path for `pod` (see the module docstring)."""
    m = pod.metadata
    values = {"metadata.name": m.name, "metadata.namespace": m.namespace, "metadata.uid": m.uid}
    if env:
        values.update({"spec.nodeName": pod.spec.node_name, "spec.serviceAccountName": pod.spec.service_account_name,
                       "status.podIP": pod_ip, "status.hostIP": host_ip})
    elif path in ("metadata.labels", "metadata.annotations"):
        return format_map(m.labels if path == "metadata.labels" else m.annotations)
    if path in values:
        return values[path]
    for prefix, source in (("metadata.labels['", m.labels), ("metadata.annotations['", m.annotations)):
        if path.startswith(prefix) and path.endswith("']"):
            return source.get(path[len(prefix):-2], "")
    where = "an environment variable" if env else "a downwardAPI volume"
    raise ValueError(f"fieldRef {path!r} is not supported in {where}")


def format_map(entries: Mapping[str, str]) -> str:
    """Labels or annotations as the kubelet writes them to a file: `key="value"` lines, sorted."""
    return "\n".join(f"{key}={_quote(entries[key])}" for key in sorted(entries))


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def resource_value(pod: core_pb2.Pod, container_name: str, resource: str, divisor: str,
                   allocatable: Mapping[str, str]) -> str:
    """The value of a resourceFieldRef (see the module docstring)."""
    container = next((c for c in pod.spec.containers if c.name == container_name),
                     next((c for c in pod.spec.init_containers if c.name == container_name), None))
    if container is None:
        raise ValueError(f"resourceFieldRef: no container {container_name!r} in the pod")
    if resource not in RESOURCES:
        raise ValueError(f"resourceFieldRef: resource {resource!r} is not supported (one of {', '.join(RESOURCES)})")
    kind, _, name = resource.partition(".")
    source = container.resources.limits if kind == "limits" else container.resources.requests
    amount = source.get(name) or (allocatable.get(name, "0") if kind == "limits" else "0")
    divisor = divisor or "1"
    if name == "cpu":
        value, unit = quantity.parse_cpu_millis(amount), quantity.parse_cpu_millis(divisor)
    else:
        value, unit = quantity.parse_bytes(amount), quantity.parse_bytes(divisor)
    if unit <= 0:
        raise ValueError(f"resourceFieldRef {resource}: divisor {divisor!r} must be positive")
    return str(math.ceil(value / unit))


def volume_files(pod: core_pb2.Pod, items: list[core_pb2.DownwardAPIVolumeFile], default_mode: int,
                 allocatable: Mapping[str, str]) -> dict[str, tuple[bytes, int]]:
    """A downwardAPI volume's (or projection's) files: relative path -> (content, mode)."""
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item.HasField("field_ref"):
            text = field_value(pod, item.field_ref.field_path, env=False)
        elif item.HasField("resource_field_ref"):
            ref = item.resource_field_ref
            text = resource_value(pod, ref.container_name, ref.resource, ref.divisor, allocatable)
        else:
            raise ValueError(f"item {item.path!r} has neither fieldRef nor resourceFieldRef")
        files[item.path] = (text.encode(), item.mode if item.HasField("mode") else default_mode)
    return files
