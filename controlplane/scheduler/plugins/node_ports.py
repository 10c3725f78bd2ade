"""NodePorts (filter): a host port the pod asks for must be free on the node.

A (protocol, port) pair conflicts when either side binds 0.0.0.0 (every address) or both bind
the same address; an empty hostIP means 0.0.0.0 and an empty protocol TCP, as in Kubernetes.
Skipped for pods without host ports. Reason (Kubernetes'): "node(s) didn't have free ports for
the requested pod ports".
"""
from __future__ import annotations

from controlplane.scheduler.framework import (SKIP, SUCCESS, CycleState, NodeInfo, PodInfo,
                                              Snapshot, Status, unschedulable)

NAME = "NodePorts"
REASON = "node(s) didn't have free ports for the requested pod ports"
_FAIL = unschedulable(NAME, REASON)
ANY_IP = "0.0.0.0"


def conflicts(pod: PodInfo, node: NodeInfo) -> bool:
    used = node.used_ports
    if not used:
        return False
    for ip, proto, port in pod.host_ports:
        ips = used.get((proto, port))
        if ips and (ip == ANY_IP or ip in ips or ANY_IP in ips):
            return True
    return False


class NodePorts:
    name = NAME

    def pre_filter(self, state: CycleState, pod: PodInfo, snapshot: Snapshot) -> Status:
        return SUCCESS if pod.host_ports else SKIP

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        return _FAIL if conflicts(pod, node) else SUCCESS
