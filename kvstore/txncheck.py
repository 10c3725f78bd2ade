"""etcd's static checks of a Txn, made before it is proposed (and again when it is applied).

At most 128 compares or operations per list (a nested txn gets what its parent's widest list
leaves), and no key written twice along one branch, as etcd's `checkTxnRequest` and
`checkRequestPut` define them (including their quirks, noted below).
"""
from __future__ import annotations

from kvstore import errors
from kvstore.commands import DeleteRange, KVError, Put, Txn, TxnOp

MAX_TXN_OPS = 128


def validate_txn(op: Txn, max_ops: int = MAX_TXN_OPS) -> KVError | None:
    """etcd's checks: at most `max_ops` compares or operations per branch (a nested txn gets what
    its parent's widest list leaves), and no key written twice along one branch."""
    if _too_many_ops(op, max_ops):
        return errors.TOO_MANY_OPS
    for branch in (op.success, op.failure):
        if _branch_writes(branch) is None:
            return errors.DUPLICATE_KEY
    return None


def _too_many_ops(op: Txn, max_ops: int) -> bool:
    widest = max(len(op.compare), len(op.success), len(op.failure))
    if widest > max_ops:
        return True
    return any(_too_many_ops(sub, max_ops - widest) for sub in op.success + op.failure if isinstance(sub, Txn))


def _deletes_key(d: DeleteRange, key: bytes) -> bool:
    """Whether `d` covers `key` for the duplicate check. etcd compares the literal interval here:
    a '\\0' range end is not "to the end", so such a delete conflicts with no put."""
    if not d.range_end:
        return key == d.key
    return d.key <= key < d.range_end


def _branch_writes(branch: tuple[TxnOp, ...]) -> tuple[set[bytes], list[DeleteRange]] | None:
    """The keys a branch puts and its deletes (nested ones included), or None when a key is put
    twice or put and deleted. Mirrors etcd: this level's deletes are checked against every put
    below and at this level; a nested txn's deletes against later siblings' and this level's puts;
    the two branches of a nested txn may put the same key (only one runs)."""
    deletes = [sub for sub in branch if isinstance(sub, DeleteRange)]
    puts: set[bytes] = set()
    for sub in branch:
        if not isinstance(sub, Txn):
            continue
        then_writes, else_writes = _branch_writes(sub.success), _branch_writes(sub.failure)
        if then_writes is None or else_writes is None:
            return None
        then_puts, else_puts = then_writes[0], else_writes[0]
        for key in then_puts:
            if key in puts or any(_deletes_key(d, key) for d in deletes):
                return None
        for key in else_puts:
            if (key in puts and key not in then_puts) or any(_deletes_key(d, key) for d in deletes):
                return None
        puts |= then_puts | else_puts
        deletes += then_writes[1] + else_writes[1]
    for sub in branch:
        if isinstance(sub, Put):
            if sub.key in puts or any(_deletes_key(d, sub.key) for d in deletes):
                return None
            puts.add(sub.key)
    return puts, deletes
