"""Cluster membership through etcd's API: MemberAdd, a new replica joins and serves; MemberRemove."""
from __future__ import annotations

import time

import grpc

from kvstore.client import sync_stubs
from kvstore.localcluster import Member, free_ports
from protos.etcd.etcdserverpb import rpc_pb2


def _names(stubs) -> dict[str, int]:
    members = stubs.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
    return {m.name: m.ID for m in members}


def test_add_a_member_then_remove_it(cluster_factory):
    cluster = cluster_factory()
    stubs = sync_stubs(cluster.endpoints[0])
    stubs.kv.Put(rpc_pb2.PutRequest(key=b"before", value=b"1"), timeout=5)
    client_port, peer_port = free_ports(2)
    new = Member("m4", f"127.0.0.1:{client_port}", f"127.0.0.1:{peer_port}",
                 cluster.base_dir / "data-4", cluster.base_dir / "member-4.log")
    added = stubs.cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://{new.peer}"]), timeout=10)
    assert len(added.members) == 4 and added.member.peerURLs == [f"http://{new.peer}"]
    cluster.members.append(new)
    cluster.start_member(3)

    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline and value != b"1":
        try:
            new_stubs = sync_stubs(new.client)
            kvs = new_stubs.kv.Range(rpc_pb2.RangeRequest(key=b"before", serializable=True), timeout=2).kvs
            value = kvs[0].value if kvs else None
            new_stubs.channel.close()
        except grpc.RpcError:
            time.sleep(0.3)
    assert value == b"1", "the new member did not catch up"
    while time.monotonic() < deadline and "m4" not in _names(stubs):
        time.sleep(0.3)
    assert set(_names(stubs)) == {"m1", "m2", "m3", "m4"}
    new_stubs = sync_stubs(new.client)
    new_stubs.kv.Put(rpc_pb2.PutRequest(key=b"via-m4", value=b"2"), timeout=5)  # it forwards to the leader
    assert stubs.kv.Range(rpc_pb2.RangeRequest(key=b"via-m4"), timeout=5).kvs[0].value == b"2"
    new_stubs.channel.close()

    stubs.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=_names(stubs)["m4"]), timeout=10)
    assert "m4" not in _names(stubs)
    stubs.kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"3"), timeout=5)
    stubs.channel.close()
