"""The downward API: fieldRef paths (env and volume), resourceFieldRef with divisors and defaults."""
from __future__ import annotations

import pytest

from node.agent import downward
from protos.skiff.api.v1 import core_pb2


def _pod() -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "web-0", "shop", "u-1"
    p.metadata.labels["app"] = "web"
    p.metadata.annotations["note"] = "line1\nline2"
    p.spec.node_name = "n1"
    c = p.spec.containers.add(name="app", image="busybox")
    c.resources.requests.update({"cpu": "250m", "memory": "100M"})
    c.resources.limits.update({"cpu": "1", "memory": "128Mi"})
    return p


@pytest.mark.parametrize("path,env,expected", [
    ("metadata.name", True, "web-0"), ("metadata.namespace", False, "shop"), ("metadata.uid", True, "u-1"),
    ("metadata.labels['app']", False, "web"), ("metadata.labels['none']", True, ""),
    ("spec.nodeName", True, "n1"), ("status.podIP", True, "10.0.0.9"),
    ("metadata.annotations", False, 'note="line1\\nline2"'),
])
def test_field_values(path: str, env: bool, expected: str) -> None:
    assert downward.field_value(_pod(), path, pod_ip="10.0.0.9", env=env) == expected


@pytest.mark.parametrize("path,env", [("status.podIP", False), ("metadata.labels", True), ("spec.hostname", True)])
def test_unsupported_field_paths_are_named(path: str, env: bool) -> None:
    with pytest.raises(ValueError, match=f"fieldRef '{path}' is not supported"):
        downward.field_value(_pod(), path, env=env)


@pytest.mark.parametrize("resource,divisor,expected", [
    ("limits.cpu", "", "1"), ("limits.cpu", "1m", "1000"), ("requests.cpu", "", "1"),  # 250m rounds up to 1
    ("requests.cpu", "100m", "3"), ("limits.memory", "1Mi", "128"), ("requests.memory", "1Mi", "96"),
    ("limits.ephemeral-storage", "1Gi", "20"),  # unset limit: the node's allocatable
    ("requests.ephemeral-storage", "", "0"),
])
def test_resource_values(resource: str, divisor: str, expected: str) -> None:
    assert downward.resource_value(_pod(), "app", resource, divisor, {"ephemeral-storage": "20Gi"}) == expected


def test_resource_errors() -> None:
    with pytest.raises(ValueError, match="no container 'side'"):
        downward.resource_value(_pod(), "side", "limits.cpu", "", {})
    with pytest.raises(ValueError, match="resource 'limits.gpu' is not supported"):
        downward.resource_value(_pod(), "app", "limits.gpu", "", {})
