"""The framework's shared pieces: PodInfo/NodeInfo facts, normalisation, weights config."""
from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.scheduler.framework import (DEFAULT_WEIGHTS, ConfigError, NodeInfo,
                                              default_normalize, load_config,
                                              normalized_image_name, parse_config)
from tests.schedutil import info, node, pod


def test_default_weights_are_kubernetes() -> None:
    assert DEFAULT_WEIGHTS["TaintToleration"] == 3
    assert DEFAULT_WEIGHTS["NodeAffinity"] == 2 and DEFAULT_WEIGHTS["InterPodAffinity"] == 2
    assert DEFAULT_WEIGHTS["NodeResourcesLeastAllocated"] == 1
    assert DEFAULT_WEIGHTS["NodeResourcesBalancedAllocation"] == 1
    assert DEFAULT_WEIGHTS["ImageLocality"] == 1


def test_short_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sched.yaml"
    path.write_text("percentageOfNodesToScore: 30\nweights:\n  ImageLocality: 5\n"
                    "  NodeResourcesFit: 2\n")
    config = load_config(str(path))
    assert config.percentage_of_nodes_to_score == 30
    assert config.weights["ImageLocality"] == 5
    assert config.weights["NodeResourcesLeastAllocated"] == 2
    assert config.weights["TaintToleration"] == 3
    assert load_config(None).weights == DEFAULT_WEIGHTS


def test_kube_scheduler_configuration() -> None:
    config = parse_config({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "percentageOfNodesToScore": 50,
        "profiles": [{"schedulerName": "skiff", "plugins": {"score": {
            "disabled": [{"name": "*"}],
            "enabled": [{"name": "NodeResourcesFit", "weight": 4}, {"name": "PodCount"}]}}}]})
    assert config.scheduler_name == "skiff" and config.percentage_of_nodes_to_score == 50
    assert config.weights["NodeResourcesLeastAllocated"] == 4 and config.weights["PodCount"] == 1
    assert config.weights["TaintToleration"] == 0


@pytest.mark.parametrize("data, message", [
    ({"weights": {"Nope": 1}}, "weights.Nope: unknown score plugin 'Nope'"),
    ({"weights": {"ImageLocality": -1}}, "weight of ImageLocality must be an integer 0..100"),
    ({"percentageOfNodesToScore": 101}, "percentageOfNodesToScore: must be an integer 0..100"),
])
def test_config_errors_name_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(data)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheduler config .*missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))


def test_default_normalize() -> None:
    assert default_normalize([0, 5, 10]) == [0, 50, 100]
    assert default_normalize([0, 0]) == [0, 0]
    assert default_normalize([0, 5, 10], reverse=True) == [100, 50, 0]
    assert default_normalize([0, 0], reverse=True) == [100, 100]


def test_image_names() -> None:
    assert normalized_image_name("busybox") == "busybox:latest"
    assert normalized_image_name("reg:5000/app") == "reg:5000/app:latest"
    assert normalized_image_name("reg:5000/app:v1") == "reg:5000/app:v1"


def test_pod_info_facts() -> None:
    p = info(pod("web", "250m", "64Mi", namespace="prod", owner="rs", priority=7,
                 host_ports=[(8080, "", "")]))
    assert (p.key, p.req_cpu, p.req_mem, p.priority, p.owner_uid) == (
        "prod/web", 250, 64 << 20, 7, "uid-rs")
    assert p.host_ports == (("0.0.0.0", "TCP", 8080),)
    assert p.images == ("busybox:latest",)
    assert p.on_node("n1").node_name == "n1" and p.node_name == ""


def test_node_info_sums_follow_pods() -> None:
    ni = NodeInfo(node(cpu="4", memory="8Gi", pods="10", taints=[("a", "", "NoSchedule"),
                                                                 ("b", "", "PreferNoSchedule")]))
    assert (ni.alloc_cpu, ni.alloc_mem, ni.alloc_pods) == (4000, 8 << 30, 10)
    assert [t.key for t in ni.hard_taints] == ["a"] and [t.key for t in ni.prefer_taints] == ["b"]
    ni.add_pod(info(pod("a", "1", owner="rs", host_ports=[(80, "TCP", "")])))
    clone = ni.clone()
    ni.remove_pod("default/a")
    assert (ni.req_cpu, ni.used_ports, ni.owner_counts, len(ni.pods)) == (0, {}, {}, 0)
    assert (clone.req_cpu, clone.owner_counts, len(clone.pods)) == (1000, {"uid-rs": 1}, 1)
