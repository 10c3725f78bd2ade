"""Watches, served by the replica they are opened on (etcd's watchable store).

Every applied batch's events are published here (from the Raft tick thread, through
`loop.call_soon_threadsafe`). A watcher receives each matching event exactly once, in revision
order, with no gap:

- A new watcher reads the history it asked for (from `start_revision`) and the store's current
  revision under the store lock, then registers. Events applied before that read but published
  after it are skipped (their revision is below the watcher's `next_rev`); events applied after it
  have higher revisions and reach the watcher through `publish`.
- A slow stream (too many undelivered responses) stops receiving live events; its watchers are
  marked lagging and later caught up from the event log the same way, or canceled with
  `compact_revision` if the history they need was compacted meanwhile (etcd does the same). As in
  etcd, a watcher may start at the compact revision itself, not below it.
- A snapshot installed from the leader replaces the store: every watcher is caught up from the
  event log (or canceled as compacted).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

from kvstore.commands import Event, EventType
from kvstore.convert import event_to_pb
from kvstore.mvcc import Compacted, range_end_matches
from protos.etcd.etcdserverpb import rpc_pb2

NOPUT, NODELETE = 0, 1
# Undelivered responses after which a stream's watchers stop getting live events.
LAG_LIMIT = 2000
CATCH_UP_CHUNK = 1000
PROGRESS_WATCH_ID = -1
# etcd's watch ID in the answer to a create request it refuses.
INVALID_WATCH_ID = -1

HeaderFn = Callable[[int], rpc_pb2.ResponseHeader]


@dataclass(eq=False)
class Watcher:
    watch_id: int
    stream: "WatchStream"
    key: bytes
    range_end: bytes
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify: bool
    next_rev: int
    lagging: bool = False

    def matches(self, ev: Event) -> bool:
        if ev.type == EventType.PUT and self.no_put:
            return False
        if ev.type == EventType.DELETE and self.no_delete:
            return False
        return range_end_matches(ev.kv.key, self.key, self.range_end)


@dataclass(eq=False)
class WatchStream:
    """One client's Watch RPC: its watchers and its queue of responses to send."""

    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    watchers: dict[int, Watcher] = field(default_factory=dict)
    next_id: int = 0
    closed: bool = False

    def send(self, response: rpc_pb2.WatchResponse) -> None:
        if not self.closed:
            self.queue.put_nowait(response)


class WatchHub:
    def __init__(self, machine, header: HeaderFn) -> None:
        """`machine` has `.lock` and `.mvcc` (kvstore.raft.StoreMachine)."""
        self.machine = machine
        self.header = header
        self.streams: set[WatchStream] = set()

    # ---- streams and watchers ----------------------------------------------------------------

    def open_stream(self) -> WatchStream:
        stream = WatchStream()
        self.streams.add(stream)
        return stream

    def close_stream(self, stream: WatchStream) -> None:
        stream.closed = True
        stream.watchers.clear()
        self.streams.discard(stream)

    def create(self, stream: WatchStream, req: rpc_pb2.WatchCreateRequest) -> None:
        key = req.key or b"\x00"  # etcd: an empty key is the smallest key
        problem = _create_problem(stream, key, req)
        if problem is not None:
            stream.send(rpc_pb2.WatchResponse(header=self.header(self._revision()), watch_id=INVALID_WATCH_ID,
                                              created=True, canceled=True, cancel_reason=problem))
            return
        watch_id = req.watch_id if req.watch_id else self._next_id(stream)
        filters = set(req.filters)
        watcher = Watcher(watch_id, stream, key, req.range_end, req.prev_kv, NOPUT in filters,
                          NODELETE in filters, req.progress_notify, next_rev=req.start_revision)
        with self.machine.lock:
            current = self.machine.mvcc.revision
            compact = self.machine.mvcc.compact_revision
            if watcher.next_rev <= 0:
                watcher.next_rev = current + 1
        stream.send(rpc_pb2.WatchResponse(header=self.header(current), watch_id=watch_id, created=True))
        if 0 < req.start_revision < compact:
            stream.send(rpc_pb2.WatchResponse(header=self.header(current), watch_id=watch_id,
                                              canceled=True, compact_revision=compact))
            return
        stream.watchers[watch_id] = watcher
        if watcher.next_rev <= current:
            self.catch_up(watcher)

    def _next_id(self, stream: WatchStream) -> int:
        while stream.next_id in stream.watchers:
            stream.next_id += 1
        watch_id = stream.next_id
        stream.next_id += 1
        return watch_id

    def cancel(self, stream: WatchStream, watch_id: int) -> None:
        watcher = stream.watchers.pop(watch_id, None)
        if watcher is not None:
            stream.send(rpc_pb2.WatchResponse(header=self.header(self._revision()), watch_id=watch_id,
                                              canceled=True))

    def progress(self, stream: WatchStream) -> None:
        """Answer a progress request: every later event on this stream has a higher revision."""
        revision = self._revision()
        synced = [w.next_rev - 1 for w in stream.watchers.values()]
        stream.send(rpc_pb2.WatchResponse(header=self.header(min(synced + [revision])),
                                          watch_id=PROGRESS_WATCH_ID))

    def notify_progress(self) -> None:
        """Periodic progress notification for idle watchers that asked for it (never above the
        store's revision, even for a watcher that starts in the future)."""
        revision = self._revision()
        for stream in list(self.streams):
            for w in stream.watchers.values():
                if w.progress_notify and not w.lagging:
                    stream.send(rpc_pb2.WatchResponse(header=self.header(min(w.next_rev - 1, revision)),
                                                      watch_id=w.watch_id))

    # ---- events --------------------------------------------------------------------------------

    def publish(self, events: list[Event], revision: int) -> None:
        """Deliver newly applied events (called in the loop, in apply order)."""
        for stream in list(self.streams):
            if stream.queue.qsize() > LAG_LIMIT:
                for w in stream.watchers.values():
                    w.lagging = True
                continue
            for w in list(stream.watchers.values()):
                if w.lagging:
                    continue
                self._deliver(w, [ev for ev in events if ev.kv.mod_revision >= w.next_rev], revision)

    def _deliver(self, w: Watcher, events: list[Event], revision: int) -> None:
        if events:
            w.next_rev = events[-1].kv.mod_revision + 1
        matching = [event_to_pb(ev, w.prev_kv) for ev in events if w.matches(ev)]
        if matching:
            w.stream.send(rpc_pb2.WatchResponse(header=self.header(revision), watch_id=w.watch_id,
                                                events=matching))

    def catch_up(self, w: Watcher) -> None:
        """Send `w` the history it has not seen, then let it follow live events again."""
        while True:
            with self.machine.lock:
                current = self.machine.mvcc.revision
                try:
                    backlog = self.machine.mvcc.events_from(w.next_rev, CATCH_UP_CHUNK)
                except Compacted:
                    compact = self.machine.mvcc.compact_revision
                    backlog = None
            if backlog is None:
                w.stream.watchers.pop(w.watch_id, None)
                w.stream.send(rpc_pb2.WatchResponse(header=self.header(current), watch_id=w.watch_id,
                                                    canceled=True, compact_revision=compact))
                return
            if not backlog:
                w.next_rev = max(w.next_rev, current + 1)
                w.lagging = False
                return
            self._deliver(w, backlog, current)
            if w.stream.queue.qsize() > LAG_LIMIT:
                w.lagging = True
                return

    def resume_lagging(self, stream: WatchStream) -> None:
        """Called by the stream's sender when its queue has drained."""
        for w in list(stream.watchers.values()):
            if w.lagging and stream.queue.qsize() < LAG_LIMIT // 2:
                self.catch_up(w)

    def restored(self) -> None:
        """The store was replaced by a snapshot: re-sync every watcher from the event log."""
        for stream in list(self.streams):
            for w in list(stream.watchers.values()):
                self.catch_up(w)

    def _revision(self) -> int:
        with self.machine.lock:
            return self.machine.mvcc.revision

    @property
    def watcher_count(self) -> int:
        return sum(len(s.watchers) for s in self.streams)


def _create_problem(stream: WatchStream, key: bytes, req: rpc_pb2.WatchCreateRequest) -> str | None:
    """etcd's reasons to refuse a watch: an empty range, or a watch ID already in use."""
    if req.range_end not in (b"", b"\x00") and key >= req.range_end:
        return "mvcc: watcher range is empty"
    if req.watch_id and req.watch_id in stream.watchers:
        return "mvcc: duplicate watch ID provided on the WatchStream"
    return None

