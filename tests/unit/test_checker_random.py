"""The checker against a brute-force reference on small random histories, and on large simulated
chaos histories that are linearizable by construction, before and after corrupting them."""
from __future__ import annotations

import dataclasses
import json
import random
from functools import lru_cache
from typing import Any, Sequence

import pytest

from deploy.bench.checker import generate_register_history
from deploy.chaos.checker import check, check_register, check_operations, partition_by_key
from deploy.chaos.history import Operation, pair_operations
from deploy.chaos.models import RegisterModel


def brute_force(ops: Sequence[Operation]) -> bool:
    """Every order of every subset of the unknown outcomes; only for a handful of operations."""
    live = [o for o in ops if o.status != "fail"]

    def text(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    def step(state: str, o: Operation) -> str | None:
        if o.f == "read":
            return state if o.status == "info" or text(o.result) == state else None
        if o.f == "write":
            return text(o.value)
        return text(o.value[1]) if state == text(o.value[0]) else None

    @lru_cache(maxsize=None)
    def solve(remaining: frozenset[int], state: str) -> bool:
        if all(live[i].status == "info" for i in remaining):
            return True
        for i in remaining:
            blocked = any(live[j].status == "ok" and live[j].complete_time < live[i].call_time  # type: ignore[operator]
                          for j in remaining)
            new = None if blocked else step(state, live[i])
            if new is not None and solve(remaining - {i}, new):
                return True
        return False

    return solve(frozenset(range(len(live))), text(None))


def random_history(rng: random.Random, size: int) -> list[Operation]:
    """Arbitrary small histories over values {1, 2}: a mix of legal and illegal ones."""
    ops = []
    for index in range(size):
        call = rng.randrange(12)
        status = rng.choices(["ok", "info", "fail"], [7, 2, 1])[0]
        ret = call + rng.randrange(6)
        f = rng.choice(["read", "write", "cas"])
        value = {"read": None, "write": rng.choice([1, 2]), "cas": [rng.choice([None, 1, 2]), rng.choice([1, 2])]}[f]
        result = rng.choice([None, 1, 2]) if f == "read" else value
        ops.append(Operation(index, f, "x", value, result if status != "info" else None, status, call,  # type: ignore[arg-type]
                             None if status == "info" and rng.random() < 0.5 else ret, index, None))
    return ops


def mutated_simulation(seed: int) -> list[Operation]:
    """A small linearizable simulated history, with one read's result changed half of the time."""
    rng = random.Random(seed)
    ops = pair_operations(generate_register_history(rng.randrange(4, 9), 3, 1, seed, info_rate=0.25, value_range=3))
    reads = [i for i, o in enumerate(ops) if o.f == "read" and o.status == "ok"]
    if reads and rng.random() < 0.5:
        i = rng.choice(reads)
        ops[i] = dataclasses.replace(ops[i], result=rng.choice([None, 0, 1, 2]))
    return ops


def verdicts(ops: Sequence[Operation]) -> tuple[str, str]:
    simplified = check_operations(ops, RegisterModel())
    plain = check_operations(ops, RegisterModel(simplify=False))
    return simplified, plain


def test_agrees_with_brute_force_on_random_histories() -> None:
    rng = random.Random(7)
    seen = {True: 0, False: 0}
    for _ in range(600):
        ops = random_history(rng, rng.randrange(1, 8))
        expected = brute_force(ops)
        assert verdicts(ops) == (("ok", "ok") if expected else ("illegal", "illegal")), ops
        seen[expected] += 1
    assert min(seen.values()) > 100


def test_agrees_with_brute_force_on_mutated_simulations() -> None:
    seen = {True: 0, False: 0}
    for seed in range(400):
        ops = mutated_simulation(seed)
        expected = brute_force(ops)
        assert verdicts(ops) == (("ok", "ok") if expected else ("illegal", "illegal")), seed
        seen[expected] += 1
    assert min(seen.values()) > 50


# --- large simulated histories --------------------------------------------------------------------

def simulated(seed: int, value_range: int | None = None) -> list[Operation]:
    events = generate_register_history(1200, 5, 3, seed, info_rate=0.05, value_range=value_range)
    return pair_operations(events)


@pytest.mark.parametrize("seed", range(6))
def test_simulated_histories_are_linearizable(seed: int) -> None:
    ops = simulated(seed, value_range=None if seed % 2 else 4)
    for simplify in (True, False):
        verdict = check(ops, RegisterModel(simplify=simplify), max_steps=200_000)
        assert verdict.ok, verdict.render()
    assert sum(o.status == "info" for o in ops) > 20


def test_a_minute_of_five_clients_takes_few_search_steps() -> None:
    # 60 s x 5 clients x ~100 ops/s; the step count is a deterministic stand-in for time
    ops = pair_operations(generate_register_history(30_000, 5, 5, 1, info_rate=0.03))
    verdict = check_register(ops, max_steps=500_000)
    assert verdict.ok
    assert sum(result.steps for result in verdict.keys.values()) < 2 * len(ops)


Corrupted = tuple[list[Operation], list[Operation]]  # the history, and the operations to blame


def corrupt_impossible_read(ops: list[Operation], rng: random.Random) -> Corrupted:
    i = rng.choice([i for i, o in enumerate(ops) if o.f == "read" and o.status == "ok"])
    ops = list(ops)
    ops[i] = dataclasses.replace(ops[i], result="never written")
    return ops, [ops[i]]


def corrupt_drop_observed_write(ops: list[Operation], rng: random.Random) -> Corrupted:
    writers = {(o.key, o.value): o for o in ops if o.f == "write"}
    read = rng.choice([o for o in ops if o.f == "read" and o.status == "ok" and (o.key, o.result) in writers])
    writer = writers[read.key, read.result]
    observers = [o for o in ops if o.key == read.key and o.status == "ok" and
                 (o.f == "read" and o.result == writer.value or o.f == "cas" and o.value[0] == writer.value)]
    return [o for o in ops if o is not writer], observers


def corrupt_stale_read(ops: list[Operation], rng: random.Random) -> Corrupted:
    """A read returns a write's value after a later write had completed before the read began."""
    writes = [o for o in ops if o.f == "write" and o.status == "ok"]
    candidates: list[tuple[int, Operation]] = []
    for i, o in enumerate(ops):
        if o.f == "read" and o.status == "ok":
            done = [w for w in writes if w.key == o.key and w.complete_time < o.call_time]  # type: ignore[operator]
            if done:
                last = max(done, key=lambda w: w.call_time)
                stale = [a for a in done if a.complete_time < last.call_time]  # type: ignore[operator]
                candidates.extend((i, a) for a in stale[-3:] if a.value != o.result)
    i, old = rng.choice(candidates)
    ops = list(ops)
    ops[i] = dataclasses.replace(ops[i], result=old.value)
    return ops, [ops[i]]


@pytest.mark.parametrize("corrupt", [corrupt_impossible_read, corrupt_drop_observed_write, corrupt_stale_read])
@pytest.mark.parametrize("seed", range(3))
def test_corruptions_are_caught_and_shrunk(corrupt: Any, seed: int) -> None:
    ops, culprits = corrupt(simulated(seed), random.Random(seed))
    verdict = check_register(ops, max_steps=200_000)
    assert verdict.outcome == "illegal"
    [failed] = verdict.failures()
    key = culprits[0].key
    assert failed.key == key and failed.minimal
    assert any(c in failed.failing for c in culprits) and len(failed.failing) <= 5, verdict.render()
    assert check_operations(failed.failing, RegisterModel()) == "illegal"
    assert all(r.outcome == "ok" for k, r in verdict.keys.items() if k != key)
    assert set(partition_by_key(failed.failing)) == {key}
