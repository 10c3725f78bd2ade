"""ReadIndex: a read is served only after a majority answered messages sent after it arrived,
and only once what was committed at its arrival is applied. Deterministic: fake node and clock."""
from __future__ import annotations

from pysyncobj.syncobj import _RAFT_STATE

from kvstore.readindex import ReadIndex


class FakeNode:
    def __init__(self, followers: int = 2) -> None:
        self._SyncObj__raftState = _RAFT_STATE.LEADER
        self._SyncObj__raftCurrentTerm = 3
        self._SyncObj__raftCommitIndex = 10
        self._SyncObj__noopIDx = 8
        self._SyncObj__raftLastApplied = 10
        self._SyncObj__otherNodes = {f"f{i}" for i in range(followers)}
        self.heartbeats = 0
        self.connected = set(self._SyncObj__otherNodes)

    def isNodeConnected(self, peer: str) -> bool:  # noqa: N802 (pysyncobj's name)
        return peer in self.connected

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802
        self.heartbeats += 1


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(followers: int = 2):
    node, clock = FakeNode(followers), Clock()
    reads = ReadIndex(node, clock)
    results: list[bool] = []
    return node, clock, reads, results


def send_all(reads: ReadIndex, node: FakeNode, clock: Clock) -> None:
    for peer in sorted(node._SyncObj__otherNodes):
        reads.on_send(peer, {"type": "append_entries"})


def test_needs_a_majority_answer_to_a_message_sent_after_the_read() -> None:
    node, clock, reads, results = make()
    send_all(reads, node, clock)          # a heartbeat sent before the read arrives
    clock.t += 1
    reads.request(results.append)
    reads.on_reply("f0")                  # answers that older heartbeat: proves nothing
    reads.process()
    assert results == [] and node.heartbeats == 1, "a round must be started for the read"
    clock.t += 1
    send_all(reads, node, clock)          # the round the read asked for
    reads.process()
    assert results == []
    reads.on_reply("f1")                  # f1 answers its first message: the pre-read heartbeat
    reads.process()
    assert results == []
    reads.on_reply("f1")                  # now the post-read one: leader + f1 is a majority of 3
    reads.process()
    assert results == [True]


def test_waits_for_the_commit_index_at_arrival_to_be_applied() -> None:
    node, clock, reads, results = make()
    node._SyncObj__raftLastApplied = 9
    reads.request(results.append)
    clock.t += 1
    reads.process()
    send_all(reads, node, clock)
    reads.on_reply("f0")
    node._SyncObj__raftCommitIndex = 12   # later commits do not raise this read's index
    reads.process()
    assert results == []
    node._SyncObj__raftLastApplied = 10
    reads.process()
    assert results == [True]


def test_no_read_before_the_leaders_own_noop_is_committed() -> None:
    node, clock, reads, results = make()
    node._SyncObj__raftCommitIndex = 7    # the no-op (index 8) is not committed yet
    reads.request(results.append)
    clock.t += 1
    send_all(reads, node, clock)
    reads.on_reply("f0")
    reads.on_reply("f1")
    reads.process()
    assert results == []
    node._SyncObj__raftCommitIndex = node._SyncObj__raftLastApplied = 8
    reads.process()
    assert results == [True]


def test_losing_leadership_fails_waiting_reads_and_forgets_confirmations() -> None:
    node, clock, reads, results = make()
    reads.request(results.append)
    clock.t += 1
    send_all(reads, node, clock)
    node._SyncObj__raftState = _RAFT_STATE.FOLLOWER
    reads.process()
    assert results == [False]
    # Leader again in a later term: an answer from the old term must not confirm a new read.
    reads.on_reply("f0")
    node._SyncObj__raftState = _RAFT_STATE.LEADER
    node._SyncObj__raftCurrentTerm = 5
    node._SyncObj__noopIDx = 9
    reads.process()
    reads.request(results.append)
    reads.process()
    assert results == [False]


def test_a_disconnected_peers_unanswered_messages_are_forgotten() -> None:
    node, clock, reads, results = make(followers=2)
    send_all(reads, node, clock)          # f1's message will never be answered...
    node.connected.discard("f1")
    reads.process()                       # ...its connection dropped
    node.connected.add("f1")
    clock.t += 1
    reads.request(results.append)
    clock.t += 1
    send_all(reads, node, clock)
    reads.on_reply("f1")                  # answers the post-read message, credited as such
    reads.process()
    assert results == [True]


def test_single_replica_needs_no_round() -> None:
    node, clock, reads, results = make(followers=0)
    reads.request(results.append)
    reads.process()
    assert results == [True] and node.heartbeats == 0
