"""The store's guarantees under faults, with real processes on loopback.

Timing bounds here are generous and only catch hangs; how fast failover is belongs to
`skiff bench kv --failover`.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time
from pathlib import Path

import grpc
import pytest

from kvstore.client import sync_stubs
from protos.etcd.etcdserverpb import rpc_pb2


def put(endpoint: str, key: bytes, value: bytes, timeout: float = 2.0) -> rpc_pb2.PutResponse:
    stubs = sync_stubs(endpoint)
    try:
        return stubs.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=timeout)
    finally:
        stubs.channel.close()


def get(endpoint: str, key: bytes, serializable: bool = False, timeout: float = 2.0, **kw) -> rpc_pb2.RangeResponse:
    stubs = sync_stubs(endpoint)
    try:
        return stubs.kv.Range(rpc_pb2.RangeRequest(key=key, serializable=serializable, **kw), timeout=timeout)
    finally:
        stubs.channel.close()


def put_eventually(cluster, key: bytes, value: bytes, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        for member in cluster.members:
            if not member.alive:
                continue
            try:
                put(member.client, key, value)
                return
            except grpc.RpcError as err:
                last = err
        time.sleep(0.1)
    raise AssertionError(f"writes did not resume within {within}s: {last}")


def test_kill_leader_elects_new_one_and_writes_resume(cluster_factory):
    cluster = cluster_factory()
    put(cluster.endpoints[0], b"before", b"1")
    old = cluster.leader_index()
    assert old is not None
    cluster.kill(old)
    new = cluster.wait_leader(timeout=20, exclude=old)
    assert new != old
    put_eventually(cluster, b"after", b"2")
    survivor = cluster.endpoints[new]
    assert get(survivor, b"before").kvs[0].value == b"1"
    cluster.restart(old)
    cluster.wait_leader(timeout=20)
    deadline = time.monotonic() + 10
    kvs = []
    while time.monotonic() < deadline:  # the restarted member opens its port and catches up
        try:
            kvs = get(cluster.endpoints[old], b"after", serializable=True).kvs
        except grpc.RpcError:
            kvs = []
        if kvs:
            break
        time.sleep(0.2)
    assert kvs and kvs[0].value == b"2"


@pytest.mark.parametrize("survivor_role", ["leader", "follower"])
def test_minority_refuses_within_deadline_but_serves_serializable(cluster_factory, survivor_role):
    cluster = cluster_factory()
    put(cluster.endpoints[0], b"k", b"committed")
    time.sleep(0.3)  # every replica applies it
    leader = cluster.leader_index()
    survivor = leader if survivor_role == "leader" else (leader + 1) % 3
    for index in range(3):
        if index != survivor:
            cluster.kill(index)
    endpoint = cluster.endpoints[survivor]
    for attempt in ("write", "linearizable read"):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            if attempt == "write":
                put(endpoint, b"k", b"lost?", timeout=3.0)
            else:
                get(endpoint, b"k", timeout=3.0)
        elapsed = time.monotonic() - started
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, (attempt, info.value)
        assert elapsed < 3.0, f"{attempt} answered after {elapsed:.2f}s, past the client's deadline"
    stale = get(endpoint, b"k", serializable=True)
    assert stale.kvs[0].value == b"committed"


def test_acknowledged_writes_survive_kill_9_of_every_replica(cluster_factory):
    cluster = cluster_factory()
    acked: list[bytes] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        stubs = sync_stubs(cluster.endpoints[worker % 3])
        n = 0
        while not stop.is_set():
            key = b"w/%d/%d" % (worker, n)
            n += 1
            try:
                stubs.kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=2.0)
            except grpc.RpcError:
                continue
            with lock:
                acked.append(key)
        stubs.channel.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    for member in cluster.members:  # all at once, mid-load
        os.kill(member.process.pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    for index in range(3):
        cluster.kill(index)  # reap
    with lock:
        acknowledged = list(acked)
    assert len(acknowledged) > 50, "the load did not get going"
    for index in range(3):
        cluster.restart(index)
    cluster.wait_leader(timeout=30)
    found = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            found = {kv.key for kv in get(cluster.endpoints[0], b"w/", range_end=b"w0", timeout=5).kvs}
            break
        except grpc.RpcError:
            time.sleep(0.2)
    missing = [k for k in acknowledged if k not in found]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost, e.g. {missing[:5]}"


class _Boom:
    """A pickle that would create a file if the Raft port unpickled what strangers send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_peer_without_secret_cannot_join_or_inject(cluster_factory, tmp_path):
    from pysyncobj import SyncObj, SyncObjConf, replicated

    cluster = cluster_factory()
    put(cluster.endpoints[0], b"guard", b"1")
    revision = get(cluster.endpoints[0], b"guard").header.revision

    # 1. Raw bytes, including a malicious pickle, thrown at every Raft port.
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(marker))
    for member in cluster.members:
        host, port = member.peer.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(len(payload).to_bytes(4, "big") + payload)
            s.sendall(payload)
            time.sleep(0.2)

    # 2. A pysyncobj node with the wrong secret tries to join and submit commands.
    class Intruder(SyncObj):
        @replicated
        def anything(self, x):
            return x

    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    addr = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    intruder = Intruder(addr, [m.peer for m in cluster.members],
                        SyncObjConf(password="not-the-cluster-secret", connectionRetryTime=0.2))
    try:
        for _ in range(10):
            intruder.anything(1)
        time.sleep(3)
        assert intruder._getLeader() is None, "the intruder learned who leads"
    finally:
        intruder.destroy()
    assert not marker.exists(), "a Raft port executed a stranger's pickle"
    for member in cluster.members:
        assert member.alive
    assert get(cluster.endpoints[1], b"guard").header.revision == revision
    put(cluster.endpoints[2], b"guard", b"2")  # and the cluster still works
