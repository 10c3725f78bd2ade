"""Under a constant write load, MVCC compaction and Raft log snapshots keep memory and disk bounded,
and a replica that was down catches up from a snapshot."""
from __future__ import annotations

import time

import grpc

from kvstore.client import sync_stubs
from protos.etcd.etcdserverpb import rpc_pb2


def test_history_and_log_stay_bounded_and_laggard_catches_up(cluster_factory):
    cluster = cluster_factory(extra_args=("--compaction-retention", "100", "--compaction-interval", "0.5",
                                          "--snapshot-entries", "300"))
    leader = cluster.wait_leader()
    laggard = (leader + 1) % 3
    cluster.kill(laggard)
    stubs = sync_stubs(cluster.endpoints[leader])
    sizes = []
    first_rev = None
    for round_ in range(6):
        for i in range(250):
            resp = stubs.kv.Put(rpc_pb2.PutRequest(key=b"hot/%d" % (i % 10), value=b"x" * 200), timeout=5)
            first_rev = first_rev or resp.header.revision
        time.sleep(1.0)
        journal = sum(p.stat().st_size for p in cluster.members[leader].data_dir.glob("raft.journal"))
        sizes.append(journal)
    status = stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=5)
    # MVCC history was compacted: an early revision is gone.
    try:
        stubs.kv.Range(rpc_pb2.RangeRequest(key=b"hot/0", revision=first_rev), timeout=5)
        raise AssertionError("old revision still readable: automatic compaction did not run")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE
    assert status.dbSizeInUse < 200_000, status
    # The journal did not grow with the 1,500 writes (it is rewritten at each snapshot).
    assert sizes[-1] <= max(sizes[:3]) * 2, sizes

    cluster.restart(laggard)
    deadline = time.monotonic() + 30
    hashes: set[int] = set()
    while time.monotonic() < deadline:
        try:
            revs = set()
            hashes = set()
            for ep in cluster.endpoints:
                s = sync_stubs(ep)
                h = s.maintenance.HashKV(rpc_pb2.HashKVRequest(), timeout=2)
                hashes.add(h.hash)
                revs.add(h.header.revision)
                s.channel.close()
            if len(hashes) == 1 and len(revs) == 1:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    assert len(hashes) == 1, "the restarted replica did not converge"
    stubs.channel.close()
