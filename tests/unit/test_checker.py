"""The linearizability checker on hand-written histories, the history format, the set check, the bench.

Times in these histories are milliseconds; `None` as a return time means "no response" (info).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pytest

from deploy.chaos.checker import Budget, check, check_register, check_set, check_operations, shrink_history
from deploy.chaos.history import (
    Event, HistoryError, Operation, load_history, pair_operations, render_operations, save_history,
)
from deploy.chaos.models import RegisterModel

_next_index = [0]


def op(process: int, f: str, value: Any, call: int, ret: int | None, status: str = "ok",
       result: Any = None, key: str = "x") -> Operation:
    _next_index[0] += 1
    return Operation(process=process, f=f, key=key, value=value, result=result, status=status,  # type: ignore[arg-type]
                     call_time=call * 1_000_000, complete_time=None if ret is None else ret * 1_000_000,
                     invoke_index=_next_index[0], complete_index=None)


def w(p: int, value: Any, call: int, ret: int | None, status: str = "ok", key: str = "x") -> Operation:
    return op(p, "write", value, call, ret, status, value, key)


def r(p: int, result: Any, call: int, ret: int | None, status: str = "ok", key: str = "x") -> Operation:
    return op(p, "read", None, call, ret, status, result if status == "ok" else None, key)


def cas(p: int, expected: Any, new: Any, call: int, ret: int | None, status: str = "ok", key: str = "x") -> Operation:
    return op(p, "cas", [expected, new], call, ret, status, [expected, new], key)


def to_events(ops: Sequence[Operation]) -> list[Event]:
    """The events a runner would record for these operations (invokes first at equal times)."""
    raw = []
    for seq, o in enumerate(ops):
        raw.append((o.call_time, 0, seq, Event(o.process, "invoke", o.f, o.key, o.value, o.call_time, 0)))
        if o.complete_time is not None:
            raw.append((o.complete_time, 1, seq, Event(o.process, o.status, o.f, o.key, o.result, o.complete_time, 0)))
    raw.sort(key=lambda item: item[:3])
    return [Event(e.process, e.type, e.f, e.key, e.value, e.time, i) for i, (*_, e) in enumerate(raw)]


def outcome(ops: Sequence[Operation], **kwargs: Any) -> str:
    """The verdict both with and without the register model's simplifications (they must agree)."""
    plain = check(ops, RegisterModel(kwargs.get("initial"), simplify=False), shrink=False).outcome
    simplified = check_register(ops, shrink=False, **kwargs).outcome
    assert plain == simplified
    return simplified


# --- linearizable ---------------------------------------------------------------------------------

def test_empty_history_check_operations() -> None:
    assert check_register([]).ok


def test_sequential_history() -> None:
    assert outcome([w(1, 1, 0, 1), r(2, 1, 2, 3), w(1, 2, 4, 5), r(2, 2, 6, 7)]) == "ok"


def test_read_of_absent_key_returns_null() -> None:
    assert outcome([r(1, None, 0, 1), w(1, 1, 2, 3), r(1, 1, 4, 5)]) == "ok"


def test_concurrent_reads_may_see_old_or_new_value() -> None:
    history = [w(1, 1, 0, 10), r(2, None, 1, 2), r(3, 1, 3, 4), r(2, 1, 5, 6), r(4, 1, 11, 12)]
    assert outcome(history) == "ok"


def test_concurrent_writes_take_effect_in_either_order() -> None:
    assert outcome([w(1, 1, 0, 10), w(2, 2, 1, 11), r(3, 1, 12, 13)]) == "ok"
    assert outcome([w(1, 1, 0, 10), w(2, 2, 1, 11), r(3, 2, 12, 13)]) == "ok"


def test_touching_intervals_count_as_concurrent() -> None:
    # the read is invoked at the instant the write returns: either order is allowed
    assert outcome([w(1, 1, 0, 5), r(2, None, 5, 6)]) == "ok"


def test_cas_chain() -> None:
    history = [w(1, 0, 0, 1), cas(2, 0, 1, 2, 3), cas(3, 1, 2, 4, 5), r(1, 2, 6, 7)]
    assert outcome(history) == "ok"


def test_concurrent_cas_one_wins_one_fails() -> None:
    history = [w(1, 0, 0, 1), cas(2, 0, 1, 2, 6), cas(3, 0, 2, 3, 7, status="fail"), r(1, 1, 8, 9)]
    assert outcome(history) == "ok"


def test_initial_value() -> None:
    assert outcome([r(1, 0, 0, 1), cas(1, 0, 5, 2, 3)], initial=0) == "ok"
    assert outcome([r(1, 0, 0, 1)]) == "illegal"


# --- not linearizable -----------------------------------------------------------------------------

def test_stale_read() -> None:
    assert outcome([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)]) == "illegal"


def test_lost_write() -> None:
    assert outcome([w(1, 1, 0, 1), r(2, None, 2, 3)]) == "illegal"


def test_read_of_never_written_value() -> None:
    assert outcome([w(1, 1, 0, 1), r(2, 7, 2, 3)]) == "illegal"


def test_reads_cannot_flip_back_after_writes_complete() -> None:
    assert outcome([w(1, 1, 0, 10), w(2, 2, 1, 11), r(3, 1, 12, 13), r(3, 2, 14, 15)]) == "illegal"


def test_two_concurrent_cas_from_same_value_both_succeed() -> None:
    assert outcome([w(1, 0, 0, 1), cas(2, 0, 1, 2, 6), cas(3, 0, 2, 3, 7)]) == "illegal"


def test_failed_write_did_not_happen() -> None:
    assert outcome([w(1, 1, 0, 1, status="fail"), r(2, None, 2, 3)]) == "ok"
    assert outcome([w(1, 1, 0, 1, status="fail"), r(2, 1, 2, 3)]) == "illegal"


# --- unknown outcomes -----------------------------------------------------------------------------

def test_info_write_observed_later() -> None:
    assert outcome([w(1, 1, 0, None, status="info"), r(2, None, 5, 6), r(2, 1, 50, 51)]) == "ok"


def test_info_write_never_observed() -> None:
    assert outcome([w(1, 1, 0, None, status="info"), r(2, None, 5, 6), r(2, None, 50, 51)]) == "ok"


def test_info_write_takes_effect_after_the_client_gave_up() -> None:
    # the client gave up at 10 (info completion), the effect shows at 100
    history = [w(1, 1, 0, 10, status="info"), r(2, None, 20, 21), w(3, 2, 30, 31), r(2, 1, 100, 101)]
    assert outcome(history) == "ok"


def test_info_cas_may_or_may_not_swap() -> None:
    base = [w(1, 0, 0, 1), cas(2, 0, 1, 2, None, status="info")]
    assert outcome(base + [r(3, 1, 10, 11)]) == "ok"
    assert outcome(base + [r(3, 0, 10, 11)]) == "ok"


def test_info_write_cannot_be_seen_before_its_invoke() -> None:
    assert outcome([r(2, 1, 0, 1), w(1, 1, 5, None, status="info")]) == "illegal"


def test_info_write_cannot_unhappen() -> None:
    history = [w(1, 1, 0, None, status="info"), r(2, 1, 5, 6), r(2, None, 7, 8)]
    assert outcome(history) == "illegal"


def test_info_read_constrains_nothing() -> None:
    assert outcome([w(1, 1, 0, 1), r(2, None, 2, None, status="info"), r(3, 1, 4, 5)]) == "ok"


def test_many_info_ops_all_skippable() -> None:
    history = [w(p, p, p, None, status="info") for p in range(1, 11)] + [r(99, None, 100, 101)]
    assert outcome(history) == "ok"


def test_info_writes_with_repeated_values() -> None:
    # two producers of 1: neither is pinned; the second read needs the later info write of 1
    history = [w(1, 1, 0, None, status="info"), r(2, 1, 5, 6), w(3, 2, 7, 8), w(4, 1, 9, None, status="info"),
               r(2, 1, 20, 21)]
    assert outcome(history) == "ok"
    assert outcome(history[:4] + [r(2, 1, 20, 21)] + [r(2, 2, 22, 23)]) == "illegal"


# --- keys, verdicts, budgets ----------------------------------------------------------------------

def test_keys_are_checked_independently() -> None:
    history = [w(1, 1, 0, 1, key="a"), r(2, 1, 2, 3, key="a"), w(1, 1, 4, 5, key="b"), r(2, None, 6, 7, key="b")]
    verdict = check_register(history)
    assert not verdict.ok and verdict.outcome == "illegal"
    assert verdict.keys["a"].outcome == "ok" and verdict.keys["b"].outcome == "illegal"
    assert [result.key for result in verdict.failures()] == ["b"]


def test_verdict_from_events_and_rendering() -> None:
    history = [w(1, 1, 1000, 1001), w(1, 2, 1002, 1003), r(2, 1, 1004, 1005), r(3, 2, 1004, 1006)]
    verdict = check_register(to_events(history))
    assert verdict.outcome == "illegal" and verdict.operations == 4
    text = verdict.render()
    assert "key 'x': illegal" in text
    assert "read -> 1" in text and "invoke +0.004000s" in text
    assert len(verdict.keys["x"].failing) == 3 and verdict.keys["x"].minimal


def test_budget_makes_a_search_unknown() -> None:
    # 12 concurrent writes then a read of a value nobody wrote: refuting it takes many steps
    history = [w(p, p, 0, 100) for p in range(12)] + [r(99, "nobody", 200, 201)]
    assert check(history, RegisterModel(simplify=False), max_steps=50, shrink=False).outcome == "unknown"
    verdict = check_register(history, max_steps=50, shrink=False)
    assert verdict.outcome == "unknown" and not verdict.ok
    assert "budget" in verdict.render()


def test_timeout_uses_the_injected_clock() -> None:
    ticks = iter(range(0, 10**6, 10))
    history = [w(p, p, 0, 100) for p in range(14)] + [r(99, "nobody", 200, 201)]
    model = RegisterModel(simplify=False)
    assert check_operations(history, model, Budget(timeout=5, clock=lambda: float(next(ticks)))) == "unknown"


def test_shrink_keeps_the_writes_that_explain_a_stale_read() -> None:
    noise = [w(5, 100 + i, 20 + 3 * i, 21 + 3 * i, key="x") for i in range(10)]
    noise += [r(6, 100 + i, 22 + 3 * i, 22 + 3 * i) for i in range(10)]
    history = [w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)] + noise
    failing, minimal = shrink_history(history, RegisterModel())
    assert minimal
    assert sorted((o.f, o.value if o.f != "read" else o.result) for o in failing) == [
        ("read", 1), ("write", 1), ("write", 2)]
    assert check_operations(failing, RegisterModel()) == "illegal"


def test_unknown_operation_is_an_error() -> None:
    with pytest.raises(ValueError, match="'add' on key 'x'"):
        check_register([op(1, "add", 1, 0, 1)])


# --- history format -------------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path: Path) -> None:
    events = to_events([w(1, 1, 0, 2), cas(2, 1, [3, "x"], 1, 3), r(3, {"a": [1, 2]}, 1, 4, status="info")])
    path = tmp_path / "history.jsonl"
    save_history(path, events)
    assert load_history(path) == events
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"process", "type", "f", "key", "value", "time", "index"}
    save_history(path, [e.to_dict() for e in events])
    assert load_history(path) == events


def test_pair_operations() -> None:
    events = to_events([w(1, 1, 0, 2), r(2, 1, 1, 3), w(3, 2, 4, None, status="info")])
    ops = pair_operations(events)
    assert [(o.process, o.f, o.status) for o in ops] == [(1, "write", "ok"), (2, "read", "ok"), (3, "write", "info")]
    assert ops[1].result == 1 and ops[1].complete_time == 3_000_000
    assert ops[2].complete_time is None and ops[2].is_info  # history ended before it completed


@pytest.mark.parametrize("events, message", [
    ([Event(1, "ok", "read", "x", 1, 0, 0)], "no outstanding invoke"),
    ([Event(1, "invoke", "read", "x", None, 0, 0), Event(1, "invoke", "read", "x", None, 1, 1)], "still outstanding"),
    ([Event(1, "invoke", "read", "x", None, 0, 0), Event(1, "ok", "write", "x", 1, 1, 1)], "does not match"),
    ([Event(1, "invoke", "read", "x", None, 5, 0), Event(1, "ok", "read", "x", 1, 4, 1)], "before its invoke"),
    ([Event(1, "invoke", "write", "x", 1, 0, 0), Event(1, "info", "write", "x", 1, 1, 1),
      Event(1, "invoke", "read", "x", None, 2, 2)], "fresh process id"),
])
def test_pair_operations_rejects_broken_histories(events: list[Event], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        pair_operations(events)


def test_malformed_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"process": 1}\n')
    with pytest.raises(HistoryError, match="missing field"):
        load_history(path)
    path.write_text("not json\n")
    with pytest.raises(HistoryError, match="line 1: not JSON"):
        load_history(path)


def test_render_operations() -> None:
    text = render_operations([w(3, 7, 10, 12), r(4, None, 11, None, status="info")], start=0)
    lines = text.splitlines()
    assert lines[0].startswith("p3") and "write 7" in lines[0] and "ok +0.012000s" in lines[0]
    assert "read -> ?" in lines[1] and "info (no response)" in lines[1]


# --- set ------------------------------------------------------------------------------------------

def add(p: int, element: Any, call: int, ret: int | None, status: str = "ok") -> Operation:
    return op(p, "add", element, call, ret, status, element, key="s")


def final_read(elements: list[Any], call: int = 100) -> Operation:
    return op(9, "read", None, call, call + 1, "ok", elements, key="s")


def test_set_all_acknowledged_present() -> None:
    history = [add(1, 1, 0, 1), add(2, 2, 0, 2), add(3, 3, 0, None, status="info"), add(4, 4, 3, 4, status="fail"),
               final_read([1, 2, 3])]
    verdict = check_set(to_events(history))
    assert verdict.ok and verdict.sets["s"].recovered == (3,)
    assert check_set(history[:4] + [final_read([1, 2, 3, 4])]).ok  # a failed add may show up anyway


def test_set_lost_and_unexpected() -> None:
    verdict = check_set([add(1, 1, 0, 1), add(2, 2, 0, 2), final_read([2, 99])])
    assert not verdict.ok and verdict.outcome == "illegal"
    assert verdict.sets["s"].lost == (1,) and verdict.sets["s"].unexpected == (99,)
    assert "lost: 1" in verdict.render() and "unexpected: 99" in verdict.render()


def test_set_add_concurrent_with_final_read_may_be_missing() -> None:
    assert check_set([add(1, 1, 0, 1), add(2, 2, 99, 102), final_read([1], call=100)]).ok


def test_set_every_final_read_is_checked() -> None:
    history = [add(1, 1, 0, 1), add(2, 2, 0, 2), final_read([1, 2], call=100), final_read([2], call=110)]
    verdict = check_set(history)
    assert verdict.outcome == "illegal" and verdict.sets["s"].lost == (1,)
    # a read before the last add is not a final read
    assert check_set([add(1, 1, 0, 1), final_read([], call=2), add(2, 2, 5, 6), final_read([1, 2], call=10)]).ok


def test_set_without_final_read_is_unknown() -> None:
    verdict = check_set([add(1, 1, 0, 1)])
    assert verdict.outcome == "unknown" and not verdict.ok


# --- bench ----------------------------------------------------------------------------------------

def test_bench_checker_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli.main import main

    out = tmp_path / "bench.json"
    assert main(["bench", "checker", "--ops", "600", "--clients", "3", "--keys", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ops"] == 600 and report["outcome"] == "ok" and report["ops_per_second"] > 0
    assert "ops/s" in capsys.readouterr().out
