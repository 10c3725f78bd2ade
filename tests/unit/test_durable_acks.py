"""DurableAcks: acknowledgements and votes leave only after the journal is synced."""
from __future__ import annotations

from pathlib import Path

from pysyncobj import SyncObjConf

from kvstore.localcluster import free_ports
from kvstore.raft import DurableAcks, RaftNode


def test_acks_wait_for_the_sync_and_clean_journals_are_not_synced(tmp_path: Path) -> None:
    journal = tmp_path / "raft.journal"
    port = free_ports(1)[0]
    node = RaftNode(f"127.0.0.1:{port}", [], SyncObjConf(autoTick=False, journalFile=str(journal),
                                                       bindAddress=f"127.0.0.1:{port}"))
    try:
        acks = DurableAcks(node, journal)
        sent: list[dict] = []
        acks._send = lambda _node, message: sent.append(message)
        acks._hold("peer", {"type": "next_node_idx", "next_node_idx": 2})
        acks._hold("peer", {"type": "response_vote", "term": 1})
        acks._hold("peer", {"type": "append_entries"})  # not an acknowledgement: goes at once
        assert [m["type"] for m in sent] == ["append_entries"]
        acks.flush()
        assert [m["type"] for m in sent] == ["append_entries", "next_node_idx", "response_vote"]
        syncs = acks.syncs
        acks.flush()
        assert acks.syncs == syncs, "a journal with nothing new was synced again"
        node._SyncObj__raftLog.add(b"cmd", 99, 1)
        acks.flush()
        assert acks.syncs == syncs + 1
    finally:
        node.destroy()
