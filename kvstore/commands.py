"""Replicated commands and their results: frozen dataclasses of plain values.

A Raft entry carries one `Batch` (group commit): every KV operation that was waiting on the
leader when the entry was formed. The state machine (`kvstore.mvcc`) applies a batch's operations
in order; each operation gets its own result (or error) and revisions, exactly as if it had been
proposed alone. `Batch.version` lets a newer replica refuse entries it cannot interpret instead
of misapplying them.

Nothing here depends on protobuf or gRPC: `kvstore.convert` maps etcd's wire messages to these
types and back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Union

COMMAND_VERSION = 1


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key, as etcd's mvccpb.KeyValue."""

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes
    lease: int = 0


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareResult(IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


class CompareTarget(IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class EventType(IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Range:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRange:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    key: bytes
    target: CompareTarget
    result: CompareResult
    # The value compared against: int for VERSION/CREATE/MOD/LEASE, bytes for VALUE.
    operand: int | bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class Txn:
    compare: tuple[Compare, ...] = ()
    success: tuple["TxnOp", ...] = ()
    failure: tuple["TxnOp", ...] = ()


TxnOp = Union[Range, Put, DeleteRange, Txn]


@dataclass(frozen=True, slots=True)
class Compact:
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseRevoke:
    id: int


@dataclass(frozen=True, slots=True)
class ReadBarrier:
    """A no-op entry: its commit proves leadership at that point of the log. Linearizable reads
    no longer need it (kvstore.readindex); the state machine still applies it as a no-op."""


@dataclass(frozen=True, slots=True)
class PublishMember:
    """A replica announces its name and client URLs (etcd publishes member attributes the same way)."""

    member_id: int
    name: str
    peer_url: str
    client_urls: tuple[str, ...]


Operation = Union[Range, Put, DeleteRange, Txn, Compact, LeaseGrant, LeaseRevoke, ReadBarrier, PublishMember]


@dataclass(frozen=True, slots=True)
class Batch:
    """One Raft entry: operations applied in order, each with its own result."""

    ops: tuple[Operation, ...]
    version: int = COMMAND_VERSION


# ---- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KVError:
    """An operation refused by the state machine; `code` is a gRPC status code name."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    more: bool
    count: int


@dataclass(frozen=True, slots=True)
class PutResult:
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    responses: tuple["OpResult", ...] = ()


@dataclass(frozen=True, slots=True)
class Done:
    """Result of an operation with nothing to report but success."""


OpResult = Union[RangeResult, PutResult, DeleteResult, TxnResult, Done, KVError]


@dataclass(frozen=True, slots=True)
class Applied:
    """An operation's outcome plus the store revision right after it (the response header's)."""

    result: OpResult
    revision: int


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None
    # Position inside the revision (several events share a revision in a txn or lease revoke).
    sub: int = 0


@dataclass
class ApplyOutcome:
    """What applying one batch produced: per-op results and the events, in revision order."""

    applied: list[Applied] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
