"""The store's state machine: etcd's MVCC semantics as a pure, deterministic object.

`MVCCStore.apply(batch)` is the only way state changes. It has no clock, no sockets, no threads
and no randomness, so every replica that applies the same log reaches the same state; lease IDs
and expiry decisions are made outside (by the leader) and arrive here as commands.

Model (etcd's):
- The store revision starts at 1 and grows by one per Put, per DeleteRange that deleted
  something, and per Txn whose executed branch wrote something. Every write inside one Txn (or one
  lease revoke) shares that revision and is ordered by a sub-revision.
- Each key keeps its versions: `create_revision`, `mod_revision`, `version` (1 on creation,
  +1 per put, reset by a delete, which leaves a tombstone). Reads at an older revision see the
  versions current then, until compaction removes what is superseded at or before the compact
  revision.
- An event log (PUT/DELETE with the previous value) covers every revision after the compact
  revision, plus the PUT events at the compact revision itself (etcd keeps those versions, so a
  watch may start there; their previous values are gone); watches replay from it.

Invariants: `keys` is sorted and holds every key with any retained version; each key's history is
ordered by (revision, sub); `events` is ordered by (revision, sub) and holds nothing below
`compact_revision`.
"""
from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass, field, replace
from typing import Iterator

from kvstore.commands import (
    Applied, ApplyOutcome, Batch, Compact, Compare, CompareResult, CompareTarget, DeleteRange,
    DeleteResult, Done, Event, EventType, KeyValue, KVError, LeaseGrant, LeaseRevoke, Operation,
    PublishMember, Put, PutResult, Range, RangeResult, ReadBarrier, SortOrder, SortTarget, Txn,
    TxnResult, COMMAND_VERSION,
)
from kvstore import errors
from kvstore.txncheck import validate_txn

MAX_LEASE_TTL = 9_000_000_000


@dataclass(slots=True)
class Version:
    """One retained version of a key: `kv` is None for a tombstone."""

    revision: int
    sub: int
    kv: KeyValue | None


@dataclass(slots=True)
class LeaseRecord:
    id: int
    ttl: int
    keys: set[bytes] = field(default_factory=set)


SNAPSHOT_FORMAT = 1


def _kv_tuple(kv: KeyValue | None) -> tuple | None:
    if kv is None:
        return None
    return (kv.create_revision, kv.mod_revision, kv.version, kv.value, kv.lease)


def _kv_from(key: bytes, t: tuple | None) -> KeyValue | None:
    return None if t is None else KeyValue(key, *t)


class Compacted(Exception):
    """The requested revision is at or below the compact revision."""


def range_end_matches(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether `key` is in etcd's range [start, end) ('' = just start, '\\0' = everything >= start)."""
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


class MVCCStore:
    """etcd-compatible multi-version key-value state. See the module docstring."""

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self.keys: list[bytes] = []
        self.history: dict[bytes, list[Version]] = {}
        self.leases: dict[int, LeaseRecord] = {}
        self.members: dict[int, PublishMember] = {}
        self.events: list[Event] = []
        self.event_revisions: list[int] = []
        self.size_bytes = 0

    # ---- snapshots ---------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        """A compact form for Raft snapshots: plain tuples pickle several times faster than
        slotted dataclasses, and the snapshot is taken on the Raft thread, which stalls meanwhile."""
        return {
            "format": SNAPSHOT_FORMAT,
            "revision": self.revision,
            "compact_revision": self.compact_revision,
            "size_bytes": self.size_bytes,
            "history": [(key, [(v.revision, v.sub, _kv_tuple(v.kv)) for v in versions])
                        for key, versions in self.history.items()],
            "leases": [(r.id, r.ttl, sorted(r.keys)) for r in self.leases.values()],
            "members": list(self.members.values()),
            "events": [(int(e.type), e.sub, e.kv.key, _kv_tuple(e.kv), _kv_tuple(e.prev_kv)) for e in self.events],
        }

    def __setstate__(self, state: dict) -> None:
        if state.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported MVCC snapshot format {state.get('format')!r}")
        self.revision = state["revision"]
        self.compact_revision = state["compact_revision"]
        self.size_bytes = state["size_bytes"]
        self.history = {key: [Version(r, sub, _kv_from(key, t)) for r, sub, t in versions]
                        for key, versions in state["history"]}
        self.keys = sorted(self.history)
        self.leases = {i: LeaseRecord(i, ttl, set(keys)) for i, ttl, keys in state["leases"]}
        self.members = {m.member_id: m for m in state["members"]}
        self.events = [Event(EventType(t), _kv_from(key, kv), _kv_from(key, prev), sub)  # type: ignore[arg-type]
                       for t, sub, key, kv, prev in state["events"]]
        self.event_revisions = [e.kv.mod_revision for e in self.events]

    # ---- applying --------------------------------------------------------------------------

    def apply(self, batch: Batch) -> ApplyOutcome:
        """Apply every operation of `batch` in order; one result per operation."""
        if batch.version != COMMAND_VERSION:
            err = KVError("FAILED_PRECONDITION", f"etcdserver: unsupported command version {batch.version}")
            return ApplyOutcome(applied=[Applied(err, self.revision) for _ in batch.ops])
        outcome = ApplyOutcome()
        for op in batch.ops:
            events: list[Event] = []
            result = self._apply_op(op, events)
            if events:
                self._record_events(events)
                outcome.events.extend(events)
            outcome.applied.append(Applied(result, self.revision))
        return outcome

    def _apply_op(self, op: Operation, events: list[Event]):
        if isinstance(op, Put):
            return self._write_txn(lambda w: self._put(op, w), events)
        if isinstance(op, DeleteRange):
            return self._write_txn(lambda w: self._delete(op, w), events)
        if isinstance(op, Txn):
            return self._write_txn(lambda w: self._txn(op, w), events)
        if isinstance(op, Range):
            return self.range(op)
        if isinstance(op, Compact):
            return self._compact(op.revision)
        if isinstance(op, LeaseGrant):
            return self._lease_grant(op)
        if isinstance(op, LeaseRevoke):
            return self._lease_revoke(op.id, events)
        if isinstance(op, ReadBarrier):
            return Done()
        if isinstance(op, PublishMember):
            self.members[op.member_id] = op
            return Done()
        return KVError("INVALID_ARGUMENT", f"etcdserver: unknown operation {type(op).__name__}")

    def _write_txn(self, body, events: list[Event]):
        """Run `body` as one write transaction: its writes share revision+1, or none is used."""
        writer = _Writer(self, self.revision + 1)
        result = body(writer)
        if isinstance(result, KVError):
            return result
        if writer.events:
            writer.commit()
            self.revision += 1
            events.extend(writer.events)
        return result

    def _put(self, op: Put, w: "_Writer"):
        # A plain Put checks its lease before the key (etcd's order); inside a txn it is the reverse.
        if op.lease and op.lease not in self.leases:
            return errors.LEASE_NOT_FOUND
        return self._put_in_txn(op, w)

    def _delete(self, op: DeleteRange, w: "_Writer"):
        deleted = [kv for kv in w.live_in_range(op.key, op.range_end)]
        for kv in deleted:
            w.delete(kv.key)
        return DeleteResult(deleted=len(deleted), prev_kvs=tuple(deleted) if op.prev_kv else ())

    def _txn(self, op: Txn, w: "_Writer"):
        problem = validate_txn(op)
        if problem is not None:
            return problem
        return self._txn_branch(op, w)

    def _txn_branch(self, op: Txn, w: "_Writer"):
        """Run the branch that `op`'s compares choose. Compares, nested ones included, read the state
        before the outermost txn (etcd decides the whole path before executing any operation)."""
        succeeded = all(self._compare(c) for c in op.compare)
        responses = []
        for sub_op in (op.success if succeeded else op.failure):
            if isinstance(sub_op, Put):
                res = self._put_in_txn(sub_op, w)
            elif isinstance(sub_op, DeleteRange):
                res = self._delete(sub_op, w)
            elif isinstance(sub_op, Range):
                res = self._range_view(sub_op, w)
            else:
                res = self._txn_branch(sub_op, w)
            if isinstance(res, KVError):
                return res
            responses.append(res)
        return TxnResult(succeeded=succeeded, responses=tuple(responses))

    def _put_in_txn(self, op: Put, w: "_Writer"):
        current = w.get(op.key)
        if (op.ignore_value or op.ignore_lease) and current is None:
            return errors.KEY_NOT_FOUND
        value = current.value if (op.ignore_value and current) else op.value
        lease = current.lease if (op.ignore_lease and current) else op.lease
        if lease and lease not in self.leases:
            return errors.LEASE_NOT_FOUND
        w.put(op.key, value, lease)
        return PutResult(prev_kv=current if op.prev_kv else None)

    def _compare(self, c: Compare) -> bool:
        """One compare against the committed state (every key in range must satisfy it)."""
        if c.range_end:
            kvs = list(self.live_in_range(c.key, c.range_end))
        else:
            kv = self._current(c.key)
            kvs = [kv] if kv is not None else []
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            return _compare_value(c, KeyValue(c.key, 0, 0, 0, b"", 0))
        return all(_compare_value(c, kv) for kv in kvs)

    def _compact(self, revision: int):
        if revision <= self.compact_revision:
            return errors.COMPACTED
        if revision > self.revision:
            return errors.FUTURE_REV
        self.compact_revision = revision
        gone = []
        for key, versions in self.history.items():
            # Most keys hold one live version: nothing to drop (this runs on the Raft thread).
            if versions[0].revision > revision or (len(versions) == 1 and versions[0].kv is not None):
                continue
            # Keep the newest version at or below `revision` (unless a tombstone) and all after.
            cut = bisect.bisect_right(versions, revision, key=_version_revision)
            keep_from = cut - 1 if cut > 0 and versions[cut - 1].kv is not None else cut
            if keep_from > 0:
                self.size_bytes -= sum(_version_size(key, v) for v in versions[:keep_from])
                del versions[:keep_from]
            if not versions:
                gone.append(key)
        if gone:
            for key in gone:
                del self.history[key]
            removed = set(gone)
            self.keys = [k for k in self.keys if k not in removed]
        self._compact_events(revision)
        return Done()

    def _compact_events(self, revision: int) -> None:
        """Drop events below `revision`; at `revision` keep only PUTs, without prev_kv (etcd keeps
        the versions written at the compact revision, but not tombstones or older versions)."""
        start = bisect.bisect_left(self.event_revisions, revision)
        end = bisect.bisect_right(self.event_revisions, revision)
        kept = [replace(ev, prev_kv=None) for ev in self.events[start:end] if ev.type == EventType.PUT]
        self.events[:end] = kept
        self.event_revisions[:end] = [revision] * len(kept)

    def _lease_grant(self, op: LeaseGrant):
        if op.ttl > MAX_LEASE_TTL:
            return errors.LEASE_TTL_TOO_LARGE
        if op.id in self.leases:
            return errors.LEASE_EXIST
        self.leases[op.id] = LeaseRecord(op.id, op.ttl)
        return Done()

    def _lease_revoke(self, lease_id: int, events: list[Event]):
        record = self.leases.get(lease_id)
        if record is None:
            return errors.LEASE_NOT_FOUND

        def body(w: _Writer):
            for key in sorted(record.keys):
                w.delete(key)
            return Done()

        result = self._write_txn(body, events)
        self.leases.pop(lease_id, None)
        return result

    def _record_events(self, events: list[Event]) -> None:
        for ev in events:
            self.events.append(ev)
            self.event_revisions.append(ev.kv.mod_revision)

    # ---- reading ---------------------------------------------------------------------------

    def _current(self, key: bytes) -> KeyValue | None:
        versions = self.history.get(key)
        return versions[-1].kv if versions else None

    def get(self, key: bytes) -> KeyValue | None:
        """The current version of `key`, or None."""
        return self._current(key)

    def _keys_in_range(self, start: bytes, end: bytes) -> Iterator[bytes]:
        if not end:
            if start in self.history:
                yield start
            return
        lo = bisect.bisect_left(self.keys, start)
        hi = len(self.keys) if end == b"\x00" else bisect.bisect_left(self.keys, end)
        yield from self.keys[lo:hi]

    def _at(self, key: bytes, revision: int) -> KeyValue | None:
        versions = self.history[key]
        if versions[-1].revision <= revision:
            return versions[-1].kv
        for v in reversed(versions):
            if v.revision <= revision:
                return v.kv
        return None

    def live_in_range(self, start: bytes, end: bytes, revision: int = 0) -> Iterator[KeyValue]:
        """Every key-value alive in [start, end) at `revision` (0 = now), in key order."""
        rev = revision or self.revision
        for key in self._keys_in_range(start, end):
            kv = self._at(key, rev) if revision else self._current(key)
            if kv is not None:
                yield kv

    def check_revision(self, revision: int) -> KVError | None:
        if revision > self.revision:
            return errors.FUTURE_REV
        if 0 < revision < self.compact_revision:
            return errors.COMPACTED
        return None

    def range(self, op: Range) -> RangeResult | KVError:
        """etcd's Range at `op.revision` (0 = current): filters, sort, limit, count."""
        problem = self.check_revision(op.revision)
        if problem is not None:
            return problem
        kvs = list(self.live_in_range(op.key, op.range_end, op.revision if op.revision > 0 else 0))
        return shape_range(op, kvs)

    def _range_view(self, op: Range, w: "_Writer") -> RangeResult | KVError:
        if op.revision:
            return self.range(op)
        return shape_range(op, list(w.live_in_range(op.key, op.range_end)))

    def events_from(self, revision: int, limit: int | None = None) -> list[Event]:
        """Events with mod_revision >= `revision`; raises Compacted if that history is gone
        (`revision` below the compact revision; see the module docstring for the revision itself).
        With `limit`, about that many events: whole revisions only."""
        if revision < self.compact_revision:
            raise Compacted(revision)
        start = bisect.bisect_left(self.event_revisions, revision)
        if limit is None or len(self.events) - start <= limit:
            return self.events[start:]
        # Never split a revision across chunks: extend to the end of the last one taken.
        end = bisect.bisect_right(self.event_revisions, self.event_revisions[start + limit - 1])
        return self.events[start:end]

    def lease_keys(self, lease_id: int) -> list[bytes] | None:
        record = self.leases.get(lease_id)
        return None if record is None else sorted(record.keys)

    def hash_kv(self, revision: int = 0) -> int:
        """CRC-32 of every retained version at or below `revision` (0 = now), key-ordered."""
        rev = revision or self.revision
        crc = 0
        for key in self.keys:
            for v in self.history[key]:
                if v.revision > rev:
                    break
                kv = v.kv
                body = b"T" if kv is None else b"%d/%d/%d/%d/" % (kv.create_revision, kv.version, kv.lease, len(kv.value)) + kv.value
                crc = zlib.crc32(b"%s|%d.%d|" % (key, v.revision, v.sub) + body, crc)
        return crc


class _Writer:
    """The write view of one transaction: reads see the transaction's own earlier writes."""

    def __init__(self, store: MVCCStore, revision: int) -> None:
        self.store = store
        self.revision = revision
        self.pending: dict[bytes, KeyValue | None] = {}
        self.events: list[Event] = []

    def get(self, key: bytes) -> KeyValue | None:
        if key in self.pending:
            return self.pending[key]
        return self.store._current(key)

    def live_in_range(self, start: bytes, end: bytes) -> Iterator[KeyValue]:
        keys = set(self.store._keys_in_range(start, end))
        keys.update(k for k in self.pending if range_end_matches(k, start, end))
        for key in sorted(keys):
            kv = self.get(key)
            if kv is not None:
                yield kv

    def put(self, key: bytes, value: bytes, lease: int) -> None:
        prev = self.get(key)
        if prev is None:
            kv = KeyValue(key, self.revision, self.revision, 1, value, lease)
        else:
            kv = KeyValue(key, prev.create_revision, self.revision, prev.version + 1, value, lease)
        self.pending[key] = kv
        self.events.append(Event(EventType.PUT, kv, prev, sub=len(self.events)))

    def delete(self, key: bytes) -> None:
        prev = self.get(key)
        if prev is None:
            return
        self.pending[key] = None
        tomb = KeyValue(key, 0, self.revision, 0, b"", 0)
        self.events.append(Event(EventType.DELETE, tomb, prev, sub=len(self.events)))

    def commit(self) -> None:
        store = self.store
        for ev in self.events:
            key = ev.kv.key
            versions = store.history.get(key)
            if versions is None:
                versions = store.history[key] = []
                bisect.insort(store.keys, key)
            new = Version(self.revision, ev.sub, ev.kv if ev.type == EventType.PUT else None)
            if versions and versions[-1].revision == self.revision:
                store.size_bytes -= _version_size(key, versions[-1])
                versions[-1] = new  # a later op in the same txn on the same key wins
            else:
                versions.append(new)
            store.size_bytes += _version_size(key, new)
            _move_lease(store, key, ev.prev_kv, new.kv)


def _move_lease(store: MVCCStore, key: bytes, prev: KeyValue | None, new: KeyValue | None) -> None:
    old_lease = prev.lease if prev else 0
    new_lease = new.lease if new else 0
    if old_lease and old_lease != new_lease and old_lease in store.leases:
        store.leases[old_lease].keys.discard(key)
    if new_lease and new_lease in store.leases:
        store.leases[new_lease].keys.add(key)


def _version_revision(v: Version) -> int:
    return v.revision


def _version_size(key: bytes, v: Version) -> int:
    return len(key) + 32 + (len(v.kv.value) if v.kv else 0)


def _compare_value(c: Compare, kv: KeyValue) -> bool:
    target = c.target
    left: int | bytes
    right: int | bytes
    if target == CompareTarget.VALUE:
        left = kv.value
        right = c.operand if isinstance(c.operand, bytes) else b""
    else:
        left = {
            CompareTarget.VERSION: kv.version,
            CompareTarget.CREATE: kv.create_revision,
            CompareTarget.MOD: kv.mod_revision,
            CompareTarget.LEASE: kv.lease,
        }[target]
        right = c.operand if isinstance(c.operand, int) else 0
    if c.result == CompareResult.EQUAL:
        return left == right
    if c.result == CompareResult.NOT_EQUAL:
        return left != right
    if c.result == CompareResult.GREATER:
        return left > right  # type: ignore[operator]
    return left < right  # type: ignore[operator]


_SORT_KEYS = {
    SortTarget.KEY: lambda kv: kv.key,
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


def shape_range(op: Range, kvs: list[KeyValue]) -> RangeResult:
    """Apply etcd's revision filters, sort, limit, keys_only and count_only to `kvs` (key order)."""
    count = len(kvs)
    if op.count_only:
        return RangeResult(kvs=(), more=False, count=count)  # etcd counts without fetching: never `more`
    if op.min_mod_revision or op.max_mod_revision or op.min_create_revision or op.max_create_revision:
        kvs = [kv for kv in kvs if _passes_filters(op, kv)]
    order = op.sort_order
    if order == SortOrder.NONE and op.sort_target != SortTarget.KEY:
        order = SortOrder.ASCEND  # etcd sorts ascending by default for non-key targets
    if order == SortOrder.DESCEND or (order == SortOrder.ASCEND and op.sort_target != SortTarget.KEY):
        kvs.sort(key=_SORT_KEYS[op.sort_target], reverse=order == SortOrder.DESCEND)
    more = False
    if op.limit > 0 and len(kvs) > op.limit:
        kvs = kvs[: op.limit]
        more = True
    if op.keys_only:
        kvs = [replace(kv, value=b"") for kv in kvs]
    return RangeResult(kvs=tuple(kvs), more=more, count=count)


def _passes_filters(op: Range, kv: KeyValue) -> bool:
    if op.min_mod_revision and kv.mod_revision < op.min_mod_revision:
        return False
    if op.max_mod_revision and kv.mod_revision > op.max_mod_revision:
        return False
    if op.min_create_revision and kv.create_revision < op.min_create_revision:
        return False
    if op.max_create_revision and kv.create_revision > op.max_create_revision:
        return False
    return True
