"""The state machine against etcd v3's MVCC semantics (etcd 3.4), deterministically: no I/O.

Each test builds a fresh `MVCCStore`, applies batches and checks results, revisions, events and
errors (with etcd's exact messages, which clients match on).
"""
from __future__ import annotations

import pytest

from kvstore import errors
from kvstore.commands import (
    Applied, Batch, Compact, Compare, CompareResult, CompareTarget, DeleteRange, DeleteResult, Done,
    Event, EventType, KeyValue, KVError, LeaseGrant, LeaseRevoke, Operation, PublishMember, Put,
    PutResult, Range, RangeResult, ReadBarrier, SortOrder, SortTarget, Txn, TxnResult,
)
from kvstore.mvcc import MAX_LEASE_TTL, Compacted, MVCCStore
from kvstore.txncheck import MAX_TXN_OPS, validate_txn

EQ, GT, LT, NE = CompareResult.EQUAL, CompareResult.GREATER, CompareResult.LESS, CompareResult.NOT_EQUAL
VERSION, CREATE, MOD, VALUE, LEASE = (CompareTarget.VERSION, CompareTarget.CREATE, CompareTarget.MOD,
                                      CompareTarget.VALUE, CompareTarget.LEASE)


# ---- helpers -------------------------------------------------------------------------------


def run(store: MVCCStore, *ops: Operation) -> list[Applied]:
    """Apply `ops` as one batch; their Applied records."""
    return store.apply(Batch(tuple(ops))).applied


def one(store: MVCCStore, op: Operation) -> Applied:
    return run(store, op)[0]


def result(store: MVCCStore, op: Operation):
    return one(store, op).result


def put(store: MVCCStore, key: bytes, value: bytes = b"v", **kw) -> Applied:
    applied = one(store, Put(key, value, **kw))
    assert not isinstance(applied.result, KVError), applied.result
    return applied


def get(store: MVCCStore, key: bytes, range_end: bytes = b"", **kw) -> RangeResult:
    res = result(store, Range(key, range_end, **kw))
    assert isinstance(res, RangeResult), res
    return res


def keys(res: RangeResult) -> list[bytes]:
    return [kv.key for kv in res.kvs]


def store_with(*pairs: tuple[bytes, bytes]) -> MVCCStore:
    store = MVCCStore()
    for key, value in pairs:
        put(store, key, value)
    return store


def grant(store: MVCCStore, lease_id: int, ttl: int = 10) -> None:
    assert result(store, LeaseGrant(lease_id, ttl)) == Done()


# ---- revisions -----------------------------------------------------------------------------


def test_revision_starts_at_one() -> None:
    store = MVCCStore()
    assert store.revision == 1
    assert one(store, Range(b"a")) == Applied(RangeResult(kvs=(), more=False, count=0), 1)


def _seeded() -> MVCCStore:
    """Revision 3: a and b exist."""
    return store_with((b"a", b"1"), (b"b", b"2"))


REVISION_BUMPS = [
    # (description, operation, revisions it adds)
    ("put", Put(b"a", b"x"), 1),
    ("put of a new key", Put(b"new", b"x"), 1),
    ("put of the same value", Put(b"a", b"1"), 1),
    ("delete of one key", DeleteRange(b"a"), 1),
    ("delete of several keys is one revision", DeleteRange(b"a", b"c"), 1),
    ("delete of nothing", DeleteRange(b"zzz"), 0),
    ("delete of an empty range", DeleteRange(b"x", b"y"), 0),
    ("range", Range(b"a", b"\x00"), 0),
    ("read-only txn", Txn(success=(Range(b"a"),), failure=(Range(b"b"),)), 0),
    ("txn with several writes is one revision", Txn(success=(Put(b"a", b"x"), Put(b"c", b"y"), DeleteRange(b"b"))), 1),
    ("txn whose executed branch only reads", Txn(compare=(Compare(b"a", VALUE, EQ, b"nope"),),
                                                 success=(Put(b"a", b"x"),), failure=(Range(b"a"),)), 0),
    ("txn whose executed branch writes", Txn(compare=(Compare(b"a", VALUE, EQ, b"nope"),),
                                             success=(Range(b"a"),), failure=(Put(b"a", b"x"),)), 1),
    ("txn whose writes delete nothing", Txn(success=(DeleteRange(b"zzz"),)), 0),
    ("empty txn", Txn(), 0),
    ("nested txn writing", Txn(success=(Txn(success=(Put(b"n", b"x"),)),)), 1),
    ("failed put", Put(b"a", b"x", lease=99), 0),
    ("lease grant", LeaseGrant(5, 10), 0),
    ("revoke of a lease without keys", LeaseRevoke(5), 0),
    ("compact", Compact(2), 0),
    ("read barrier", ReadBarrier(), 0),
]


@pytest.mark.parametrize("op, bump", [(op, bump) for _, op, bump in REVISION_BUMPS],
                         ids=[name for name, _, _ in REVISION_BUMPS])
def test_revision_bumps(op: Operation, bump: int) -> None:
    store = _seeded()
    if isinstance(op, LeaseRevoke):
        grant(store, op.id)
    before = store.revision
    applied = one(store, op)
    assert store.revision == before + bump
    assert applied.revision == store.revision  # the response header's revision


def test_each_op_of_a_batch_gets_its_own_revision() -> None:
    store = MVCCStore()
    applied = run(store, Put(b"a", b"1"), Put(b"b", b"2"), Range(b"a"), DeleteRange(b"nothing"), DeleteRange(b"a"))
    assert [a.revision for a in applied] == [2, 3, 3, 3, 4]
    assert applied[2].result.kvs[0].mod_revision == 2


# ---- versions of a key ----------------------------------------------------------------------


def test_create_mod_version_and_recreate() -> None:
    store = MVCCStore()
    put(store, b"k", b"v1")                               # rev 2
    put(store, b"k", b"v2")                               # rev 3
    assert get(store, b"k").kvs == (KeyValue(b"k", 2, 3, 2, b"v2"),)
    assert result(store, DeleteRange(b"k")) == DeleteResult(deleted=1)  # rev 4
    assert get(store, b"k").kvs == ()
    put(store, b"k", b"v3")                               # rev 5: a new generation
    assert get(store, b"k").kvs == (KeyValue(b"k", 5, 5, 1, b"v3"),)


@pytest.mark.parametrize("revision, expected", [
    (1, None),
    (2, KeyValue(b"k", 2, 2, 1, b"v1")),
    (3, KeyValue(b"k", 2, 3, 2, b"v2")),
    (4, None),                                            # deleted at 4
    (5, KeyValue(b"k", 5, 5, 1, b"v3")),
    (0, KeyValue(b"k", 5, 5, 1, b"v3")),                  # 0 = current
])
def test_historical_reads(revision: int, expected: KeyValue | None) -> None:
    store = MVCCStore()
    put(store, b"k", b"v1")
    put(store, b"k", b"v2")
    one(store, DeleteRange(b"k"))
    put(store, b"k", b"v3")
    res = get(store, b"k", revision=revision)
    assert res.kvs == ((expected,) if expected else ())


def test_historical_range_sees_keys_alive_then() -> None:
    store = store_with((b"a", b"1"), (b"b", b"1"))        # revs 2, 3
    one(store, DeleteRange(b"a"))                          # rev 4
    put(store, b"c", b"1")                                # rev 5
    assert keys(get(store, b"a", b"\x00", revision=3)) == [b"a", b"b"]
    assert keys(get(store, b"a", b"\x00", revision=4)) == [b"b"]
    assert keys(get(store, b"a", b"\x00")) == [b"b", b"c"]


def test_future_revision_read_fails() -> None:
    store = store_with((b"a", b"1"))
    assert result(store, Range(b"a", revision=3)) == errors.FUTURE_REV
    assert get(store, b"a", revision=2).count == 1


# ---- range ---------------------------------------------------------------------------------


RANGE_KEYS = [b"a", b"b", b"c", b"d", b"foo", b"foo/1", b"foo/2", b"fop"]


@pytest.mark.parametrize("key, range_end, expected", [
    (b"b", b"", [b"b"]),                                   # one key
    (b"bb", b"", []),                                      # absent key
    (b"b", b"d", [b"b", b"c"]),                            # [b, d)
    (b"foo/", b"foo0", [b"foo/1", b"foo/2"]),              # prefix: range_end = prefix + 1
    (b"foo", b"fop", [b"foo", b"foo/1", b"foo/2"]),
    (b"d", b"\x00", [b"d", b"foo", b"foo/1", b"foo/2", b"fop"]),  # "\0": every key >= key
    (b"\x00", b"\x00", RANGE_KEYS),                        # everything
    (b"c", b"b", []),                                      # end before start
    (b"e", b"f", []),                                      # "foo" > "f"
    (b"e", b"g", [b"foo", b"foo/1", b"foo/2", b"fop"]),
])
def test_range_end(key: bytes, range_end: bytes, expected: list[bytes]) -> None:
    store = store_with(*[(k, b"v") for k in RANGE_KEYS])
    res = get(store, key, range_end)
    assert keys(res) == expected
    assert res.count == len(expected) and res.more is False


@pytest.mark.parametrize("limit, expected, more", [
    (0, [b"a", b"b", b"c", b"d"], False),
    (1, [b"a"], True),
    (3, [b"a", b"b", b"c"], True),
    (4, [b"a", b"b", b"c", b"d"], False),
    (10, [b"a", b"b", b"c", b"d"], False),
])
def test_limit_more_count(limit: int, expected: list[bytes], more: bool) -> None:
    store = store_with(*[(k, b"v") for k in (b"a", b"b", b"c", b"d")])
    res = get(store, b"a", b"\x00", limit=limit)
    assert keys(res) == expected
    assert res.more is more
    assert res.count == 4  # count ignores the limit


def _sort_store() -> MVCCStore:
    """a: create 4, mod 4, version 1, value "2"; b: create 2, mod 7, version 3, value "1";
    c: create 3, mod 5, version 2, value "3"."""
    store = MVCCStore()
    for key, value in [(b"b", b"x"), (b"c", b"x"), (b"a", b"2"), (b"c", b"3"), (b"b", b"x"), (b"b", b"1")]:
        put(store, key, value)
    return store


ASC, DESC, NO = SortOrder.ASCEND, SortOrder.DESCEND, SortOrder.NONE


@pytest.mark.parametrize("order, target, expected", [
    (NO, SortTarget.KEY, b"abc"),
    (ASC, SortTarget.KEY, b"abc"),
    (DESC, SortTarget.KEY, b"cba"),
    (NO, SortTarget.CREATE, b"bca"),                      # etcd sorts ascending by default for non-key targets
    (ASC, SortTarget.CREATE, b"bca"),
    (DESC, SortTarget.CREATE, b"acb"),
    (NO, SortTarget.MOD, b"acb"),
    (DESC, SortTarget.MOD, b"bca"),
    (NO, SortTarget.VERSION, b"acb"),
    (DESC, SortTarget.VERSION, b"bca"),
    (NO, SortTarget.VALUE, b"bac"),
    (ASC, SortTarget.VALUE, b"bac"),
    (DESC, SortTarget.VALUE, b"cab"),
])
def test_sort(order: SortOrder, target: SortTarget, expected: bytes) -> None:
    res = get(_sort_store(), b"a", b"\x00", sort_order=order, sort_target=target)
    assert b"".join(keys(res)) == expected


def test_sort_then_limit() -> None:
    res = get(_sort_store(), b"a", b"\x00", sort_order=DESC, sort_target=SortTarget.MOD, limit=2)
    assert keys(res) == [b"b", b"c"]
    assert res.more is True and res.count == 3


def test_keys_only_drops_values_only() -> None:
    store = store_with((b"a", b"1"), (b"b", b"2"))
    res = get(store, b"a", b"\x00", keys_only=True)
    assert res.kvs == (KeyValue(b"a", 2, 2, 1, b""), KeyValue(b"b", 3, 3, 1, b""))


@pytest.mark.parametrize("limit", [0, 1, 5])
def test_count_only(limit: int) -> None:
    store = store_with((b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
    # etcd counts without fetching: no kvs, and `more` stays false even when count > limit.
    assert get(store, b"a", b"\x00", count_only=True, limit=limit) == RangeResult(kvs=(), more=False, count=3)


@pytest.mark.parametrize("filters, expected", [
    (dict(min_mod_revision=5), b"cb"),
    (dict(max_mod_revision=5), b"ac"),
    (dict(min_mod_revision=5, max_mod_revision=5), b"c"),
    (dict(min_create_revision=3), b"ac"),
    (dict(max_create_revision=3), b"cb"),
    (dict(min_create_revision=3, max_mod_revision=4), b"a"),
    (dict(min_mod_revision=8), b""),
])
def test_revision_filters(filters: dict, expected: bytes) -> None:
    res = get(_sort_store(), b"a", b"\x00", sort_order=ASC, sort_target=SortTarget.MOD, **filters)
    assert b"".join(keys(res)) == expected
    assert res.count == 3  # etcd's count is taken before the filters


def test_filters_then_limit() -> None:
    res = get(_sort_store(), b"a", b"\x00", min_create_revision=3, limit=1)
    assert keys(res) == [b"a"] and res.more is True and res.count == 3
    res = get(_sort_store(), b"a", b"\x00", min_create_revision=4, limit=1)
    assert keys(res) == [b"a"] and res.more is False


# ---- put -----------------------------------------------------------------------------------


def test_put_prev_kv() -> None:
    store = MVCCStore()
    assert result(store, Put(b"k", b"1", prev_kv=True)) == PutResult(prev_kv=None)
    assert result(store, Put(b"k", b"2", prev_kv=True)) == PutResult(prev_kv=KeyValue(b"k", 2, 2, 1, b"1"))
    assert result(store, Put(b"k", b"3")) == PutResult(prev_kv=None)


def test_put_ignore_value_keeps_value_and_sets_lease() -> None:
    store = store_with((b"k", b"keep"))
    grant(store, 7)
    put(store, b"k", lease=7, ignore_value=True)
    assert get(store, b"k").kvs == (KeyValue(b"k", 2, 3, 2, b"keep", 7),)
    assert store.lease_keys(7) == [b"k"]


def test_put_ignore_lease_keeps_lease_and_sets_value() -> None:
    store = MVCCStore()
    grant(store, 7)
    put(store, b"k", b"old", lease=7)
    put(store, b"k", b"new", ignore_lease=True)
    assert get(store, b"k").kvs == (KeyValue(b"k", 2, 3, 2, b"new", 7),)
    assert store.lease_keys(7) == [b"k"]


@pytest.mark.parametrize("op, error", [
    (Put(b"absent", ignore_value=True), errors.KEY_NOT_FOUND),
    (Put(b"absent", b"v", ignore_lease=True), errors.KEY_NOT_FOUND),
    (Put(b"k", b"v", lease=99), errors.LEASE_NOT_FOUND),
    # A plain Put checks the lease before the key (etcd's applier order).
    (Put(b"absent", lease=99, ignore_value=True), errors.LEASE_NOT_FOUND),
    # Inside a txn etcd checks the key first.
    (Txn(success=(Put(b"absent", lease=99, ignore_value=True),)), errors.KEY_NOT_FOUND),
    (Txn(success=(Put(b"k", b"v", lease=99),)), errors.LEASE_NOT_FOUND),
])
def test_put_errors(op: Operation, error: KVError) -> None:
    store = store_with((b"k", b"v"))
    assert error.message.startswith("etcdserver: ")
    assert one(store, op) == Applied(error, 2)
    assert store.revision == 2 and get(store, b"absent").kvs == ()


def test_error_messages_are_etcds() -> None:
    assert errors.KEY_NOT_FOUND.message == "etcdserver: key not found"
    assert errors.LEASE_NOT_FOUND.message == "etcdserver: requested lease not found"
    assert errors.COMPACTED.message == "etcdserver: mvcc: required revision has been compacted"
    assert errors.FUTURE_REV.message == "etcdserver: mvcc: required revision is a future revision"
    assert errors.DUPLICATE_KEY.message == "etcdserver: duplicate key given in txn request"
    assert errors.TOO_MANY_OPS.message == "etcdserver: too many operations in txn request"
    assert errors.LEASE_EXIST.message == "etcdserver: lease already exists"
    assert errors.LEASE_TTL_TOO_LARGE.message == "etcdserver: too large lease TTL"


# ---- delete --------------------------------------------------------------------------------


def test_delete_range_prev_kvs() -> None:
    store = store_with((b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
    res = result(store, DeleteRange(b"a", b"c", prev_kv=True))
    assert res == DeleteResult(deleted=2, prev_kvs=(KeyValue(b"a", 2, 2, 1, b"1"), KeyValue(b"b", 3, 3, 1, b"2")))
    assert keys(get(store, b"\x00", b"\x00")) == [b"c"]
    assert result(store, DeleteRange(b"c", b"\x00")) == DeleteResult(deleted=1, prev_kvs=())
    assert result(store, DeleteRange(b"c", prev_kv=True)) == DeleteResult(deleted=0, prev_kvs=())


# ---- txn -----------------------------------------------------------------------------------


def _compare_store() -> MVCCStore:
    """k: create 3, mod 4, version 2, value "m", lease 7 (revision 4)."""
    store = MVCCStore()
    grant(store, 7)
    put(store, b"other", b"x")
    put(store, b"k", b"a")
    put(store, b"k", b"m", lease=7)
    return store


COMPARES = [
    (VALUE, EQ, b"m", True), (VALUE, EQ, b"a", False), (VALUE, NE, b"a", True), (VALUE, NE, b"m", False),
    (VALUE, GT, b"l", True), (VALUE, GT, b"m", False), (VALUE, LT, b"n", True), (VALUE, LT, b"m", False),
    (VALUE, GT, b"", True), (VALUE, LT, b"mm", True),
    (VERSION, EQ, 2, True), (VERSION, EQ, 1, False), (VERSION, NE, 1, True), (VERSION, GT, 1, True),
    (VERSION, GT, 2, False), (VERSION, LT, 3, True), (VERSION, LT, 2, False),
    (CREATE, EQ, 3, True), (CREATE, NE, 3, False), (CREATE, GT, 2, True), (CREATE, LT, 3, False),
    (MOD, EQ, 4, True), (MOD, EQ, 3, False), (MOD, NE, 3, True), (MOD, GT, 3, True), (MOD, LT, 5, True),
    (MOD, LT, 4, False),
    (LEASE, EQ, 7, True), (LEASE, EQ, 0, False), (LEASE, NE, 0, True), (LEASE, GT, 6, True),
    (LEASE, LT, 7, False),
]


@pytest.mark.parametrize("target, cmp, operand, expected", COMPARES)
def test_compare_existing_key(target: CompareTarget, cmp: CompareResult, operand, expected: bool) -> None:
    store = _compare_store()
    res = result(store, Txn(compare=(Compare(b"k", target, cmp, operand),), success=(Range(b"k"),),
                            failure=(Range(b"other"),)))
    assert res.succeeded is expected
    assert keys(res.responses[0]) == ([b"k"] if expected else [b"other"])


@pytest.mark.parametrize("target, cmp, operand, expected", [
    # An absent key compares as all zeroes ...
    (VERSION, EQ, 0, True), (VERSION, GT, 0, False), (VERSION, LT, 1, True),
    (CREATE, EQ, 0, True), (MOD, EQ, 0, True), (MOD, NE, 0, False), (LEASE, EQ, 0, True),
    # ... except VALUE, which always fails on a missing key (etcd cannot tell "" from absent).
    (VALUE, EQ, b"", False), (VALUE, NE, b"x", False), (VALUE, LT, b"x", False), (VALUE, GT, b"", False),
])
def test_compare_absent_key(target: CompareTarget, cmp: CompareResult, operand, expected: bool) -> None:
    store = _compare_store()
    res = result(store, Txn(compare=(Compare(b"absent", target, cmp, operand),)))
    assert res == TxnResult(succeeded=expected)


@pytest.mark.parametrize("compare, expected", [
    (Compare(b"p/", VERSION, EQ, 1, range_end=b"p0"), True),        # every key in range satisfies
    (Compare(b"p/", VALUE, EQ, b"1", range_end=b"p0"), False),      # p/b has "2"
    (Compare(b"p/", VALUE, LT, b"3", range_end=b"p0"), True),
    (Compare(b"p/", MOD, GT, 2, range_end=b"p0"), False),           # p/a was written at 2
    (Compare(b"p/b", MOD, GT, 2, range_end=b"\x00"), True),         # "\0": from p/b on
    (Compare(b"q/", VERSION, EQ, 0, range_end=b"q0"), True),        # empty range: zero values
    (Compare(b"q/", VALUE, EQ, b"", range_end=b"q0"), False),
])
def test_compare_with_range_end(compare: Compare, expected: bool) -> None:
    store = store_with((b"p/a", b"1"), (b"p/b", b"2"))
    assert result(store, Txn(compare=(compare,))).succeeded is expected


def test_all_compares_must_hold() -> None:
    store = _compare_store()
    ok, bad = Compare(b"k", VERSION, EQ, 2), Compare(b"k", VALUE, EQ, b"no")
    assert result(store, Txn(compare=(ok, ok))).succeeded is True
    assert result(store, Txn(compare=(ok, bad))).succeeded is False
    assert result(store, Txn()).succeeded is True  # no compare: success


def test_txn_branches_and_responses() -> None:
    store = store_with((b"k", b"v"))
    txn = Txn(compare=(Compare(b"k", VALUE, EQ, b"v"),),
              success=(Put(b"k", b"w", prev_kv=True), Range(b"k"), DeleteRange(b"gone")),
              failure=(Put(b"f", b"x"),))
    applied = one(store, txn)
    assert applied.revision == 3
    res = applied.result
    assert res.succeeded is True
    assert res.responses[0] == PutResult(prev_kv=KeyValue(b"k", 2, 2, 1, b"v"))
    assert res.responses[1].kvs == (KeyValue(b"k", 2, 3, 2, b"w"),)
    assert res.responses[2] == DeleteResult(deleted=0)
    # The same txn again now takes the failure branch.
    res = result(store, txn)
    assert res == TxnResult(succeeded=False, responses=(PutResult(),))
    assert get(store, b"f").kvs == (KeyValue(b"f", 4, 4, 1, b"x"),)


def test_reads_inside_a_txn_see_its_earlier_writes() -> None:
    store = store_with((b"a", b"1"), (b"b", b"2"))
    res = result(store, Txn(success=(
        Put(b"a", b"new"), Range(b"a"),
        DeleteRange(b"b"), Range(b"a", b"\x00"),
        Put(b"c", b"3"), Range(b"a", b"\x00", count_only=True),
        Range(b"a", revision=3),  # an explicit revision reads committed history
    )))
    _, r_a, _, r_all, _, r_count, r_old = res.responses
    assert r_a.kvs == (KeyValue(b"a", 2, 4, 2, b"new"),)
    assert keys(r_all) == [b"a"]
    assert r_count.count == 2
    assert r_old.kvs == (KeyValue(b"a", 2, 2, 1, b"1"),)
    assert store.revision == 4


def test_nested_txn() -> None:
    store = store_with((b"a", b"1"))
    inner = Txn(compare=(Compare(b"a", VALUE, EQ, b"1"),), success=(Put(b"b", b"2"),), failure=(Put(b"c", b"3"),))
    outcome = store.apply(Batch((Txn(success=(Put(b"x", b"x"), inner, Range(b"b"))),)))
    res = outcome.applied[0].result
    assert res.succeeded is True
    assert res.responses[1] == TxnResult(succeeded=True, responses=(PutResult(),))
    assert res.responses[2].kvs == (KeyValue(b"b", 3, 3, 1, b"2"),)
    assert store.revision == 3 and get(store, b"c").kvs == ()
    assert [(e.kv.key, e.kv.mod_revision, e.sub) for e in outcome.events] == [(b"x", 3, 0), (b"b", 3, 1)]


def test_nested_compares_see_the_state_before_the_txn() -> None:
    # etcd evaluates every compare of the txn tree before executing any operation.
    store = MVCCStore()
    inner = Txn(compare=(Compare(b"a", VALUE, EQ, b"1"),), success=(Put(b"b", b"seen"),),
                failure=(Put(b"b", b"not-seen"),))
    res = result(store, Txn(success=(Put(b"a", b"1"), inner)))
    assert res.responses[1].succeeded is False
    assert get(store, b"b").kvs[0].value == b"not-seen"


def test_failed_txn_writes_nothing() -> None:
    store = store_with((b"a", b"1"))
    applied = one(store, Txn(success=(Put(b"b", b"2"), Put(b"c", b"3", lease=42))))
    assert applied == Applied(errors.LEASE_NOT_FOUND, 2)
    assert keys(get(store, b"a", b"\x00")) == [b"a"]
    assert store.events_from(3) == []


def test_txn_range_errors() -> None:
    store = store_with((b"a", b"1"), (b"a", b"2"), (b"a", b"3"))
    one(store, Compact(3))
    assert result(store, Txn(success=(Put(b"b", b"x"), Range(b"a", revision=2)))) == errors.COMPACTED
    assert result(store, Txn(success=(Range(b"a", revision=9),))) == errors.FUTURE_REV
    assert get(store, b"b").kvs == ()


def _txn(*ops, failure=()) -> Txn:
    return Txn(success=tuple(ops), failure=tuple(failure))


P = Put
D = DeleteRange


@pytest.mark.parametrize("txn, duplicate", [
    (_txn(P(b"a"), P(b"a")), True),
    (_txn(P(b"a"), P(b"b")), False),
    (_txn(P(b"a"), D(b"a")), True),
    (_txn(D(b"a"), P(b"a")), True),                              # order does not matter
    (_txn(D(b"a", b"c"), P(b"b")), True),
    (_txn(D(b"a", b"c"), P(b"c")), False),                       # range end is exclusive
    (_txn(D(b"a"), D(b"a"), D(b"a", b"z")), False),              # deletes may overlap deletes
    (_txn(P(b"a"), failure=(P(b"a"),)), False),                  # different branches
    (_txn(P(b"a"), _txn(P(b"a"))), True),                        # nested put vs outer put
    (_txn(_txn(P(b"a")), P(b"a")), True),                        # ... in either order
    (_txn(_txn(P(b"a"), failure=(P(b"a"),))), False),            # only one nested branch runs
    (_txn(P(b"a"), _txn(P(b"b"), failure=(P(b"a"),))), True),
    (_txn(D(b"a"), _txn(P(b"a"))), True),                        # outer delete vs nested put
    (_txn(_txn(P(b"a")), D(b"a")), True),
    (_txn(_txn(D(b"a")), P(b"a")), True),                        # nested delete vs outer put
    (_txn(_txn(P(b"a")), _txn(P(b"a"))), True),                  # sibling nested txns
    (_txn(_txn(D(b"a")), _txn(P(b"a"))), True),
    (_txn(_txn(P(b"a")), _txn(D(b"a"))), False),                 # etcd checks earlier siblings' deletes only
    (_txn(_txn(P(b"a"), P(b"a"))), True),                        # inside a nested txn
    (_txn(D(b"a", b"\x00"), P(b"b")), False),                    # etcd's check takes "\0" literally
    (_txn(D(b"a", b"\x00"), P(b"a")), False),
    (Txn(failure=(P(b"a"), P(b"a"))), True),                     # the failure branch is checked too
])
def test_duplicate_keys(txn: Txn, duplicate: bool) -> None:
    assert validate_txn(txn) == (errors.DUPLICATE_KEY if duplicate else None)
    store = MVCCStore()
    applied = one(store, txn)
    assert (applied.result == errors.DUPLICATE_KEY) is duplicate
    if duplicate:
        assert store.revision == 1


def _puts(n: int, prefix: bytes = b"k") -> tuple[Put, ...]:
    return tuple(Put(prefix + b"%d" % i) for i in range(n))


@pytest.mark.parametrize("txn, too_many", [
    (Txn(success=_puts(MAX_TXN_OPS)), False),
    (Txn(success=_puts(MAX_TXN_OPS + 1)), True),
    (Txn(failure=_puts(MAX_TXN_OPS + 1)), True),
    (Txn(compare=(Compare(b"k", VERSION, EQ, 0),) * (MAX_TXN_OPS + 1)), True),
    # A nested txn may use what its parent's widest list leaves: 128 - 100 = 28.
    (Txn(success=_puts(99) + (Txn(success=_puts(28, b"n")),)), False),
    (Txn(success=_puts(99) + (Txn(success=_puts(29, b"n")),)), True),
    (Txn(success=_puts(100), failure=(Txn(failure=_puts(29, b"n")),)), True),
])
def test_too_many_ops(txn: Txn, too_many: bool) -> None:
    assert validate_txn(txn) == (errors.TOO_MANY_OPS if too_many else None)
    assert (result(MVCCStore(), txn) == errors.TOO_MANY_OPS) is too_many


# ---- compaction ----------------------------------------------------------------------------


def _history() -> MVCCStore:
    """2 put a=1, 3 put a=2, 4 put b=1, 5 delete b, 6 put a=3, 7 put c=1."""
    store = store_with((b"a", b"1"), (b"a", b"2"), (b"b", b"1"))
    one(store, DeleteRange(b"b"))
    put(store, b"a", b"3")
    put(store, b"c", b"1")
    return store


@pytest.mark.parametrize("revision, error", [(8, errors.FUTURE_REV), (100, errors.FUTURE_REV), (7, None), (1, None)])
def test_compact_revision_bounds(revision: int, error: KVError | None) -> None:
    store = _history()
    assert result(store, Compact(revision)) == (error or Done())


def test_compact_twice_or_lower_fails() -> None:
    store = _history()
    assert result(store, Compact(5)) == Done()
    assert result(store, Compact(5)) == errors.COMPACTED
    assert result(store, Compact(4)) == errors.COMPACTED
    assert result(store, Compact(6)) == Done()
    assert store.compact_revision == 6


def test_compaction_keeps_newest_version_at_or_below_unless_tombstone() -> None:
    store = _history()
    size_before = store.size_bytes
    assert result(store, Compact(5)) == Done()
    assert result(store, Range(b"a", revision=4)) == errors.COMPACTED
    assert result(store, Range(b"a", b"\x00", revision=1)) == errors.COMPACTED
    # At the compact revision: a's newest version (written at 3) survives; b's tombstone does not.
    assert get(store, b"a", b"\x00", revision=5).kvs == (KeyValue(b"a", 2, 3, 2, b"2"),)
    assert get(store, b"a", revision=6).kvs == (KeyValue(b"a", 2, 6, 3, b"3"),)
    assert keys(get(store, b"a", b"\x00")) == [b"a", b"c"]
    assert store.keys == [b"a", b"c"]
    assert [v.revision for v in store.history[b"a"]] == [3, 6]
    assert store.size_bytes < size_before


def test_compaction_drops_events_before() -> None:
    store = _history()
    one(store, Compact(6))
    with pytest.raises(Compacted):
        store.events_from(5)
    with pytest.raises(Compacted):
        store.events_from(1)
    # Watching from the compact revision itself works, as in etcd: the PUTs written at that
    # revision are kept (their previous values are gone), and everything after it.
    events = store.events_from(6)
    assert [(e.type, e.kv.key, e.kv.mod_revision, e.prev_kv) for e in events] == [
        (EventType.PUT, b"a", 6, None), (EventType.PUT, b"c", 7, None)]
    assert store.events_from(7) == events[1:]


def test_compaction_at_a_delete_revision_keeps_no_event_there() -> None:
    store = _history()
    one(store, Compact(5))                                 # revision 5 is b's delete
    assert [e.kv.mod_revision for e in store.events_from(5)] == [6, 7]


# ---- leases --------------------------------------------------------------------------------


@pytest.mark.parametrize("op, expected", [
    (LeaseGrant(1, 10), errors.LEASE_EXIST),
    (LeaseGrant(2, MAX_LEASE_TTL), Done()),
    (LeaseGrant(2, MAX_LEASE_TTL + 1), errors.LEASE_TTL_TOO_LARGE),
    (LeaseGrant(1, MAX_LEASE_TTL + 1), errors.LEASE_TTL_TOO_LARGE),  # etcd checks the TTL first
    (LeaseRevoke(2), errors.LEASE_NOT_FOUND),
])
def test_lease_errors(op: Operation, expected) -> None:
    store = MVCCStore()
    grant(store, 1, 10)
    assert one(store, op) == Applied(expected, 1)
    assert store.leases[1].ttl == 10


def test_keys_attach_detach_and_move_between_leases() -> None:
    store = MVCCStore()
    grant(store, 1)
    grant(store, 2)
    put(store, b"a", lease=1)
    put(store, b"b", lease=1)
    assert store.lease_keys(1) == [b"a", b"b"]
    put(store, b"a", lease=2)                             # moved
    assert store.lease_keys(1) == [b"b"] and store.lease_keys(2) == [b"a"]
    put(store, b"a")                                      # detached
    assert store.lease_keys(2) == []
    one(store, DeleteRange(b"b"))                          # a delete detaches too
    assert store.lease_keys(1) == []
    one(store, Txn(success=(Put(b"t", lease=2),)))         # in a txn
    assert store.lease_keys(2) == [b"t"]
    assert store.lease_keys(3) is None


def test_revoke_deletes_keys_in_one_revision() -> None:
    store = MVCCStore()
    grant(store, 1)
    put(store, b"c", b"3", lease=1)
    put(store, b"a", b"1", lease=1)
    put(store, b"keep", b"k")
    put(store, b"b", b"2", lease=1)
    outcome = store.apply(Batch((LeaseRevoke(1),)))
    assert outcome.applied == [Applied(Done(), 6)]
    assert [(e.type, e.kv, e.prev_kv.key, e.sub) for e in outcome.events] == [
        (EventType.DELETE, KeyValue(b"a", 0, 6, 0, b""), b"a", 0),
        (EventType.DELETE, KeyValue(b"b", 0, 6, 0, b""), b"b", 1),
        (EventType.DELETE, KeyValue(b"c", 0, 6, 0, b""), b"c", 2),
    ]
    assert keys(get(store, b"\x00", b"\x00")) == [b"keep"]
    assert 1 not in store.leases
    assert result(store, Put(b"x", lease=1)) == errors.LEASE_NOT_FOUND


def test_revoke_of_a_lease_without_keys() -> None:
    store = MVCCStore()
    grant(store, 1)
    put(store, b"a", lease=1)
    put(store, b"a")                                      # detached
    outcome = store.apply(Batch((LeaseRevoke(1),)))
    assert outcome.applied == [Applied(Done(), 3)] and outcome.events == []
    assert store.leases == {}


# ---- hash ----------------------------------------------------------------------------------


BATCHES = [
    (Put(b"a", b"1"), Put(b"b", b"2")),
    (LeaseGrant(9, 30), Put(b"c", b"3", lease=9)),
    (Txn(success=(Put(b"a", b"x"), DeleteRange(b"b"))),),
    (LeaseRevoke(9), Compact(3)),
]


def _applied(batches) -> MVCCStore:
    store = MVCCStore()
    for ops in batches:
        store.apply(Batch(tuple(ops)))
    return store


def test_hash_kv_equal_for_same_log() -> None:
    assert _applied(BATCHES).hash_kv() == _applied(BATCHES).hash_kv()
    assert _applied(BATCHES[:3]).hash_kv(4) == _applied(BATCHES[:2]).hash_kv()


@pytest.mark.parametrize("other", [
    BATCHES[:-1],
    BATCHES[:1] + [(Put(b"c", b"other"),)] + BATCHES[2:],
    [(Put(b"a", b"1"), Put(b"b", b"3"))] + BATCHES[1:],
    [(Put(b"b", b"2"), Put(b"a", b"1"))] + BATCHES[1:],        # same keys and values, other order
])
def test_hash_kv_differs_for_other_logs(other) -> None:
    assert _applied(BATCHES).hash_kv() != _applied(other).hash_kv()


# ---- batches and events --------------------------------------------------------------------


def test_batch_of_another_version_is_refused() -> None:
    store = store_with((b"a", b"1"))
    outcome = store.apply(Batch((Put(b"a", b"2"), DeleteRange(b"a")), version=2))
    assert len(outcome.applied) == 2 and outcome.events == []
    for applied in outcome.applied:
        assert isinstance(applied.result, KVError) and applied.result.code == "FAILED_PRECONDITION"
        assert applied.revision == 2
    assert store.revision == 2 and get(store, b"a").kvs[0].value == b"1"


def test_events_carry_prev_kv_and_sub_order() -> None:
    store = store_with((b"a", b"1"), (b"c", b"3"))        # revs 2, 3
    outcome = store.apply(Batch((
        Put(b"z", b"z"),                                                           # 4
        Txn(success=(Put(b"a", b"2"), Put(b"b", b"new"), DeleteRange(b"c"))),     # 5
    )))
    assert outcome.events == [
        Event(EventType.PUT, KeyValue(b"z", 4, 4, 1, b"z"), None, 0),
        Event(EventType.PUT, KeyValue(b"a", 2, 5, 2, b"2"), KeyValue(b"a", 2, 2, 1, b"1"), 0),
        Event(EventType.PUT, KeyValue(b"b", 5, 5, 1, b"new"), None, 1),
        Event(EventType.DELETE, KeyValue(b"c", 0, 5, 0, b""), KeyValue(b"c", 3, 3, 1, b"3"), 2),
    ]
    assert store.events_from(4) == outcome.events
    assert store.events_from(5) == outcome.events[1:]
    assert store.events_from(6) == []
    assert [e.kv.mod_revision for e in store.events_from(0)] == [2, 3, 4, 5, 5, 5]


def test_other_operations() -> None:
    store = MVCCStore()
    member = PublishMember(7, "n1", "http://p", ("http://c",))
    assert run(store, ReadBarrier(), member) == [Applied(Done(), 1), Applied(Done(), 1)]
    assert store.members == {7: member}


def test_key_deleted_and_recreated_in_one_txn() -> None:
    # etcd's duplicate check lets a "\0"-ended delete and a put of a key it covers share a txn.
    store = store_with((b"a", b"1"))
    outcome = store.apply(Batch((Txn(success=(DeleteRange(b"a", b"\x00"), Put(b"a", b"22"))),)))
    assert [(e.type, e.kv.key, e.sub) for e in outcome.events] == [(EventType.DELETE, b"a", 0), (EventType.PUT, b"a", 1)]
    assert get(store, b"a").kvs == (KeyValue(b"a", 3, 3, 1, b"22"),)
    assert get(store, b"a", revision=2).kvs == (KeyValue(b"a", 2, 2, 1, b"1"),)
    assert store.size_bytes == store_with((b"a", b"1"), (b"a", b"22")).size_bytes
