"""An MVCCStore survives a Raft snapshot (pickle round trip) unchanged."""
from __future__ import annotations

import pickle

import pytest

from kvstore.commands import Batch, Compact, DeleteRange, LeaseGrant, PublishMember, Put, Range, Txn
from kvstore.mvcc import MVCCStore


def test_round_trip_keeps_everything() -> None:
    store = MVCCStore()
    store.apply(Batch((LeaseGrant(7, 30), PublishMember(1, "m1", "h:1", ("http://h:2",)))))
    for i in range(50):
        store.apply(Batch((Put(b"k%d" % (i % 7), b"v%d" % i, lease=7 if i % 5 == 0 else 0),)))
    store.apply(Batch((DeleteRange(b"k3"), Txn(success=(Put(b"t1", b"a"), Put(b"t2", b"b"))))))
    store.apply(Batch((Compact(20),)))
    restored = pickle.loads(pickle.dumps(store))
    for name in ("revision", "compact_revision", "size_bytes", "keys", "history", "leases", "members",
                 "events", "event_revisions"):
        assert getattr(restored, name) == getattr(store, name), name
    assert restored.hash_kv() == store.hash_kv()
    assert restored.range(Range(b"k", b"l", revision=30)) == store.range(Range(b"k", b"l", revision=30))
    # And both go on identically.
    batch = Batch((Put(b"k1", b"new"), DeleteRange(b"k", b"l")))
    assert restored.apply(batch) == store.apply(batch)


def test_unknown_snapshot_format_is_refused() -> None:
    state = MVCCStore().__getstate__()
    state["format"] = 99
    with pytest.raises(ValueError, match="snapshot format"):
        MVCCStore().__setstate__(state)
