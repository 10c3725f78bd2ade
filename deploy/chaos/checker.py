"""Linearizability checking for Jepsen-style histories (pure: no I/O, the clock is injectable).

Design
------
P-compositionality: linearizability is local, so the history is split by key and every key is
checked on its own (failed operations are dropped first: they did not take effect).

For one key the model compiles the operations (`deploy.chaos.models`) and the search below is
Wing & Gong's algorithm with Lowe's improvements, as in Porcupine:

  * every operation contributes a call entry and, unless its outcome is unknown, a return entry,
    sorted by time into a doubly linked list (calls before returns at equal times, so touching
    intervals count as concurrent);
  * walking the list from its head, a call entry is an operation that may be linearized next
    (no operation still in the list returned before it was invoked). If the model allows it and
    the resulting configuration was never seen, it is linearized: both its entries are unlinked
    (dancing links, so undoing is O(1)) and the walk restarts at the head;
  * reaching a return entry means that operation had to be linearized by now: backtrack by
    popping the last linearized operation, relinking it and trying the entry after its call;
  * a configuration is (set of linearized operations, model state); each is explored at most once.

The linearized set is kept exact but small: required operations are numbered in call order and
the set is stored as `low` (all operations below it are linearized) plus `window`, a bitmask of
the ones above; operations with unknown outcomes get bits in a separate mask. The memo key is
the tuple (low, window, unknown-bits, state), so its size follows the concurrency, not the
history length.

Unknown outcomes ("info") have no return entry: nothing ever forces them, so the search may
leave them out, and it succeeds as soon as every required operation is linearized.

A budget (seconds and/or steps) turns a pathological search into the outcome "unknown".
On a violation the failing key's operations are shrunk by greedy delta debugging to a small
sub-history that is still not linearizable, for a person to read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence

from deploy.chaos.history import Event, Operation, pair_operations, render_operations
from deploy.chaos.models import Model, Prepared, RegisterModel, Tidy, canonical

Outcome = Literal["ok", "illegal", "unknown"]
Clock = Callable[[], float]

_CHECK_EVERY = 1024  # steps between clock reads


@dataclass(frozen=True)
class KeyResult:
    """The verdict for one key. `failing` is the shrunk sub-history when `outcome == "illegal"`."""

    key: str
    outcome: Outcome
    operations: int
    steps: int
    seconds: float
    failing: tuple[Operation, ...] = ()
    minimal: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    outcome: Outcome
    keys: dict[str, KeyResult]
    operations: int
    seconds: float
    start: int = 0  # time of the first invoke, the origin of rendered times

    def failures(self) -> list[KeyResult]:
        return [result for result in self.keys.values() if result.outcome != "ok"]

    def render(self) -> str:
        lines = [f"linearizability: {self.outcome} ({len(self.keys)} keys, {self.operations} operations, "
                 f"{self.seconds:.3f}s)"]
        for result in self.failures():
            lines.append(f"  key {result.key!r}: {result.outcome} after {result.steps} steps. {result.reason}".rstrip())
            if result.failing:
                label = "minimal" if result.minimal else "reduced (shrinking ran out of time)"
                lines.append(f"  {label} failing sub-history, {len(result.failing)} of {result.operations} operations:")
                lines.extend("    " + line for line in render_operations(result.failing, self.start).splitlines())
        return "\n".join(lines)


@dataclass
class Budget:
    """Seconds and/or steps one search may use; None means unlimited."""

    timeout: float | None = None
    max_steps: int | None = None
    clock: Clock = time.monotonic
    deadline: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.timeout is not None:
            self.deadline = self.clock() + self.timeout

    def exhausted(self, steps: int) -> bool:
        if self.max_steps is not None and steps >= self.max_steps:
            return True
        return self.deadline is not None and self.clock() >= self.deadline

    def next_check(self, steps: int) -> int:
        limit = steps + _CHECK_EVERY
        return limit if self.max_steps is None else min(limit, self.max_steps)


def check_register(history: Sequence[Event] | Sequence[Operation], *, initial: Any = None,
                   timeout: float | None = None, max_steps: int | None = None, shrink: bool = True,
                   shrink_timeout: float = 10.0, clock: Clock = time.monotonic) -> Verdict:
    """Check a read/write/cas register history (every key starts at `initial`)."""
    return check(history, RegisterModel(initial), timeout=timeout, max_steps=max_steps,
                 shrink=shrink, shrink_timeout=shrink_timeout, clock=clock)


def check(history: Sequence[Event] | Sequence[Operation], model: Model, *, timeout: float | None = None,
          max_steps: int | None = None, shrink: bool = True, shrink_timeout: float = 10.0,
          clock: Clock = time.monotonic) -> Verdict:
    """Check every key independently. `timeout` and `max_steps` bound each key's search."""
    started = clock()
    ops = as_operations(history)
    results = {}
    for key, key_ops in partition_by_key(ops).items():
        result = check_key(key, key_ops, model, Budget(timeout, max_steps, clock))
        if result.outcome == "illegal" and shrink:
            failing, minimal = shrink_history(key_ops, model, timeout=shrink_timeout,
                                              max_steps=max_steps, clock=clock)
            result = KeyResult(result.key, result.outcome, result.operations, result.steps,
                               result.seconds, tuple(failing), minimal, result.reason)
        results[key] = result
    outcomes = {result.outcome for result in results.values()}
    outcome: Outcome = "illegal" if "illegal" in outcomes else "unknown" if "unknown" in outcomes else "ok"
    first = min((op.call_time for op in ops), default=0)
    return Verdict(outcome == "ok", outcome, results, len(ops), clock() - started, first)


def as_operations(history: Sequence[Event] | Sequence[Operation]) -> list[Operation]:
    if history and isinstance(history[0], Event):
        return pair_operations(history)  # type: ignore[arg-type]
    return list(history)  # type: ignore[arg-type]


def partition_by_key(ops: Iterable[Operation]) -> dict[str, list[Operation]]:
    """Split by key, dropping failed operations; keys in order of first appearance."""
    parts: dict[str, list[Operation]] = {}
    for op in ops:
        if op.status != "fail":
            parts.setdefault(op.key, []).append(op)
    return parts


def check_key(key: str, ops: Sequence[Operation], model: Model, budget: Budget) -> KeyResult:
    """Search one key's ok/info operations for a linearization."""
    started = budget.clock()
    outcome, steps = search(model.prepare(ops), budget)
    reason = ""
    if outcome == "illegal":
        reason = "No linearization exists."
    elif outcome == "unknown":
        reason = "Search budget exhausted; the history may or may not be linearizable."
    return KeyResult(key, outcome, len(ops), steps, budget.clock() - started, reason=reason)


def check_operations(ops: Sequence[Operation], model: Model, budget: Budget | None = None) -> Outcome:
    """The outcome for operations of a single key (no shrinking)."""
    return search(model.prepare([op for op in ops if op.status != "fail"]), budget or Budget())[0]


class _Entries:
    """The sorted call/return entries as a doubly linked list over arrays; node 0 is the head."""

    def __init__(self, prepared: Prepared) -> None:
        ops = prepared.ops
        order = sorted([(s.call, 0, i) for i, s in enumerate(ops)]
                       + [(s.ret, 1, i) for i, s in enumerate(ops) if s.ret is not None])
        size = len(order)
        self.next = list(range(1, size + 1)) + [-1]
        self.prev = [-1] + list(range(size))
        self.op = [-1] * (size + 1)
        self.is_call = [False] * (size + 1)
        self.partner = [-1] * (size + 1)  # call node -> its return node, or -1
        call_node = [0] * len(ops)
        self.rank = [-1] * len(ops)  # required ops: position in call order
        self.unknown_bit = [0] * len(ops)
        ranks = unknowns = 0
        for node, (_, kind, i) in enumerate(order, 1):
            self.op[node] = i
            if kind == 0:
                self.is_call[node] = True
                call_node[i] = node
                if ops[i].ret is None:
                    self.unknown_bit[i] = 1 << unknowns
                    unknowns += 1
                else:
                    self.rank[i] = ranks
                    ranks += 1
            else:
                self.partner[call_node[i]] = node
        self.required = ranks

    def unlink(self, call: int) -> None:
        """Take an operation's call entry, then its return entry, out of the list."""
        nxt, prv = self.next, self.prev
        for node in (call, self.partner[call]):
            if node >= 0:
                p, n = prv[node], nxt[node]
                nxt[p] = n
                if n >= 0:
                    prv[n] = p

    def relink(self, call: int) -> None:
        """Undo `unlink(call)`; valid only in reverse order of the unlinks (dancing links)."""
        nxt, prv = self.next, self.prev
        for node in (self.partner[call], call):
            if node >= 0:
                p, n = prv[node], nxt[node]
                nxt[p] = node
                if n >= 0:
                    prv[n] = node


def search(prepared: Prepared, budget: Budget) -> tuple[Outcome, int]:
    """Wing-Gong-Lowe search; returns the outcome and the number of linearization steps taken.

    One partial-order reduction on top: a read-only operation (one that never changes any state)
    that is legal now can be moved to the front of any linearization of the rest, so it is
    linearized without a choice point; if that leads nowhere, neither does the configuration
    before it, and the search backtracks past it. (A write of the current value is no such
    operation: where it really belongs it may overwrite something else.)

    Unknown-outcome calls are tried in time order like the others: measured on simulated chaos
    histories, trying them only after the required ones made the search several times slower.

    The loop is long on purpose: it is the hot path, so it keeps everything in locals.
    """
    entries = _Entries(prepared)
    nxt, node_op, is_call, partner = entries.next, entries.op, entries.is_call, entries.partner
    rank, unknown_bit, step, unlink, relink = entries.rank, entries.unknown_bit, prepared.step, entries.unlink, entries.relink
    payloads = [s.payload for s in prepared.ops]
    read_only = [s.read_only for s in prepared.ops]
    remaining = entries.required
    state, low, window, unknown = prepared.init, 0, 0, 0
    seen: set[tuple[int, int, int, Any]] = set()
    stack: list[tuple[int, Any, int, int, int, bool]] = []
    steps, check_at = 0, budget.next_check(0)
    node = nxt[0]
    while remaining:
        if is_call[node]:
            i = node_op[node]
            new = step(state, payloads[i])
            if new is None:
                node = nxt[node]
                continue
            r = rank[i]
            if r < 0:
                key = (low, window, unknown | unknown_bit[i], new)
            else:
                new_window, new_low = window | (1 << (r - low)), low
                if r == low:  # the prefix grows: shift out the run of ones at the bottom
                    run = (new_window ^ (new_window + 1)).bit_length() - 1
                    new_window >>= run
                    new_low += run
                key = (new_low, new_window, unknown, new)
            if key not in seen:
                seen.add(key)
                stack.append((node, state, low, window, unknown, read_only[i]))
                low, window, unknown, state = key
                unlink(node)
                remaining -= r >= 0
                steps += 1
                if steps >= check_at:
                    if budget.exhausted(steps):
                        return "unknown", steps
                    check_at = budget.next_check(steps)
                node = nxt[0]
                continue
            if not read_only[i]:
                node = nxt[node]
                continue
            # else: its successor configuration was refuted, so is this one: backtrack
        # backtrack: undo the last choice, popping the choiceless read-only steps above it
        forced = True
        while forced:
            if not stack:
                return "illegal", steps
            node, state, low, window, unknown, forced = stack.pop()
            relink(node)
            remaining += partner[node] >= 0
        node = nxt[node]
    return "ok", steps


def shrink_history(ops: Sequence[Operation], model: Model, *, timeout: float = 10.0,
                   max_steps: int | None = None, clock: Clock = time.monotonic) -> tuple[list[Operation], bool]:
    """Greedy delta debugging: remove chunks of operations (halving the chunk size) while the rest
    stays non-linearizable. Returns the reduced operations and whether the result is 1-minimal
    (no single operation can be removed) rather than cut short by `timeout`.

    With a `Tidy` model, removing an operation also removes the operations that depended on it
    (a read of the value it wrote), so the result explains itself.
    """
    deadline = clock() + timeout
    current = [op for op in ops if op.status != "fail"]
    chunk = max(1, len(current) // 2)
    while True:
        current, removed, finished = _shrink_pass(current, chunk, model, deadline, max_steps, clock)
        if not finished:
            return current, False
        if chunk == 1 and not removed:
            return current, True
        chunk = max(1, chunk // 2)


def _shrink_pass(current: list[Operation], chunk: int, model: Model, deadline: float,
                 max_steps: int | None, clock: Clock) -> tuple[list[Operation], bool, bool]:
    """One sweep removing `chunk` consecutive operations at a time; (ops, removed any, in time)."""
    removed = False
    start = 0
    while start < len(current):
        candidate = current[:start] + current[start + chunk:]
        if isinstance(model, Tidy):
            candidate = model.tidy(current, candidate)
        remaining = deadline - clock()
        if remaining <= 0:
            return current, removed, False
        outcome, _ = search(model.prepare(candidate), Budget(remaining, max_steps, clock))
        if outcome == "illegal":
            current, removed = candidate, True
        else:
            start += chunk
    return current, removed, True


@dataclass(frozen=True)
class SetResult:
    """One set: acknowledged adds missing from a final read are `lost`; elements read that no add
    ever tried are `unexpected`; unacknowledged (info/fail) adds that are present, `recovered`.
    `present` counts the distinct elements the final reads returned."""

    key: str
    outcome: Outcome
    attempted: int
    acknowledged: int
    present: int
    lost: tuple[Any, ...] = ()
    unexpected: tuple[Any, ...] = ()
    recovered: tuple[Any, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class SetVerdict:
    ok: bool
    outcome: Outcome
    sets: dict[str, SetResult]

    def render(self) -> str:
        lines = [f"set: {self.outcome} ({len(self.sets)} sets)"]
        for r in self.sets.values():
            lines.append(f"  {r.key!r}: {r.outcome}: {r.attempted} attempted, {r.acknowledged} acknowledged, "
                         f"{r.present} present, {len(r.lost)} lost, {len(r.unexpected)} unexpected, "
                         f"{len(r.recovered)} recovered. {r.reason}".rstrip())
            if r.lost:
                lines.append(f"    lost: {_preview(r.lost)}")
            if r.unexpected:
                lines.append(f"    unexpected: {_preview(r.unexpected)}")
        return "\n".join(lines)


def check_set(history: Sequence[Event] | Sequence[Operation]) -> SetVerdict:
    """Check add/read set histories, one set per key, against the final reads of each set.

    The final reads are the successful reads invoked after the last add was invoked (a run reads
    the set from every replica at the end); with none, the last successful read. In each, every
    add acknowledged before that read began must be present and nothing may be that no add ever
    tried; adds concurrent with the read, or with an unknown or failed outcome, may or may not be.
    """
    by_key: dict[str, list[Operation]] = {}
    for op in as_operations(history):
        by_key.setdefault(op.key, []).append(op)
    results = {key: _check_one_set(key, ops) for key, ops in by_key.items()}
    outcomes = {r.outcome for r in results.values()}
    outcome: Outcome = "illegal" if "illegal" in outcomes else "unknown" if "unknown" in outcomes else "ok"
    return SetVerdict(outcome == "ok", outcome, results)


def _check_one_set(key: str, ops: Sequence[Operation]) -> SetResult:
    adds = [op for op in ops if op.f == "add"]
    acked = [op for op in adds if op.status == "ok"]
    reads = [op for op in ops if op.f == "read" and op.status == "ok"]
    if not reads:
        return SetResult(key, "unknown", len(adds), len(acked), 0, reason="No successful final read.")
    last_add = max((op.call_time for op in adds), default=None)
    finals = [op for op in reads if last_add is None or op.call_time > last_add]
    finals = finals or [max(reads, key=lambda op: (op.complete_time or 0, op.invoke_index))]
    attempted = {canonical(op.value) for op in adds}
    lost: dict[str, Any] = {}
    unexpected: dict[str, Any] = {}
    seen: set[str] = set()
    for read in finals:
        present = {canonical(element): element for element in (read.result or [])}
        seen.update(present)
        for op in acked:
            text = canonical(op.value)
            if op.complete_time is not None and op.complete_time < read.call_time and text not in present:
                lost[text] = op.value
        unexpected.update((text, value) for text, value in present.items() if text not in attempted)
    recovered = tuple(op.value for op in adds if op.status != "ok" and canonical(op.value) in seen)
    outcome: Outcome = "illegal" if lost or unexpected else "ok"
    reason = f"Checked {len(finals)} final read(s)." if len(finals) > 1 else ""
    return SetResult(key, outcome, len(adds), len(acked), len(seen), tuple(lost.values()),
                     tuple(unexpected.values()), recovered, reason)


def _preview(values: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(canonical(v) for v in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")
