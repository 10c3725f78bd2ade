"""`skiff bench checker`: how fast the linearizability checker checks a register history.

The history is simulated, so it is linearizable by construction: each client runs one operation
at a time; every operation gets a random real-time interval and a linearization point inside it
(a timed-out "info" operation may land any time after its invoke, or never); the points are
replayed in order against a sequential register per key to fill in what reads return and which
cas operations succeed. Write and cas values are unique, as in a Jepsen register workload.

`generate_register_history` is pure (seeded) and shared with the checker's tests. Only the
standard library is imported at module import time; the checker is imported when `run` runs.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.chaos.history import Event

MS = 1_000_000  # ns


@dataclass
class _Planned:
    process: int
    f: str
    key: str
    call: int
    lin: int
    ret: int
    info: bool
    fail: bool  # a write the server definitely refused (no effect)
    value: Any = None
    result: Any = None
    status: str = "ok"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ops", type=int, default=30_000, help="operations in the history (default 30000: "
                        "a 60 s run of 5 clients at 100 ops/s each)")
    parser.add_argument("--clients", type=int, default=5, help="concurrent clients (default 5)")
    parser.add_argument("--keys", type=int, default=5, help="register keys (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--info-rate", type=float, default=0.03,
                        help="fraction of operations that time out with an unknown outcome (default 0.03)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")


def run(args: argparse.Namespace) -> int:
    from deploy.chaos.checker import check_register

    started = time.perf_counter()
    events = generate_register_history(args.ops, args.clients, args.keys, args.seed, info_rate=args.info_rate)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    verdict = check_register(events)
    seconds = time.perf_counter() - started
    ops = len(events) // 2
    rate = ops / seconds if seconds > 0 else float("inf")
    steps = sum(result.steps for result in verdict.keys.values())
    print(f"checked {ops} operations ({args.clients} clients, {args.keys} keys, seed {args.seed}, "
          f"{len(events)} events generated in {generated:.2f}s)")
    print(f"verdict {verdict.outcome}: {seconds:.3f}s, {rate:,.0f} ops/s, {steps} search steps")
    if not verdict.ok:
        print(verdict.render())
    if args.json:
        report = {"ops": ops, "clients": args.clients, "keys": args.keys, "seed": args.seed,
                  "info_rate": args.info_rate, "seconds": seconds, "ops_per_second": rate,
                  "steps": steps, "outcome": verdict.outcome}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return 0 if verdict.ok else 1


def generate_register_history(ops: int, clients: int = 5, keys: int = 3, seed: int = 0, *,
                              info_rate: float = 0.03, fail_rate: float = 0.01,
                              slow_rate: float = 0.02, value_range: int | None = None) -> list[Event]:
    """A linearizable read/write/cas history of about `ops` operations, as `Event`s in time order.

    Written values are unique unless `value_range` is given: then they are drawn from 0..value_range-1,
    which makes the checker's job harder (an observed value no longer names its write).
    """
    from deploy.chaos.history import Event

    rng = random.Random(seed)
    key_names = [f"k{i}" for i in range(max(1, keys))]
    planned = []
    for client in range(clients):
        count = ops // clients + (1 if client < ops % clients else 0)
        planned.extend(_plan_client(rng, client, clients, count, key_names, info_rate, fail_rate, slow_rate))
    _replay(rng, planned, value_range)
    raw = []
    for seq, p in enumerate(planned):
        raw.append((p.call, 2 * seq, p.process, "invoke", p.f, p.key, p.value))
        raw.append((p.ret, 2 * seq + 1, p.process, p.status, p.f, p.key, p.result))
    raw.sort()
    return [Event(process=r[2], type=r[3], f=r[4], key=r[5], value=r[6], time=r[0], index=i)  # type: ignore[arg-type]
            for i, r in enumerate(raw)]


def _plan_client(rng: random.Random, client: int, clients: int, count: int, key_names: list[str],
                 info_rate: float, fail_rate: float, slow_rate: float) -> list[_Planned]:
    """One client's operations back to back; after an info it carries on as a fresh process."""
    process, now, out = client, rng.randrange(MS), []
    for _ in range(count):
        call = now + rng.randrange(1, 2 * MS)
        latency = rng.randrange(40 * MS, 200 * MS) if rng.random() < slow_rate else rng.randrange(MS // 2, 8 * MS)
        f = rng.choices(("read", "write", "cas"), (5, 3, 2))[0]
        info = rng.random() < info_rate
        lin = call + rng.randrange(3 * latency if info else latency + 1)
        if info and rng.random() < 0.5:
            lin = -1  # never takes effect
        fail = not info and f == "write" and rng.random() < fail_rate
        out.append(_Planned(process, f, rng.choice(key_names), call, lin, call + latency, info, fail))
        now = call + latency
        if info:
            process += clients
    return out


def _replay(rng: random.Random, planned: list[_Planned], value_range: int | None) -> None:
    """Fill in values, results and statuses by running the ops at their linearization points."""
    state: dict[str, Any] = {}
    unique = itertools.count(1)

    def fresh() -> int:
        return next(unique) if value_range is None else rng.randrange(value_range)

    for p in sorted(planned, key=lambda p: (p.lin if p.lin >= 0 else p.ret, p.call)):
        current = state.get(p.key)
        effect = p.lin >= 0 and not p.fail
        if p.f == "read":
            p.result = current
        elif p.f == "write":
            p.value = p.result = fresh()
            if effect:
                state[p.key] = p.value
            p.status = "fail" if p.fail else "ok"
        else:
            expected = current if rng.random() < 0.7 else rng.choice([None, fresh()])
            p.value = p.result = [expected, fresh()]
            swapped = effect and expected == current
            if swapped:
                state[p.key] = p.value[1]
            p.status = "ok" if swapped else "fail"
        if p.info:
            p.status, p.result = "info", None
