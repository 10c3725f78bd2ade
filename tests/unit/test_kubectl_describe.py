"""`skiff describe`'s pure describers: objects and related objects in, kubectl-like text out."""
from __future__ import annotations

from typing import Any

import yaml

from controlplane.client import codec, scheme
from controlplane.client.timeutil import format_time
from deploy.cli.kubectl.describe_cmd import Related, describe_object

NOW = 1_800_000_000.0


def obj(text: str) -> Any:
    return codec.decode_object(yaml.safe_load(text))


def test_node_description() -> None:
    node = obj(f"""
apiVersion: v1
kind: Node
metadata: {{name: n1, labels: {{node-role.kubernetes.io/worker: ""}}, creationTimestamp: "{format_time(NOW)}"}}
spec: {{podCIDR: 10.244.1.0/24, taints: [{{key: k, value: v, effect: NoSchedule}}]}}
status:
  conditions: [{{type: Ready, status: "True", reason: KubeletReady, message: ready}}]
  addresses: [{{type: InternalIP, address: 10.0.0.1}}]
  capacity: {{cpu: "4", memory: 8Gi}}
  nodeInfo: {{kubeletVersion: v1.30.0}}
""")
    pod = obj("{apiVersion: v1, kind: Pod, metadata: {name: p, namespace: default}, status: {phase: Running}}")
    text = describe_object(scheme.by_resource("nodes"), node, Related(pods=[pod]), NOW)
    lines = text.splitlines()
    assert lines[:2] == ["Name:               n1", "Roles:              worker"]
    assert "Taints:             k=v:NoSchedule" in lines
    assert ["InternalIP:", "10.0.0.1"] in [line.split() for line in lines]
    assert ["cpu:", "4"] in [line.split() for line in lines]
    # One alignment block runs from "System Info:"'s entries on, as Go's tabwriter makes it in kubectl.
    assert "PodCIDR:                      10.244.1.0/24" in lines
    assert "Non-terminated Pods:          (1 in total)" in lines
    assert lines[-2:] == ["  default                     p     <unknown>", "Events:                       <none>"]


def test_generic_description_shows_the_other_fields_as_yaml() -> None:
    cm = obj("{apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: ns}, data: {a: '1'}}")
    text = describe_object(scheme.by_resource("cm"), cm, Related(), NOW)
    assert text.splitlines()[:2] == ["Name:               c", "Namespace:          ns"]
    assert "Data:\n  a: '1'\n" in text


def test_events_table_counts_repeats() -> None:
    ns = obj("{apiVersion: v1, kind: Namespace, metadata: {name: x}, status: {phase: Active}}")
    ev = obj(f"""{{apiVersion: v1, kind: Event, metadata: {{name: e}}, reason: Tick, type: Warning, count: 3,
        message: "a  b", source: {{component: c, host: h}},
        firstTimestamp: "{format_time(NOW - 600)}", lastTimestamp: "{format_time(NOW - 5)}"}}""")
    text = describe_object(scheme.by_resource("ns"), ns, Related(events=[ev]), NOW)
    assert text.splitlines()[-3:] == [
        "  Type     Reason  Age               From  Message",
        "  ----     ------  ----              ----  -------",
        "  Warning  Tick    5s (x3 over 10m)  c, h  a b"]
