"""`skiff lab status`: hosts, addresses, processes, each replica's Raft view, faults in force.

Replica views come from Maintenance.Status on each replica's client endpoint, asked from the
root namespace over the bridge (clients are never cut by the lab's partitions, so a replica on
the minority side still answers and shows that it has no leader). A paused or killed replica
shows as unreachable. Calls run in parallel, each with a short deadline, so status is quick even
when hosts are frozen.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from deploy.lab import procs
from deploy.lab.state import LabState


@dataclass
class ReplicaInfo:
    """What a replica says about itself. role: leader | follower | no-leader | unreachable."""

    member_id: int = 0
    leader: int = 0
    term: int = 0
    index: int = 0
    applied: int = 0
    revision: int = 0
    error: str = ""

    @property
    def role(self) -> str:
        if self.error:
            return "unreachable"
        if not self.leader:
            return "no-leader"
        return "leader" if self.leader == self.member_id else "follower"


def query_replica(endpoint: str, timeout: float) -> ReplicaInfo:
    from kvstore.client import sync_stubs
    from protos.etcd.etcdserverpb import rpc_pb2

    stubs = sync_stubs(endpoint)
    try:
        resp = stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=timeout)
        return ReplicaInfo(member_id=resp.header.member_id, leader=resp.leader, term=resp.raftTerm,
                           index=resp.raftIndex, applied=resp.raftAppliedIndex, revision=resp.header.revision)
    except grpc.RpcError as err:
        return ReplicaInfo(error=err.code().name.lower())
    finally:
        stubs.channel.close()


def replica_status(lab: LabState, timeout: float = 1.0) -> dict[str, ReplicaInfo]:
    """host name -> ReplicaInfo for every store replica, asked in parallel."""
    endpoints = lab.store_endpoints()
    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        futures = {name: pool.submit(query_replica, ep, timeout) for name, ep in endpoints.items()}
        return {name: fut.result() for name, fut in futures.items()}


def leader_host(lab: LabState, timeout: float = 1.0) -> str | None:
    """The host whose replica is leader by its own account and by a majority's, if any."""
    infos = replica_status(lab, timeout)
    votes: dict[int, int] = {}
    for info in infos.values():
        if info.leader and not info.error:
            votes[info.leader] = votes.get(info.leader, 0) + 1
    for name, info in infos.items():
        if info.role == "leader" and votes.get(info.member_id, 0) > len(lab.replicas) // 2:
            return name
    return None


def render(lab: LabState, timeout: float = 1.0) -> str:
    """The status table as text (see module doc)."""
    infos = replica_status(lab, timeout)
    ids = {info.member_id: name for name, info in infos.items() if info.member_id}
    rows = [["HOST", "ADDRESS", "PROCESSES", "ROLE", "LEADER", "TERM", "APPLIED", "REVISION", "SLOW"]]
    for host in lab.hosts:
        processes = ", ".join(f"{role}:{procs.state_of(p)}" for role, p in host.procs.items()) or "-"
        info = infos.get(host.name)
        if info is None:
            store = ["-"] * 5
        elif info.error:
            store = [f"unreachable ({info.error})", "-", "-", "-", "-"]
        else:
            leader = ids.get(info.leader, hex(info.leader) if info.leader else "none")
            store = [info.role, leader, str(info.term), str(info.applied), str(info.revision)]
        rows.append([host.name, host.ip, processes, *store, host.slow or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append("")
    lines.append(f"lab {lab.prefix} in {lab.dir}: store {lab.store}, bridge {lab.bridge} {lab.bridge_ip}, subnet {lab.subnet}")
    if lab.blocked:
        cuts = ", ".join(f"{a}x{b}" for a, b in lab.blocked)
        lines.append(f"network fault in force: {lab.network_fault} (cut pairs: {cuts})")
    else:
        lines.append("network: no partition in force")
    return "\n".join(lines)
