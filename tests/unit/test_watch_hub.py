"""The watch hub against a real `MVCCStore`, with publishing driven by hand (no loop, no threads).

`Harness.apply` applies a batch and publishes its events as the Raft thread would (or keeps them
to publish later, to model events applied before a watch is created but published after it).
"""
from __future__ import annotations

import threading

import pytest

from kvstore import watch
from kvstore.commands import Batch, Compact, DeleteRange, Event, EventType, KeyValue, Operation, Put, Txn
from kvstore.mvcc import MVCCStore
from kvstore.watch import LAG_LIMIT, NODELETE, NOPUT, PROGRESS_WATCH_ID, WatchHub, WatchStream
from protos.etcd.etcdserverpb import rpc_pb2

PUT, DELETE = "PUT", "DELETE"


class FakeMachine:
    """What the hub needs of kvstore.raft.StoreMachine."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.mvcc = MVCCStore()


def header(revision: int) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(revision=revision)


class Harness:
    def __init__(self) -> None:
        self.machine = FakeMachine()
        self.hub = WatchHub(self.machine, header)
        self.unpublished: list[tuple[list[Event], int]] = []

    @property
    def revision(self) -> int:
        return self.machine.mvcc.revision

    def apply(self, *ops: Operation, publish: bool = True) -> int:
        with self.machine.lock:
            outcome = self.machine.mvcc.apply(Batch(ops))
            revision = self.machine.mvcc.revision
        if outcome.events:
            if publish:
                self.hub.publish(outcome.events, revision)
            else:
                self.unpublished.append((outcome.events, revision))
        return revision

    def put(self, key: bytes, value: bytes = b"v", publish: bool = True) -> int:
        return self.apply(Put(key, value), publish=publish)

    def publish_pending(self) -> None:
        for events, revision in self.unpublished:
            self.hub.publish(events, revision)
        self.unpublished.clear()

    def watch(self, stream: WatchStream | None = None, **request) -> WatchStream:
        stream = stream or self.hub.open_stream()
        self.hub.create(stream, rpc_pb2.WatchCreateRequest(**request))
        return stream


@pytest.fixture
def h() -> Harness:
    return Harness()


def drain(stream: WatchStream) -> list[rpc_pb2.WatchResponse]:
    out = []
    while not stream.queue.empty():
        out.append(stream.queue.get_nowait())
    return out


def seen(responses: list[rpc_pb2.WatchResponse], watch_id: int | None = None) -> list[tuple[str, bytes, int]]:
    """(type, key, mod_revision) of every event delivered (to `watch_id`, if given)."""
    return [(DELETE if ev.type == int(EventType.DELETE) else PUT, ev.kv.key, ev.kv.mod_revision)
            for r in responses if watch_id is None or r.watch_id == watch_id for ev in r.events]


def revisions(responses: list[rpc_pb2.WatchResponse]) -> list[int]:
    return [rev for _, _, rev in seen(responses)]


# ---- creating --------------------------------------------------------------------------------


def test_create_from_now(h: Harness) -> None:
    h.put(b"a")                                           # 2
    s = h.watch(key=b"a")
    [created] = drain(s)
    assert created.created and not created.canceled
    assert created.watch_id == 0 and created.header.revision == 2
    h.put(b"a", b"x")                                     # 3
    h.put(b"b")                                           # 4: not watched
    [resp] = drain(s)
    assert resp.watch_id == 0 and resp.header.revision == 3
    assert seen([resp]) == [(PUT, b"a", 3)]
    assert resp.events[0].kv.value == b"x" and resp.events[0].kv.version == 2


def test_create_from_old_revision_replays_history_then_follows(h: Harness) -> None:
    for i in range(5):
        h.put(b"a", b"%d" % i)                            # 2..6
    s = h.watch(key=b"a", start_revision=3)
    responses = drain(s)
    assert responses[0].created and responses[0].header.revision == 6
    assert revisions(responses) == [3, 4, 5, 6]
    h.put(b"a")                                           # 7
    assert revisions(drain(s)) == [7]


@pytest.mark.parametrize("start, expected", [(0, [5]), (2, [2, 3, 4, 5]), (3, [3, 4, 5]), (4, [4, 5]), (5, [5]),
                                             (6, [])])
def test_no_gap_no_duplicate_when_publishing_lags(h: Harness, start: int, expected: list[int]) -> None:
    h.put(b"a")                                           # 2, published
    h.put(b"a", publish=False)                            # 3, applied before the watch ...
    h.put(b"a", publish=False)                            # 4
    s = h.watch(key=b"a", start_revision=start)
    h.publish_pending()                                   # ... published after it
    h.put(b"a")                                           # 5
    assert revisions(drain(s)) == expected


def test_future_start_revision(h: Harness) -> None:
    s = h.watch(key=b"a", start_revision=4)
    for _ in range(4):
        h.put(b"a")                                       # 2..5
    assert revisions(drain(s)) == [4, 5]


def test_compacted_start_revision_is_created_then_canceled(h: Harness) -> None:
    for _ in range(5):
        h.put(b"a")                                       # 2..6
    h.apply(Compact(4))
    s = h.watch(key=b"a", start_revision=3, prev_kv=True)
    created, canceled = drain(s)
    assert created.created and not created.canceled and created.watch_id == 0
    assert canceled.canceled and canceled.watch_id == 0 and canceled.compact_revision == 4
    assert canceled.header.revision == 6
    assert h.hub.watcher_count == 0
    h.put(b"a")
    assert drain(s) == []


def test_start_at_the_compact_revision_is_allowed(h: Harness) -> None:
    # etcd cancels only watches starting below the compact revision; the versions written at it
    # survive compaction (their previous values do not).
    for _ in range(5):
        h.put(b"a")                                       # 2..6
    h.apply(Compact(4))
    s = h.watch(key=b"a", start_revision=4, prev_kv=True)
    responses = drain(s)
    assert not any(r.canceled for r in responses)
    assert revisions(responses) == [4, 5, 6]
    events = [ev for r in responses for ev in r.events]
    assert not events[0].HasField("prev_kv")
    assert events[1].prev_kv.mod_revision == 4


# ---- what a watcher receives -----------------------------------------------------------------


@pytest.mark.parametrize("filters, expected", [
    ([], [(PUT, b"a", 2), (DELETE, b"a", 3)]),
    ([NOPUT], [(DELETE, b"a", 3)]),
    ([NODELETE], [(PUT, b"a", 2)]),
    ([NOPUT, NODELETE], []),
])
def test_filters(h: Harness, filters: list[int], expected: list) -> None:
    s = h.watch(key=b"a", filters=filters)
    drain(s)
    h.put(b"a")
    h.apply(DeleteRange(b"a"))
    assert seen(drain(s)) == expected


def test_filtered_events_still_advance_the_watcher(h: Harness) -> None:
    s = h.watch(key=b"a", filters=[NOPUT])
    h.put(b"a")                                           # 2, filtered out
    h.hub.progress(s)
    assert drain(s)[-1].header.revision == 2


def test_prev_kv(h: Harness) -> None:
    with_prev = h.watch(key=b"a", prev_kv=True)
    without = h.watch(key=b"a")
    h.put(b"a", b"1")                                     # 2
    h.put(b"a", b"2")                                     # 3
    h.apply(DeleteRange(b"a"))                            # 4
    events = [ev for r in drain(with_prev) for ev in r.events]
    assert [ev.HasField("prev_kv") for ev in events] == [False, True, True]
    assert events[1].prev_kv.value == b"1" and events[1].prev_kv.mod_revision == 2
    assert events[2].prev_kv.value == b"2" and events[2].kv.mod_revision == 4
    assert events[2].kv.create_revision == 0 and events[2].kv.version == 0
    assert not any(ev.HasField("prev_kv") for r in drain(without) for ev in r.events)


KEYS = [b"\x00", b"a", b"b", b"c", b"foo/1", b"foo/2"]


@pytest.mark.parametrize("key, range_end, expected", [
    (b"b", b"", [b"b"]),
    (b"foo/", b"foo0", [b"foo/1", b"foo/2"]),
    (b"a", b"c", [b"a", b"b"]),
    (b"b", b"\x00", [b"b", b"c", b"foo/1", b"foo/2"]),    # "\0": every key from b on
    (b"", b"\x00", KEYS),                                 # everything
    (b"", b"", [b"\x00"]),                                # etcd: an empty key means "\0"
])
def test_key_ranges(h: Harness, key: bytes, range_end: bytes, expected: list[bytes]) -> None:
    s = h.watch(key=key, range_end=range_end)
    for k in KEYS:
        h.put(k)
    assert [k for _, k, _ in seen(drain(s))] == expected


def test_txn_events_arrive_together_in_sub_order(h: Harness) -> None:
    h.put(b"k/old")
    s = h.watch(key=b"k/", range_end=b"k0")
    drain(s)
    h.apply(Txn(success=(Put(b"k/b"), Put(b"k/a"), DeleteRange(b"k/old"))))
    [resp] = drain(s)
    assert seen([resp]) == [(PUT, b"k/b", 3), (PUT, b"k/a", 3), (DELETE, b"k/old", 3)]


def test_watchers_on_one_stream(h: Harness) -> None:
    s = h.watch(key=b"a")
    h.watch(s, key=b"b")
    h.watch(s, key=b"a", range_end=b"c")
    assert [r.watch_id for r in drain(s)] == [0, 1, 2]
    h.apply(Txn(success=(Put(b"a"), Put(b"b"))))
    responses = drain(s)
    assert sorted((r.watch_id, len(r.events)) for r in responses) == [(0, 1), (1, 1), (2, 2)]


# ---- cancel, close, errors -------------------------------------------------------------------


def test_cancel(h: Harness) -> None:
    s = h.watch(key=b"a")
    h.put(b"a")
    drain(s)
    h.hub.cancel(s, 0)
    [resp] = drain(s)
    assert resp.canceled and resp.watch_id == 0 and resp.header.revision == 2
    h.put(b"a")
    h.hub.cancel(s, 0)                                    # unknown now: no answer
    h.hub.cancel(s, 99)
    assert drain(s) == [] and h.hub.watcher_count == 0


def test_close_stream(h: Harness) -> None:
    s = h.watch(key=b"a")
    drain(s)
    h.hub.close_stream(s)
    h.put(b"a")
    h.hub.progress(s)
    assert drain(s) == [] and h.hub.watcher_count == 0


def test_duplicate_watch_id(h: Harness) -> None:
    s = h.watch(watch_id=7, key=b"a")
    assert drain(s)[0].watch_id == 7
    h.watch(s, watch_id=7, key=b"b")
    [refused] = drain(s)
    assert refused.created and refused.canceled and refused.watch_id == -1
    assert refused.cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
    h.put(b"a")
    assert seen(drain(s), 7) == [(PUT, b"a", 2)]          # the first watcher is untouched
    other = h.watch(watch_id=7, key=b"a")                 # IDs are per stream
    assert drain(other)[0].watch_id == 7


def test_automatic_ids_skip_used_ones(h: Harness) -> None:
    s = h.watch(key=b"a")                                 # 0
    h.watch(s, watch_id=1, key=b"a")
    h.watch(s, key=b"a")                                  # 2
    assert [r.watch_id for r in drain(s)] == [0, 1, 2]


@pytest.mark.parametrize("key, range_end", [(b"b", b"a"), (b"b", b"b")])
def test_empty_range_is_refused(h: Harness, key: bytes, range_end: bytes) -> None:
    s = h.watch(key=key, range_end=range_end)
    [refused] = drain(s)
    assert refused.created and refused.canceled and refused.watch_id == -1
    assert refused.cancel_reason == "mvcc: watcher range is empty"
    assert h.hub.watcher_count == 0


# ---- progress --------------------------------------------------------------------------------


def test_progress_request(h: Harness) -> None:
    s = h.hub.open_stream()
    h.put(b"a")                                           # 2
    h.hub.progress(s)                                     # no watchers: the store's revision
    [resp] = drain(s)
    assert resp.watch_id == PROGRESS_WATCH_ID == -1 and resp.header.revision == 2 and not resp.events
    h.watch(s, key=b"zzz")
    h.put(b"a")                                           # 3
    h.put(b"a", publish=False)                            # 4: applied, not yet published
    drain(s)
    h.hub.progress(s)
    assert drain(s)[0].header.revision == 3               # never ahead of what was delivered
    h.publish_pending()
    h.hub.progress(s)
    assert drain(s)[0].header.revision == 4


def test_progress_notify(h: Harness) -> None:
    s = h.watch(key=b"a", progress_notify=True)           # 0
    h.watch(s, key=b"b")                                  # 1: did not ask
    h.watch(s, key=b"c", progress_notify=True, start_revision=50)  # 2: starts in the future
    h.put(b"z")                                           # 2
    drain(s)
    h.hub.notify_progress()
    responses = drain(s)
    assert [(r.watch_id, r.header.revision, len(r.events)) for r in responses] == [(0, 2, 0), (2, 2, 0)]


# ---- slow streams and snapshots --------------------------------------------------------------


def _flood(stream: WatchStream, n: int) -> None:
    for _ in range(n):
        stream.send(rpc_pb2.WatchResponse(watch_id=12345))


def test_lagging_stream_catches_up_from_the_log(h: Harness) -> None:
    s = h.watch(key=b"k/", range_end=b"k0", prev_kv=True)
    drain(s)
    _flood(s, LAG_LIMIT + 1)
    h.put(b"k/1")                                         # 2: not queued, the stream is full
    h.apply(Txn(success=(Put(b"k/2"), Put(b"k/3"))))      # 3
    h.put(b"other")                                       # 4
    assert s.queue.qsize() == LAG_LIMIT + 1
    assert s.watchers[0].lagging
    drain(s)
    h.put(b"k/4")                                         # 5: still lagging until resumed
    h.hub.resume_lagging(s)
    h.put(b"k/5")                                         # 6: live again
    responses = drain(s)
    assert seen(responses) == [(PUT, b"k/1", 2), (PUT, b"k/2", 3), (PUT, b"k/3", 3), (PUT, b"k/4", 5),
                               (PUT, b"k/5", 6)]
    assert not s.watchers[0].lagging


def test_catch_up_in_chunks_never_splits_a_revision(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "CATCH_UP_CHUNK", 1)
    monkeypatch.setattr(watch, "LAG_LIMIT", 2)
    s = h.watch(key=b"k/", range_end=b"k0")
    drain(s)
    _flood(s, 3)
    h.put(b"k/a")                                                           # 2
    h.apply(Txn(success=(Put(b"k/b"), Put(b"k/c"), Put(b"k/d"))))          # 3
    h.put(b"k/e")                                                           # 4
    h.put(b"k/f")                                                           # 5
    responses, rounds = [], 0
    while s.watchers[0].lagging:                          # the sender drains, then asks to resume
        rounds += 1
        responses += [r for r in drain(s) if r.watch_id != 12345]
        h.hub.resume_lagging(s)
    responses += drain(s)
    assert rounds == 2                                    # the first catch-up filled the queue again
    assert [revisions([r]) for r in responses] == [[2], [3, 3, 3], [4], [5]]
    h.put(b"k/g")
    assert revisions(drain(s)) == [6]


def test_lagging_watcher_whose_history_was_compacted_is_canceled(h: Harness) -> None:
    s = h.watch(key=b"a")
    _flood(s, LAG_LIMIT + 1)
    for _ in range(4):
        h.put(b"a")                                       # 2..5, missed
    h.apply(Compact(4))
    drain(s)
    h.hub.resume_lagging(s)
    [resp] = drain(s)
    assert resp.canceled and resp.compact_revision == 4 and resp.watch_id == 0
    assert h.hub.watcher_count == 0


def _replayed(ops: list[Operation], compact: int = 0) -> MVCCStore:
    store = MVCCStore()
    for op in ops:
        store.apply(Batch((op,)))
    if compact:
        store.apply(Batch((Compact(compact),)))
    return store


def test_restored_resyncs_every_watcher(h: Harness) -> None:
    log: list[Operation] = [Put(b"a", b"%d" % i) for i in range(6)]   # revisions 2..7
    for op in log[:2]:
        h.apply(op)                                       # this replica saw 2..3
    s = h.watch(key=b"a")
    old = h.watch(s, key=b"a", start_revision=2)
    drain(s)
    h.machine.mvcc = _replayed(log)                       # a snapshot up to 7 is installed
    h.hub.restored()
    responses = drain(s)
    assert seen(responses, 0) == [(PUT, b"a", r) for r in (4, 5, 6, 7)]
    assert seen(responses, 1) == [(PUT, b"a", r) for r in (4, 5, 6, 7)]
    assert old is s
    h.put(b"a")                                           # 8
    assert sorted(r.watch_id for r in drain(s)) == [0, 1]


def test_restored_cancels_watchers_behind_the_snapshots_compaction(h: Harness) -> None:
    log: list[Operation] = [Put(b"a", b"%d" % i) for i in range(6)]   # revisions 2..7
    h.apply(log[0])                                       # 2
    s = h.watch(key=b"a")                                 # next revision 3
    drain(s)
    h.machine.mvcc = _replayed(log, compact=5)
    h.hub.restored()
    [resp] = drain(s)
    assert resp.canceled and resp.compact_revision == 5


# ---- helpers of the module -------------------------------------------------------------------


def _events(*revs: int) -> list[Event]:
    return [Event(EventType.PUT, KeyValue(b"k", r, r, 1, b""), sub=i) for i, r in enumerate(revs)]


@pytest.mark.parametrize("revs, limit, taken", [
    ((1, 2, 2, 2, 3), 10, 5),
    ((1, 2, 2, 2, 3), 1, 1),
    ((1, 2, 2, 2, 3), 2, 4),                              # extended to the end of revision 2
    ((1, 2, 2, 2, 3), 4, 4),
    ((1, 2, 2, 2, 3), 5, 5),
    ((), 3, 0),
])
def test_events_from_takes_whole_revisions(revs: tuple[int, ...], limit: int, taken: int) -> None:
    store = MVCCStore()
    events = _events(*revs)
    store.events, store.event_revisions = list(events), list(revs)
    assert store.events_from(1, limit) == events[:taken]
