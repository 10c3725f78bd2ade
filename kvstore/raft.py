"""The pysyncobj adapter: one replica's Raft node, durable acknowledgements, group commit.

Design (see DESIGN.md, "Raft comes from pysyncobj"):

- `StoreMachine` is the replicated object: one replicated method, `apply_batch(batch)`, which
  applies a `Batch` to the pure `MVCCStore` under a lock and hands the events to the watch hub.
  Only `mvcc` is part of a snapshot; locks and callbacks are set before pysyncobj records the
  object's own attributes, so they are never pickled.
- `RaftNode` subclasses pysyncobj's `SyncObj` (with `SafeLogMixin`, which restores Raft's log
  matching rules pysyncobj 0.3.17 breaks under pipelining). Commands are only ever submitted on the
  leader: skiff forwards requests at the gRPC layer, so pysyncobj's follower submission path is
  never used (a command that reaches a non-leader is failed at once).
- The tick loop is ours (`autoTick=False`). After every tick it makes the journal durable
  (fdatasync of the mmap'd journal, fsync of the term/vote file when it changed) and only then
  releases the acknowledgements and votes produced during that tick. So a follower acknowledges an
  entry only once it is on stable storage, and the leader counts itself toward a commit only for
  entries appended in an earlier tick (already synced). One sync per tick: group commit keeps it
  cheap.
- `GroupCommitter` (asyncio side) puts every operation waiting at one moment into one Raft entry
  and lets the next batch form while up to `max_in_flight` are being committed.

Threads: pysyncobj runs in the tick thread; the gRPC servers run in the asyncio loop. Results
cross into the loop with `loop.call_soon_threadsafe`. The MVCC store is read from the loop under
`StoreMachine.lock` (serializable reads), and written only in the tick thread.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any, Callable

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import _RAFT_STATE

from kvstore.commands import Applied, Batch, Event, Operation
from kvstore.mvcc import MVCCStore
from kvstore.raft_safety import SafeLogMixin
from kvstore.readindex import ReadIndex

log = logging.getLogger("skiff.kvstore.raft")

EventsCallback = Callable[[list[Event], int], None]


@functools.lru_cache(maxsize=256)
def member_id_for(peer_address: str) -> int:
    """A member's stable 64-bit ID, derived from its peer address (known before it starts)."""
    return int.from_bytes(hashlib.sha256(peer_address.encode()).digest()[:8], "big") & ((1 << 63) - 1)


class StoreMachine(SyncObjConsumer):
    """The replicated state: an `MVCCStore`, changed only by `apply_batch`."""

    def __init__(self, on_events: EventsCallback, on_restored: Callable[[], None]) -> None:
        # Set before SyncObjConsumer.__init__ so they are excluded from snapshots.
        self.lock = threading.RLock()
        self.on_events = on_events
        self.on_restored = on_restored
        super().__init__()
        self.mvcc = MVCCStore()

    @replicated
    def apply_batch(self, batch: Batch) -> list[Applied]:
        with self.lock:
            outcome = self.mvcc.apply(batch)
            revision = self.mvcc.revision
        if outcome.events:
            self.on_events(outcome.events, revision)
        return outcome.applied

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self.lock:
            super()._deserialize(data)
        self.on_restored()


class NodeHooks:
    """Callbacks into skiff from inside pysyncobj's tick (a holder, so the node's dict never changes)."""

    after_append: Callable[[], None] | None = None
    on_reply: Callable[[Any], None] | None = None


class RaftNode(SafeLogMixin, SyncObj):
    """pysyncobj's SyncObj with skiff's rules: leader-only submission, early leader sync.

    Attributes must be set before `SyncObj.__init__` returns: pysyncobj pickles every attribute
    added later into its snapshots.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.hooks = NodeHooks()
        super().__init__(*args, **kwargs)

    def _checkCommandsToApply(self) -> None:  # noqa: N802 (pysyncobj's name)
        if self._SyncObj__raftState != _RAFT_STATE.LEADER:
            self._refuse_queued_commands()
            return
        before = len(self._SyncObj__raftLog)
        super()._checkCommandsToApply()
        # The leader syncs its own new entries while the followers sync theirs (the entries are
        # already sent), rather than after their acknowledgements arrive.
        if self.hooks.after_append is not None and len(self._SyncObj__raftLog) != before:
            self.hooks.after_append()

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]
        if message.get("type") == "next_node_idx" and self.hooks.on_reply is not None:
            self.hooks.on_reply(node)

    def _refuse_queued_commands(self) -> None:
        """skiff forwards at the gRPC layer; a command that reaches a non-leader fails at once."""
        queue = self._SyncObj__commandsQueue
        while True:
            try:
                _command, callback = queue.get_nowait()
            except Empty:
                return
            if callable(callback):
                callback(None, FAIL_REASON.NOT_LEADER)


class DurableAcks:
    """Holds back acknowledgements and votes until the journal is on stable storage."""

    HELD = frozenset({"next_node_idx", "response_vote", "request_vote"})

    def __init__(self, node: SyncObj, journal_path: Path) -> None:
        self.journal = node._SyncObj__raftLog
        self.transport = node._SyncObj__transport
        self.meta_path = Path(str(journal_path) + ".meta")
        self.held: list[tuple[Any, dict]] = []
        self._send = self.transport.send
        self.transport.send = self._hold
        self._term = (self.journal.getCurrentTerm(), self.journal.getVotedForNodeId())
        self.syncs = 0
        self.writes = 1  # unknown state at start: sync once
        self._synced_writes = 0
        self._count_writes()
        node.hooks.after_append = self.sync_journal

    def _hold(self, node: Any, message: dict) -> None:
        if message.get("type") in self.HELD:
            self.held.append((node, message))
        else:
            self._send(node, message)

    def _count_writes(self) -> None:
        """Wrap the journal's mutators so a sync happens only when something was written."""
        for name in ("add", "clear", "deleteEntriesFrom", "deleteEntriesTo"):
            original = getattr(self.journal, name)

            def counted(*args: Any, _original: Callable = original) -> Any:
                self.writes += 1
                return _original(*args)

            setattr(self.journal, name, counted)

    def sync_journal(self) -> None:
        """fdatasync the journal if anything was written to it since the last sync."""
        if self.writes == self._synced_writes:
            return
        writes = self.writes
        # The file object is replaced when the journal grows: look the fd up each time.
        os.fdatasync(self.journal._FileJournal__journalFile._ResizableFile__f.fileno())
        self._synced_writes = writes
        self.syncs += 1

    def flush(self) -> None:
        """Sync the journal (and the term/vote file if it changed), then release held messages."""
        self.sync_journal()
        term = (self.journal.getCurrentTerm(), self.journal.getVotedForNodeId())
        if term != self._term:
            self._term = term
            _fsync_path(self.meta_path)
            _fsync_path(self.meta_path.parent)
        held, self.held = self.held, []
        for node, message in held:
            self._send(node, message)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RaftSettings:
    """Timing and storage knobs (seconds); the defaults suit loopback and a small LAN."""

    tick_wait: float = 0.02
    # A little above pysyncobj's 0.4 s minimum: a tick that stalls (a snapshot of a large store,
    # a huge delete) must not start needless elections; failover stays well under 2 s.
    election_min: float = 0.5
    election_max: float = 1.0
    heartbeat: float = 0.1
    # A leader that hears from no majority for this long steps down (pysyncobj's default is 30 s).
    # Reads never trust this belief (they go through the log), so it only bounds how long a
    # cut-off leader keeps accepting requests it will time out on.
    leader_fallback: float = 2.0
    log_compaction_entries: int = 20_000
    log_compaction_seconds: float = 600.0
    durable: bool = True


class RaftReplica:
    """One replica's Raft node plus the tick thread that drives it."""

    def __init__(self, self_peer: str, peers: list[str], data_dir: Path, secret: str,
                 on_events: EventsCallback, on_restored: Callable[[], None],
                 on_role_change: Callable[[], None], settings: RaftSettings = RaftSettings()) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.self_peer = self_peer
        self.settings = settings
        self.machine = StoreMachine(on_events, on_restored)
        self._on_role_change = on_role_change
        journal = data_dir / "raft.journal"
        conf = SyncObjConf(
            password=secret,
            autoTick=False,
            appendEntriesUseBatch=False,
            journalFile=str(journal),
            fullDumpFile=str(data_dir / "raft.snapshot"),
            useFork=False,
            bindAddress=self_peer,  # pysyncobj would otherwise listen on every interface
            dynamicMembershipChange=True,
            commandsWaitLeader=False,
            raftMinTimeout=settings.election_min,
            raftMaxTimeout=settings.election_max,
            appendEntriesPeriod=settings.heartbeat,
            leaderFallbackTimeout=settings.leader_fallback,
            connectionTimeout=max(3.5, settings.election_max * 2),
            connectionRetryTime=0.5,
            logCompactionMinEntries=settings.log_compaction_entries,
            logCompactionMinTime=settings.log_compaction_seconds,
            appendEntriesBatchSizeBytes=2 ** 20,
            sendBufferSize=2 ** 20,
            recvBufferSize=2 ** 20,
        )
        others = [p for p in peers if p != self_peer]
        self.node = RaftNode(self_peer, others, conf, consumers=[self.machine])
        self.acks = DurableAcks(self.node, journal) if settings.durable else None
        self.reads = ReadIndex(self.node)
        self._tap_transport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raft-tick", daemon=True)
        self._last_role: tuple[bool, Any] = (False, None)

    def _tap_transport(self) -> None:
        """Let ReadIndex see every message sent and every acknowledgement received."""
        transport = self.node._SyncObj__transport
        send = transport.send

        def tapped(peer: Any, message: dict) -> None:
            self.reads.on_send(peer, message)
            send(peer, message)

        transport.send = tapped
        self.node.hooks.on_reply = self.reads.on_reply

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            if self.acks is not None:
                self.acks.flush()
            self.node.destroy()  # with autoTick off this also closes (and flushes) the journal
        except Exception:  # shutting down: nothing useful to do with it
            log.debug("error while destroying the raft node", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.node.doTick(self.settings.tick_wait)
                if self.acks is not None:
                    self.acks.flush()
                self.reads.process()
            except Exception:
                log.exception("raft tick failed")
                time.sleep(self.settings.tick_wait)
            role = (self.node._isLeader(), self.node._getLeader())
            if role != self._last_role:
                self._last_role = role
                self._on_role_change()

    # ---- state -----------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self.node._isLeader()

    def leader_peer(self) -> str | None:
        leader = self.node._getLeader()
        return None if leader is None else leader.address

    @property
    def term(self) -> int:
        return self.node.raftCurrentTerm

    @property
    def commit_index(self) -> int:
        return self.node.raftCommitIndex

    @property
    def applied_index(self) -> int:
        return self.node.raftLastApplied

    def peers(self) -> list[str]:
        """Every voting member's peer address, self included."""
        return sorted([self.self_peer] + [n.address for n in self.node.otherNodes])

    # ---- proposing (called from the asyncio loop) ------------------------------------------

    def propose(self, batch: Batch, callback: Callable[[Any, int], None]) -> None:
        """Submit `batch`; `callback(result, fail_reason)` runs later in the tick thread."""
        self.machine.apply_batch(batch, callback=callback)

    def read_index(self, callback: Callable[[bool], None]) -> None:
        """`callback(True)` (tick thread) once a linearizable read may be served here, or
        `callback(False)` if this replica does not lead (see kvstore.readindex)."""
        self.reads.request(callback)

    def add_member(self, peer: str, callback: Callable[[Any, int], None]) -> None:
        self.node.addNodeToCluster(peer, callback=callback)

    def remove_member(self, peer: str, callback: Callable[[Any, int], None]) -> None:
        self.node.removeNodeFromCluster(peer, callback=callback)


class ProposalFailed(Exception):
    """A batch did not commit (lost leadership, discarded, or refused); the outcome may be unknown."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"proposal failed (pysyncobj reason {reason})")
        self.reason = reason


class GroupCommitter:
    """Packs every waiting operation into one Raft entry; up to `max_in_flight` entries pending.

    Lives in the asyncio loop. A batch's futures resolve when its entry is applied on this
    (leader) replica, or fail when leadership is lost (`abandon_all`).
    """

    def __init__(self, replica: RaftReplica, loop: asyncio.AbstractEventLoop,
                 max_in_flight: int = 2, max_batch_ops: int = 2000) -> None:
        self.replica = replica
        self.loop = loop
        self.max_in_flight = max_in_flight
        self.max_batch_ops = max_batch_ops
        self.pending: list[tuple[Operation, asyncio.Future]] = []
        self.in_flight: dict[int, list[asyncio.Future]] = {}
        self._next_id = 0
        self.batches = 0
        self.ops = 0

    def submit(self, op: Operation) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append((op, future))
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        while self.pending and len(self.in_flight) < self.max_in_flight:
            items = self.pending[: self.max_batch_ops]
            del self.pending[: self.max_batch_ops]
            items = [(op, f) for op, f in items if not f.done()]  # skip callers that gave up
            if not items:
                continue
            self._next_id += 1
            batch_id = self._next_id
            self.in_flight[batch_id] = [f for _op, f in items]
            self.batches += 1
            self.ops += len(items)

            def on_result(result: Any, reason: int, batch_id: int = batch_id) -> None:
                self.loop.call_soon_threadsafe(self._finish, batch_id, result, reason)

            self.replica.propose(Batch(tuple(op for op, _f in items)), on_result)

    def _finish(self, batch_id: int, result: Any, reason: int) -> None:
        futures = self.in_flight.pop(batch_id, None)
        if futures is None:
            return  # already abandoned
        for i, future in enumerate(futures):
            if future.done():
                continue
            if reason == FAIL_REASON.SUCCESS:
                future.set_result(result[i])
            else:
                future.set_exception(ProposalFailed(reason))
        self._dispatch()

    def abandon_all(self, reason: int = FAIL_REASON.LEADER_CHANGED) -> None:
        """Fail every pending and in-flight operation (leadership changed)."""
        for futures in self.in_flight.values():
            for f in futures:
                if not f.done():
                    f.set_exception(ProposalFailed(reason))
        self.in_flight.clear()
        for _op, f in self.pending:
            if not f.done():
                f.set_exception(ProposalFailed(reason))
        self.pending.clear()

