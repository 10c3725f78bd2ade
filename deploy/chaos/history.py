"""Jepsen-style histories: the event format, JSON-lines load/save, and invoke/completion pairing.

A history is a list of events in real-time order. Each event is one JSON object per line:

    {"process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 7, "time": 1234, "index": 0}

`type` is "invoke" or one of the three completions:

    ok    the operation took effect; `value` is its result (the value read, the value written)
    fail  the operation definitely did not take effect (for cas: the compare failed)
    info  unknown outcome (timed out): it may take effect at any time after its invoke, or never

Invariants the runner guarantees and `pair_operations` enforces (a `HistoryError` names the
event that breaks one):

  * a process has at most one outstanding operation;
  * every completion answers the outstanding invoke of the same process, with the same f and key,
    and is not earlier than it;
  * after an "info" a process never issues again (the runner continues under a fresh process id).

An invoke still outstanding when the history ends is treated as "info": the client never heard
back, which is exactly an unknown outcome.

`time` is a monotonic clock in nanoseconds; only differences matter. This module is pure apart
from `load_history`/`save_history`, which are thin wrappers over `parse_lines`/`format_lines`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

EventType = Literal["invoke", "ok", "fail", "info"]
Status = Literal["ok", "fail", "info"]

EVENT_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
_FIELDS = ("process", "type", "f", "key", "value", "time", "index")


class HistoryError(ValueError):
    """A malformed history; the message names the offending event."""


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history. `value` is any JSON value (lists stay lists)."""

    process: int
    type: EventType
    f: str
    key: str
    value: Any
    time: int
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise HistoryError(f"event {dict(data)!r}: missing field(s) {', '.join(missing)}")
        if data["type"] not in EVENT_TYPES:
            raise HistoryError(f"event {data['index']}: type {data['type']!r} is not one of {sorted(EVENT_TYPES)}")
        return cls(
            process=int(data["process"]), type=data["type"], f=str(data["f"]), key=str(data["key"]),
            value=data["value"], time=int(data["time"]), index=int(data["index"]),
        )


@dataclass(frozen=True, slots=True)
class Operation:
    """An invoke paired with its completion.

    `value` is the invoke's value (what was asked: the value to write, [expected, new] for cas);
    `result` is the completion's value (what came back: the value read). `complete_time` is when
    the client heard back, or gave up for "info"; it is None when the history ended first.
    For checking, an "info" operation has no return at all: it stays concurrent forever.
    """

    process: int
    f: str
    key: str
    value: Any
    result: Any
    status: Status
    call_time: int
    complete_time: int | None
    invoke_index: int
    complete_index: int | None

    @property
    def is_info(self) -> bool:
        return self.status == "info"


def pair_operations(events: Iterable[Event]) -> list[Operation]:
    """Pair each invoke with its completion, in invoke order. Raises HistoryError on a broken invariant."""
    pending: dict[int, Event] = {}
    retired: set[int] = set()
    done: dict[int, Operation] = {}
    invokes: list[Event] = []
    for event in events:
        if event.type == "invoke":
            _check_can_invoke(event, pending, retired)
            pending[event.process] = event
            invokes.append(event)
            continue
        invoke = pending.pop(event.process, None)
        _check_completion(event, invoke)
        assert invoke is not None
        if event.type == "info":
            retired.add(event.process)
        done[invoke.index] = _operation(invoke, event)
    return [done.get(invoke.index) or _operation(invoke, None) for invoke in invokes]


def _check_can_invoke(event: Event, pending: Mapping[int, Event], retired: set[int]) -> None:
    if event.process in pending:
        raise HistoryError(
            f"event {event.index}: process {event.process} invokes {event.f} while event "
            f"{pending[event.process].index} is still outstanding")
    if event.process in retired:
        raise HistoryError(
            f"event {event.index}: process {event.process} invokes {event.f} after an info "
            "completion; the runner must continue under a fresh process id")


def _check_completion(event: Event, invoke: Event | None) -> None:
    if invoke is None:
        raise HistoryError(f"event {event.index}: {event.type} from process {event.process} with no outstanding invoke")
    if (invoke.f, invoke.key) != (event.f, event.key):
        raise HistoryError(
            f"event {event.index}: completion {event.f} {event.key!r} does not match invoke "
            f"{invoke.index} ({invoke.f} {invoke.key!r})")
    if event.time < invoke.time:
        raise HistoryError(f"event {event.index}: completes at {event.time}, before its invoke at {invoke.time}")


def _operation(invoke: Event, completion: Event | None) -> Operation:
    status: Status = "info" if completion is None else completion.type  # type: ignore[assignment]
    return Operation(
        process=invoke.process, f=invoke.f, key=invoke.key, value=invoke.value,
        result=None if completion is None else completion.value, status=status,
        call_time=invoke.time, complete_time=None if completion is None else completion.time,
        invoke_index=invoke.index, complete_index=None if completion is None else completion.index,
    )


def parse_lines(lines: Iterable[str]) -> list[Event]:
    """Parse JSON lines (blank lines skipped) into events."""
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise HistoryError(f"line {number}: not JSON: {err}") from None
        if not isinstance(data, dict):
            raise HistoryError(f"line {number}: expected a JSON object, got {type(data).__name__}")
        events.append(Event.from_dict(data))
    return events


def format_lines(events: Iterable[Event | Mapping[str, Any]]) -> Iterator[str]:
    """One compact JSON object per event, without the trailing newline."""
    for event in events:
        data = event.to_dict() if isinstance(event, Event) else Event.from_dict(event).to_dict()
        yield json.dumps(data, separators=(",", ":"))


def load_history(path: str | Path) -> list[Event]:
    with open(path, encoding="utf-8") as handle:
        return parse_lines(handle)


def save_history(path: str | Path, events: Iterable[Event | Mapping[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for line in format_lines(events):
            handle.write(line + "\n")


def render_operations(ops: Sequence[Operation], start: int | None = None) -> str:
    """One line per operation, times in seconds relative to `start` (default: the first invoke)."""
    if not ops:
        return "(no operations)"
    origin = min(op.call_time for op in ops) if start is None else start
    return "\n".join(_render_one(op, origin) for op in sorted(ops, key=lambda op: (op.call_time, op.invoke_index)))


def _render_one(op: Operation, origin: int) -> str:
    if op.f == "read":
        what = f"read -> {_show(op.result)}" if op.status == "ok" else "read -> ?"
    else:
        what = f"{op.f} {_show(op.value)}"
    if op.complete_time is None:
        ended = f"{op.status} (no response)"
    else:
        ended = f"{op.status} {_seconds(op.complete_time - origin)}"
    return f"p{op.process:<4} {op.key:<10} {what:<28} invoke {_seconds(op.call_time - origin)}  {ended}"


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:+.6f}s"


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
