"""Sequential models for the linearizability checker, and their compilation into search input.

A model turns the operations of one key into a `Prepared` problem: an initial state, a step
function and one `SearchOp` per operation that must (or may) be linearized. The search in
`deploy.chaos.checker` only ever calls `step(state, payload)`, which returns the next state, or
None when the operation is not legal in `state`. States must be hashable and never None: they
are half of the search's memo key.

`SearchOp.ret` carries the real-time constraint: an operation must be linearized before any
operation invoked after `ret`. `ret is None` marks an unknown outcome ("info"): no deadline,
and the search may leave it out altogether.

The register model compiles values to small ints (equal JSON values, equal ints) so states and
payloads are cheap to hash and compare, and it simplifies the problem before the search with two
rewrites that keep the answer exactly the same:

  * prune: an "info" read constrains nothing; an "info" write or cas whose new value nobody
    observes (no ok read returns it, no cas expects it) can be dropped: in any linearization
    that includes it, the next operation touching the state must be a blind write, so removing
    it leaves the rest legal.
  * pin: an "info" write or cas that is the only producer of a value v (v not the initial value)
    that an ok read or ok cas observed must have taken effect before that observer returned, so
    it becomes required with `ret` = the earliest such return.

Both turn the few percent of timed-out operations of a chaos run from operations the search
carries forever (and whose subsets it may enumerate) into ordinary ones.

Optional ability `Tidy`: lets the shrinker drop operations that lost what they depended on, so
a minimal failing history for a stale read keeps the writes that explain the values it shows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol, Sequence, runtime_checkable

from deploy.chaos.history import Operation

StepFn = Callable[[Any, Any], Any]

READ, WRITE, CAS = 0, 1, 2
_KINDS = {"read": READ, "write": WRITE, "cas": CAS}


@dataclass(frozen=True, slots=True)
class SearchOp:
    """One operation as the search sees it. `ret is None`: unknown outcome, optional, no deadline.

    `read_only`: the step never changes any state (it is legal or not); the search linearizes
    such an operation as soon as it is legal, without trying the alternatives.
    """

    op: Operation
    payload: Any
    call: int
    ret: int | None
    read_only: bool = False


@dataclass(frozen=True)
class Prepared:
    init: Hashable
    ops: tuple[SearchOp, ...]
    step: StepFn


class Model(Protocol):
    name: str

    def prepare(self, ops: Sequence[Operation]) -> Prepared:
        """Compile the ok and info operations of one key (fails already removed)."""
        ...


@runtime_checkable
class Tidy(Protocol):
    def tidy(self, before: Sequence[Operation], after: Sequence[Operation]) -> list[Operation]:
        """Drop from `after` the operations that depended on operations removed from `before`."""
        ...


def canonical(value: Any) -> str:
    """A string equal for equal JSON values (dict key order ignored)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def register_step(state: int, payload: tuple[int, int, int]) -> int | None:
    kind, a, b = payload
    if kind == WRITE:
        return a
    if kind == READ:
        return state if state == a else None
    return b if state == a else None


@dataclass(frozen=True, slots=True)
class _Compiled:
    op: Operation
    kind: int
    a: int  # read: value seen; write: value written; cas: expected
    b: int  # cas: new value; otherwise unused


class RegisterModel:
    """A single read/write/cas register; `initial` is what a read of a never-written key returns."""

    name = "register"

    def __init__(self, initial: Any = None, simplify: bool = True) -> None:
        self.initial = initial
        self.simplify = simplify

    def prepare(self, ops: Sequence[Operation]) -> Prepared:
        ids: dict[str, int] = {}
        init = _intern(ids, self.initial)
        # failed ops did not happen; an info read has no result and no effect: neither constrains
        compiled = [_compile(op, ids) for op in ops if op.status != "fail" and not (op.is_info and op.f == "read")]
        deadlines: dict[int, int] = {}
        if self.simplify:
            compiled = _prune_unobserved(compiled)
            deadlines = _pin_deadlines(compiled, init)
        search_ops = []
        for c in compiled:
            ret = c.op.complete_time if not c.op.is_info else deadlines.get(id(c))
            search_ops.append(SearchOp(c.op, (c.kind, c.a, c.b), c.op.call_time, ret, c.kind == READ))
        return Prepared(init=init, ops=tuple(search_ops), step=register_step)

    def tidy(self, before: Sequence[Operation], after: Sequence[Operation]) -> list[Operation]:
        """Drop observers of values whose every producer was removed; cascades through cas."""
        explained = {canonical(self.initial)}
        lost = _produced(before) - _produced(after) - explained
        kept = list(after)
        while lost:
            survivors = [op for op in kept if not (_observed_value(op) & lost)]
            if len(survivors) == len(kept):
                break
            lost |= _produced(kept) - _produced(survivors) - explained
            kept = survivors
        return kept


def _intern(ids: dict[str, int], value: Any) -> int:
    return ids.setdefault(canonical(value), len(ids))


def _compile(op: Operation, ids: dict[str, int]) -> _Compiled:
    kind = _KINDS.get(op.f)
    if kind is None:
        raise ValueError(f"register model: operation {op.f!r} on key {op.key!r} (event {op.invoke_index}) "
                         "is not read, write or cas")
    if kind == READ:
        return _Compiled(op, READ, _intern(ids, op.result), 0)
    if kind == WRITE:
        return _Compiled(op, WRITE, _intern(ids, op.value), 0)
    if not (isinstance(op.value, (list, tuple)) and len(op.value) == 2):
        raise ValueError(f"register model: cas on key {op.key!r} (event {op.invoke_index}) needs "
                         f"value [expected, new], got {op.value!r}")
    return _Compiled(op, CAS, _intern(ids, op.value[0]), _intern(ids, op.value[1]))


def _produces(c: _Compiled) -> int | None:
    if c.kind == WRITE:
        return c.a
    return c.b if c.kind == CAS else None


def _prune_unobserved(compiled: list[_Compiled]) -> list[_Compiled]:
    """Drop info writes/cas whose new value nobody observes; repeat, as a dropped cas observed too."""
    while True:
        observed = {c.a for c in compiled if c.kind in (READ, CAS)}
        kept = [c for c in compiled if not (c.op.is_info and _produces(c) not in observed)]
        if len(kept) == len(compiled):
            return kept
        compiled = kept


def _pin_deadlines(compiled: list[_Compiled], init: int) -> dict[int, int]:
    """For info ops that alone produce a value an ok op observed: id(compiled op) -> deadline."""
    producers: dict[int, list[_Compiled]] = {}
    for c in compiled:
        value = _produces(c)
        if value is not None:
            producers.setdefault(value, []).append(c)
    first_seen: dict[int, int] = {}
    for c in compiled:
        if c.kind in (READ, CAS) and not c.op.is_info and c.op.complete_time is not None:
            seen = first_seen.get(c.a)
            if seen is None or c.op.complete_time < seen:
                first_seen[c.a] = c.op.complete_time
    deadlines = {}
    for value, seen in first_seen.items():
        makers = producers.get(value, [])
        if value != init and len(makers) == 1 and makers[0].op.is_info and seen >= makers[0].op.call_time:
            deadlines[id(makers[0])] = seen
    return deadlines


def _produced(ops: Sequence[Operation]) -> set[str]:
    out = set()
    for op in ops:
        if op.f == "write":
            out.add(canonical(op.value))
        elif op.f == "cas" and isinstance(op.value, (list, tuple)) and len(op.value) == 2:
            out.add(canonical(op.value[1]))
    return out


def _observed_value(op: Operation) -> set[str]:
    if op.f == "read" and op.status == "ok":
        return {canonical(op.result)}
    if op.f == "cas" and isinstance(op.value, (list, tuple)) and len(op.value) == 2:
        return {canonical(op.value[0])}
    return set()
