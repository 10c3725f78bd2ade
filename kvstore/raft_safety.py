"""Raft log-safety fixes for pysyncobj 0.3.17, applied as a mixin (no changes to pysyncobj's files).

The bug
-------
Two pieces of pysyncobj's ``SyncObj.__onMessageReceived`` interact badly under load:

* Follower: on an ``append_entries`` message whose consistency check passes (the local entry at
  ``prevLogIdx`` has ``prevLogTerm``), pysyncobj deletes *every* local entry after ``prevLogIdx``
  and appends the message's entries, whenever the local log is longer than ``prevLogIdx`` - even
  when those local entries carry exactly the same index and term as the entries being sent, and
  even when the message carries fewer entries than the follower already has (a batch is capped
  at ``appendEntriesBatchSizeBytes``, a heartbeat carries none).
* Leader: on a successful ``next_node_idx`` reply, pysyncobj sets ``nextIndex = reply`` whenever
  ``matchIndex`` grows. ``nextIndex`` had already been advanced optimistically past every entry
  sent since (pipelining), so an ack for an older batch moves ``nextIndex`` *backwards* and the
  in-flight entries are sent again. A ``reset`` reply sets ``nextIndex`` to whatever the follower
  says, even below ``matchIndex + 1``.

Together: the re-send reaches a follower that already has (and has acknowledged, and often
applied) the later entries; it truncates them, logging CRITICAL "truncating already-applied log
entries" when they were applied, and re-appends a shorter batch. The leader has meanwhile counted
the follower's ack towards the commit quorum, so a committed entry can sit on only a minority of
logs; had the leader died then, it could be lost. The follower may also have a log compaction
pending whose cut point (its lastApplied - 1 when the snapshot was taken) lies beyond the shortened
log; ``deleteEntriesTo`` then empties the journal and every later ``append_entries`` raises
IndexError. And once ``nextIndex`` has fallen below the leader's first log entry the leader
installs its snapshot on a follower that was not behind: the follower's state and lastApplied
jump back (by over a thousand entries in our load runs) and are replayed.

The rules restored here (Raft paper, figure 2 and section 5.3)
--------------------------------------------------------------
Follower (AppendEntries receiver, rules 3 to 5):

1. Only a *conflict* (same index, different term) deletes entries, and only from the first
   conflicting entry. Leading entries that already exist locally with the same index and term are
   dropped from (a copy of) the message and ``prevLogIdx``/``prevLogTerm`` are moved to the last
   of them, so pysyncobj's truncation runs at a real conflict or not at all. By the Log Matching
   property an entry with the same index and term is the same entry with the same prefix, so
   keeping it changes nothing but keeps every acknowledgement true: an entry a follower once
   reported as stored stays stored unless a leader with a conflicting entry overwrites it, and a
   committed entry never conflicts (Leader Completeness), so committed entries are never removed.
2. If every entry matched and the local log extends beyond the last entry of the message, the
   tail is kept: pysyncobj processes the message against a read-only view of the log that ends at
   the last verified entry, so it neither truncates nor rolls back cluster-change entries of the
   tail, and replies ``success`` with ``next_node_idx = last verified + 1`` (it must not
   acknowledge the tail, which this message did not verify - it may be a stale leftover of an
   older term).
3. ``commitIndex = min(leaderCommit, index of the last entry verified by this message)``, so an
   unverified tail entry is never committed (and applied) on the strength of this message. On the
   plain-append and conflict paths the log ends at that entry once pysyncobj has appended, and on
   the kept-tail path pysyncobj sees the view ending there, so its own ``min(leaderCommit, last
   log index)`` is exactly this rule. The message's ``commit_index`` itself is left alone: pysyncobj
   also stores it as the leader's commit index, which gates ``onReady``/``isReady()``, and a
   lowered value would report a lagging follower as caught up. A commit index the follower already
   had is never lowered.

Leader (``nextIndex``/``matchIndex`` bookkeeping, section 5.3):

4. ``matchIndex`` only grows (pysyncobj already does this).
5. A success reply never moves ``nextIndex`` backwards: the reply acknowledges an older batch and
   says nothing against batches sent after it, so the pipelined value is kept.
6. ``nextIndex >= matchIndex + 1`` always: entries up to ``matchIndex`` are known to be on the
   follower, so a (possibly stale) ``reset`` reply can't make the leader re-send below them.

Rules 1 to 3 alone are enough for safety (re-sends become harmless); rules 5 and 6 remove the
needless re-sends and, with them, most of the snapshot installs the regressions caused.

Usage
-----
::

    class Store(SafeLogMixin, SyncObj):  # SafeLogMixin first; the other order raises TypeError
        def __init__(self, self_addr, peers, conf):
            super().__init__(self_addr, peers, conf=conf)  # same arguments as SyncObj
            self.data = {}  # replicated state: created after SyncObj.__init__, as usual

The mixin keeps its state (``safelog_stats``) in an attribute created *before*
``SyncObj.__init__`` runs: pysyncobj snapshots every instance attribute created after its own
``__init__`` as replicated state, so subclasses must not replace it later. Single entries larger
than ``appendEntriesBatchSizeBytes`` travel as chunked "transmissions"; the final chunk is
reassembled here and goes through the same rules.

pysyncobj is pinned to 0.3.17 and this module reaches into its name-mangled private state; importing
it checks that version and the attributes it relies on and raises RuntimeError on any mismatch, and
``SafeLogMixin.__init__`` checks the instance and that the transport delivers to the override.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pysyncobj.pickle as _pso_pickle
from pysyncobj import SyncObj
from pysyncobj.syncobj import _RAFT_STATE
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

logger = logging.getLogger(__name__)

PINNED_PYSYNCOBJ_VERSION = "0.3.17"

# Private SyncObj attributes this module reads or writes, and the names SyncObj's own message
# handler must use for the analysis above to hold.
_INSTANCE_ATTRS = (
    "_SyncObj__raftLog", "_SyncObj__raftNextIndex", "_SyncObj__raftMatchIndex",
    "_SyncObj__raftState", "_SyncObj__raftCurrentTerm", "_SyncObj__raftCommitIndex",
    "_SyncObj__recvTransmission", "_SyncObj__transport",
)
_HANDLER_NAMES = (
    "_SyncObj__raftLog", "_SyncObj__raftNextIndex", "_SyncObj__raftMatchIndex",
    "_SyncObj__raftCommitIndex", "_SyncObj__getEntries", "_SyncObj__deleteEntriesFrom",
    "_SyncObj__recvTransmission", "_SyncObj__getCurrentLogIndex",
)

Entry = tuple[bytes, int, int]  # (command, index, term), as stored in pysyncobj's journal


def _check_pysyncobj() -> None:
    """Fail loudly if the installed pysyncobj is not the one this module was written against."""
    problems = []
    if PYSYNCOBJ_VERSION != PINNED_PYSYNCOBJ_VERSION:
        problems.append(f"version {PYSYNCOBJ_VERSION} (expected {PINNED_PYSYNCOBJ_VERSION})")
    handler = getattr(SyncObj, "_SyncObj__onMessageReceived", None)
    if handler is None:
        problems.append("SyncObj.__onMessageReceived is missing")
    else:
        missing = [n for n in _HANDLER_NAMES if n not in handler.__code__.co_names]
        if missing:
            problems.append(f"SyncObj.__onMessageReceived no longer uses {missing}")
    # The transport callback must be bound by attribute lookup (self.__onMessageReceived), which is
    # what lets a subclass attribute of the same mangled name take its place.
    if "_SyncObj__onMessageReceived" not in SyncObj.__init__.__code__.co_names:
        problems.append("SyncObj.__init__ no longer binds self.__onMessageReceived")
    for name in ("_SyncObj__getEntries", "_SyncObj__deleteEntriesFrom"):
        if not callable(getattr(SyncObj, name, None)):
            problems.append(f"SyncObj.{name} is missing")
    if not hasattr(_RAFT_STATE, "LEADER"):
        problems.append("_RAFT_STATE.LEADER is missing")
    if problems:
        raise RuntimeError("kvstore.raft_safety does not match the installed pysyncobj: "
                           + "; ".join(problems))


_check_pysyncobj()


@dataclass
class SafeLogStats:
    """Counters of what the mixin changed; handy in tests and status pages."""

    trimmed_entries: int = 0     # already-present entries dropped from append_entries messages
    kept_tails: int = 0          # messages whose matching local tail was kept instead of deleted
    clamped_commits: int = 0     # kept-tail messages whose leader commit exceeded what they verified
    conflicts: int = 0           # messages that still truncated, at a genuine term conflict
    next_index_kept: int = 0     # leader: success replies that would have moved nextIndex back
    next_index_clamped: int = 0  # leader: nextIndex raised to matchIndex + 1


class _TailHidingJournal:
    """A read-only view of a pysyncobj journal that shows only its first ``visible`` entries.

    Installed for the duration of one message so pysyncobj sees the log ending at the last entry
    the message verified. Entry mutations are refused (they can't happen on that path: the message
    has no entries and its prevLogIdx is the view's last entry); metadata calls pass through.
    """

    def __init__(self, journal: Any, visible: int) -> None:
        self._journal = journal
        self._visible = visible

    def __len__(self) -> int:
        return self._visible

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            start, stop, step = item.indices(self._visible)
            return self._journal[start:stop:step]
        if item < 0:
            item += self._visible
        if not 0 <= item < self._visible:
            raise IndexError("journal index out of range")
        return self._journal[item]

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("raft_safety: journal mutation while the tail is hidden")

    add = clear = deleteEntriesFrom = deleteEntriesTo = _refuse

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)


class SafeLogMixin:
    """Mixin for ``pysyncobj.SyncObj`` that restores Raft's log-matching rules (see module doc).

    Combine as ``class Node(SafeLogMixin, SyncObj)``; constructor arguments pass through
    unchanged.
    """

    safelog_stats: SafeLogStats
    # pysyncobj's private state, as seen from the mixin (for type checkers; set by SyncObj).
    _SyncObj__transport: Any
    _SyncObj__raftState: Any
    _SyncObj__raftCurrentTerm: int
    _SyncObj__raftLog: Any
    _SyncObj__raftCommitIndex: int
    _SyncObj__recvTransmission: Any
    _SyncObj__raftNextIndex: dict[Any, int]
    _SyncObj__raftMatchIndex: dict[Any, int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # With SyncObj first, SyncObj's handler would win and the mixin would silently do nothing
        # (SyncObj.__init__ doesn't call super().__init__, so __init__ can't catch it either).
        mro = cls.__mro__
        if SyncObj in mro and mro.index(SafeLogMixin) > mro.index(SyncObj):
            raise TypeError(f"{cls.__name__}: SafeLogMixin must come before SyncObj in the bases")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not isinstance(self, SyncObj):
            raise TypeError("SafeLogMixin must be combined with pysyncobj.SyncObj")
        # Created before SyncObj.__init__ so pysyncobj does not treat it as replicated state.
        self.safelog_stats = SafeLogStats()
        super().__init__(*args, **kwargs)
        self._safelog_check_instance()

    def _safelog_check_instance(self) -> None:
        missing = [n for n in _INSTANCE_ATTRS if not hasattr(self, n)]
        if missing:
            raise RuntimeError(f"raft_safety: SyncObj instance lacks {missing}")
        transport = self._SyncObj__transport
        handler = type(self)._SyncObj__onMessageReceived
        bound = getattr(transport, "_onMessageReceivedCallback", None)
        if getattr(bound, "__func__", None) is not handler:
            # Not delivered through the override (a transport that captured the callback some
            # other way): register it explicitly.
            transport.setOnMessageReceivedCallback(self._SyncObj__onMessageReceived)
            logger.warning("raft_safety: re-registered the message callback on %r", transport)

    # -- the hook -------------------------------------------------------------------------------

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        """Replaces pysyncobj's transport callback (SyncObj.__init__ binds it by attribute)."""
        mtype = message.get("type")
        if mtype == "append_entries":
            self._safelog_append_entries(node, message)
        elif mtype == "next_node_idx" and self._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._safelog_next_node_idx(node, message)
        else:
            super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]

    # -- follower side --------------------------------------------------------------------------

    def _safelog_append_entries(self, node: Any, message: dict[str, Any]) -> None:
        handle = super()._SyncObj__onMessageReceived  # type: ignore[misc]
        if "prevLogIdx" not in message or message["term"] < self._SyncObj__raftCurrentTerm:
            handle(node, message)  # snapshot chunk, or a stale leader that pysyncobj ignores
            return
        if message.get("transmission") is not None:
            assembled = self._safelog_assemble(message)
            if assembled is None:
                handle(node, message)  # 'start'/'process' chunks truncate nothing
                return
            message = assembled

        log = self._SyncObj__raftLog
        prev_idx, prev_term = message["prevLogIdx"], message["prevLogTerm"]
        entries: list[Entry] = list(message.get("entries") or [])
        if len(log) == 0 or prev_idx is None:
            handle(node, message)
            return
        first, last = log[0][1], log[-1][1]
        if not first <= prev_idx <= last or log[prev_idx - first][2] != prev_term:
            handle(node, message)  # consistency check fails: pysyncobj replies reset, keeps log
            return
        if any(e[1] != prev_idx + 1 + i for i, e in enumerate(entries)):
            logger.error("raft_safety: non-contiguous append_entries from %s; not rewritten", node)
            handle(node, message)
            return

        matched = 0
        for _command, idx, term in entries:
            if idx > last or log[idx - first][2] != term:
                break
            matched += 1
        last_verified = entries[-1][1] if entries else prev_idx

        rewritten = dict(message)  # never modify the caller's message
        rewritten["entries"] = entries[matched:]
        if matched:
            rewritten["prevLogIdx"], rewritten["prevLogTerm"] = entries[matched - 1][1:3]
            self.safelog_stats.trimmed_entries += matched

        if matched < len(entries) or last_verified == last:
            # Either nothing beyond the matched prefix remains locally (plain append), or the first
            # unmatched entry conflicts with a local one: pysyncobj truncates exactly there.
            if matched < len(entries) and entries[matched][1] <= last:
                self.safelog_stats.conflicts += 1
            handle(node, rewritten)
            return

        # Every entry matched and the local log goes on: keep the tail (rule 2). Against the view,
        # pysyncobj also bounds the commit index by the last verified entry (rule 3).
        self.safelog_stats.kept_tails += 1
        if message["commit_index"] > last_verified:
            self.safelog_stats.clamped_commits += 1
        commit_before = self._SyncObj__raftCommitIndex
        self._SyncObj__raftLog = _TailHidingJournal(log, last_verified - first + 1)
        try:
            handle(node, rewritten)
        finally:
            self._SyncObj__raftLog = log
        if self._SyncObj__raftCommitIndex < commit_before:
            # pysyncobj clamps commitIndex to the (visible) log end; the hidden entries are still
            # there and were committed before, so undo that.
            self._SyncObj__raftCommitIndex = commit_before
            log.setRaftCommitIndex(commit_before)

    def _safelog_assemble(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Turn the final chunk of a transmission into an ordinary one-entry message.

        Returns None for other chunks, or if the data doesn't unpickle (pysyncobj then handles
        the original message and fails the way it always did).
        """
        if message["transmission"] != "finish":
            return None
        buffered = self._SyncObj__recvTransmission
        if not isinstance(buffered, (bytes, bytearray)):
            return None
        try:
            entry = _pso_pickle.loads(bytes(buffered) + message["data"])
        except Exception:
            return None
        self._SyncObj__recvTransmission = ""
        assembled = {k: v for k, v in message.items() if k not in ("transmission", "data")}
        assembled["entries"] = [entry]
        return assembled

    # -- leader side ----------------------------------------------------------------------------

    def _safelog_next_node_idx(self, node: Any, message: dict[str, Any]) -> None:
        next_index: dict[Any, int] = self._SyncObj__raftNextIndex
        match_index: dict[Any, int] = self._SyncObj__raftMatchIndex
        next_before = next_index.get(node)
        match_before = match_index.get(node)
        super()._SyncObj__onMessageReceived(node, message)  # type: ignore[misc]
        if node not in next_index or node not in match_index:
            return
        match = match_index[node]
        if match_before is not None and match < match_before:  # pysyncobj never does this
            match = match_index[node] = match_before
        new_next = next_index[node]
        if message.get("success") and next_before is not None and new_next < next_before:
            new_next = next_before
            self.safelog_stats.next_index_kept += 1
        if new_next < match + 1:
            new_next = match + 1
            self.safelog_stats.next_index_clamped += 1
        next_index[node] = new_next
