"""Scheduler plugins, one per module, with Kubernetes' names and reason strings.

`default_plugins()` lists them in the order filters run (Kubernetes' order, NodeReady first):
a node's reason is the first failing filter's, as in Kubernetes, so the order shapes the
unschedulable message. Score-only plugins follow.
"""
from __future__ import annotations

from controlplane.scheduler.framework import Plugin
from controlplane.scheduler.plugins.balanced_allocation import BalancedAllocation
from controlplane.scheduler.plugins.image_locality import ImageLocality
from controlplane.scheduler.plugins.inter_pod_affinity import InterPodAffinity
from controlplane.scheduler.plugins.least_allocated import LeastAllocated
from controlplane.scheduler.plugins.node_affinity import NodeAffinity
from controlplane.scheduler.plugins.node_name import NodeName
from controlplane.scheduler.plugins.node_ports import NodePorts
from controlplane.scheduler.plugins.node_ready import NodeReady
from controlplane.scheduler.plugins.node_resources_fit import NodeResourcesFit
from controlplane.scheduler.plugins.node_unschedulable import NodeUnschedulable
from controlplane.scheduler.plugins.pod_count import PodCount
from controlplane.scheduler.plugins.selector_spread import SelectorSpread
from controlplane.scheduler.plugins.taint_toleration import TaintToleration

__all__ = ["default_plugins", "BalancedAllocation", "ImageLocality", "InterPodAffinity",
           "LeastAllocated", "NodeAffinity", "NodeName", "NodePorts", "NodeReady",
           "NodeResourcesFit", "NodeUnschedulable", "PodCount", "SelectorSpread",
           "TaintToleration"]


def default_plugins() -> list[Plugin]:
    return [NodeReady(), NodeUnschedulable(), NodeName(), TaintToleration(), NodeAffinity(),
            NodePorts(), NodeResourcesFit(), InterPodAffinity(), LeastAllocated(),
            BalancedAllocation(), ImageLocality(), SelectorSpread(), PodCount()]
