"""Linearizable reads without log entries: Raft's ReadIndex (thesis §6.4), for pysyncobj.

A read may be served from the leader's state once (1) the leader has confirmed, after the read
arrived, that it still leads, and (2) it has applied everything committed when the read arrived.

(1) comes from heartbeats: every `append_entries` the leader sends is timestamped per follower,
and every `next_node_idx` reply takes the oldest outstanding timestamp of that follower (TCP keeps
a connection's messages in order, and a follower answers each message at most once, so a reply
is credited to its own message or an older one — never a newer one). A follower only answers a
leader whose term is at least its own; so when a majority (the leader included) has answered
messages sent after time t, no other leader can have been elected before then (quorum
intersection), and the leader led at t. pysyncobj's replies carry no term, which is why the
credit goes by send time rather than by a term in the reply.

(2) is the leader's commit index taken when the read is registered (in the Raft thread), once the
leader has committed an entry of its own term (its no-op): an earlier commit index could miss
entries committed by a previous leader.

All of this runs in the Raft tick thread; `request` may be called from any thread.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Callable

from pysyncobj.syncobj import _RAFT_STATE

ReadCallback = Callable[[bool], None]


@dataclass
class _Read:
    arrived: float
    callback: ReadCallback
    index: int | None = None


class ReadIndex:
    def __init__(self, node: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self._incoming: collections.deque[_Read] = collections.deque()
        self._waiting: list[_Read] = []
        self._sent: dict[Any, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._confirmed: dict[Any, float] = {}
        self._last_send: dict[Any, float] = {}
        self._term = node._SyncObj__raftCurrentTerm
        self.rounds = 0

    # ---- from any thread ---------------------------------------------------------------------

    def request(self, callback: ReadCallback) -> None:
        """Ask for a read point; `callback(True)` (Raft thread) once the read may be served,
        `callback(False)` if this replica is not, or stops being, the leader."""
        self._incoming.append(_Read(self.clock(), callback))
        notifier = getattr(self.node, "_SyncObj__pipeNotifier", None)
        if notifier is not None:
            notifier.notify()  # wake the tick thread out of its poll

    # ---- Raft thread: transport taps -----------------------------------------------------------

    def on_send(self, peer: Any, message: dict) -> None:
        if message.get("type") == "append_entries" and self.node.isNodeConnected(peer):
            # (a message to a disconnected peer is dropped, and would never be answered)
            now = self.clock()
            self._sent[peer].append(now)
            self._last_send[peer] = now

    def on_reply(self, peer: Any) -> None:
        sent = self._sent.get(peer)
        if sent:
            self._confirmed[peer] = max(self._confirmed.get(peer, 0.0), sent.popleft())

    def on_disconnected(self, peer: Any) -> None:
        # Messages of a dropped connection are never answered: forget them (replies on the new
        # connection must not be credited with their times).
        self._sent.pop(peer, None)

    # ---- Raft thread: after each tick --------------------------------------------------------

    def process(self) -> None:
        node = self.node
        leader = node._SyncObj__raftState == _RAFT_STATE.LEADER
        if not leader or node._SyncObj__raftCurrentTerm != self._term:
            # Confirmations count only within one term of this replica's leadership.
            self._confirmed.clear()
            self._term = node._SyncObj__raftCurrentTerm
        for peer in node._SyncObj__otherNodes:
            if not node.isNodeConnected(peer):
                self.on_disconnected(peer)
        while self._incoming:
            self._waiting.append(self._incoming.popleft())
        if not self._waiting:
            return
        if not leader:
            self._fail_all()
            return
        commit = node._SyncObj__raftCommitIndex
        noop = node._SyncObj__noopIDx
        own_term_committed = noop is not None and commit >= noop
        for read in self._waiting:
            if read.index is None and own_term_committed:
                read.index = commit
        confirmed = self._quorum_confirmed()
        applied = node._SyncObj__raftLastApplied
        still = []
        for read in self._waiting:
            if read.index is not None and read.arrived < confirmed and applied >= read.index:
                read.callback(True)
            else:
                still.append(read)
        self._waiting = still
        if still and self._needs_round(max(r.arrived for r in still)):
            self._heartbeat()

    def _needs_round(self, arrived: float) -> bool:
        """Whether some follower has been sent nothing since `arrived` (a read needs its answer)."""
        peers = self.node._SyncObj__otherNodes
        return any(self._last_send.get(peer, 0.0) <= arrived for peer in peers)

    def _quorum_confirmed(self) -> float:
        """The latest time t such that a majority (self included) answered messages sent after t."""
        others = list(self.node._SyncObj__otherNodes)
        times = sorted((self._confirmed.get(peer, 0.0) for peer in others), reverse=True)
        needed = (len(others) + 1) // 2  # followers needed besides the leader itself
        if needed == 0:
            return float("inf")
        return times[needed - 1] if len(times) >= needed else 0.0

    def _heartbeat(self) -> None:
        self.rounds += 1
        self.node._SyncObj__sendAppendEntries()

    def _fail_all(self) -> None:
        waiting, self._waiting = self._waiting, []
        for read in waiting:
            read.callback(False)
