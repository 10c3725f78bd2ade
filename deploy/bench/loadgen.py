"""Closed-loop load generator for etcd-v3 stores: N client processes x K requests in flight.

Each client process (multiprocessing, *spawn* context: gRPC must never cross a fork) runs an
asyncio loop with K driver coroutines over grpc.aio channels, one channel per endpoint. Driver
`j` of process `i` starts on endpoint `(i*K + j) mod len(endpoints)`, so the load spreads over
every replica; on an error it pauses briefly and moves to the next endpoint (a store that
forwards to its leader answers from any replica, and a dead replica fails fast).

Every process records, for each successful request, its start and end time on the system-wide
monotonic clock, and every error with its time and gRPC status code. The parent merges them:
throughput counts the requests that completed inside the measured window (after a warm-up),
latency percentiles are taken over those requests. Keeping raw times (a few doubles per request)
also lets the failover analysis find the longest gap between successful writes.

All processes start together behind a barrier that the parent joins too, so the parent knows
when the load begins (the failover bench kills the leader at a chosen moment after that).
"""
from __future__ import annotations

import asyncio
import math
import multiprocessing
import queue as queue_module
import random
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable

OPERATIONS = ("put", "get", "sget")  # put, linearizable get, serializable get
KEY_PREFIX = b"skiff-bench/"


@dataclass(frozen=True)
class LoadSpec:
    """What load to generate.  `ops` > 0 runs a fixed number of requests instead of a duration."""

    op: str
    endpoints: tuple[str, ...]
    clients: int = 3
    inflight: int = 64
    value_size: int = 100
    duration: float = 10.0
    warmup: float = 1.0
    ops: int = 0
    key_space: int = 1000
    timeout: float = 5.0          # per-request deadline, seconds
    retry_pause: float = 0.05     # pause after an error before the next request
    seed: int = 1


@dataclass
class WorkerResult:
    """One client process's raw record (picklable)."""

    index: int
    released_at: float
    starts: array = field(default_factory=lambda: array("d"))
    ends: array = field(default_factory=lambda: array("d"))
    error_times: array = field(default_factory=lambda: array("d"))
    error_codes: list[str] = field(default_factory=list)
    cpu_s: float = 0.0            # this process's CPU time while the load ran
    failure: str = ""


@dataclass
class LoadResult:
    """The merged record of one load run plus its summary figures."""

    spec: LoadSpec
    window: tuple[float, float]          # measured interval on the monotonic clock
    starts: list[float]                  # successful requests, sorted by end time
    ends: list[float]
    error_times: list[float]
    error_codes: list[str]
    client_cpu_s: float = 0.0            # all client processes, while the load ran

    def in_window(self) -> list[float]:
        """Latencies (s) of successful requests that completed inside the window."""
        lo, hi = self.window
        return [e - s for s, e in zip(self.starts, self.ends) if lo <= e <= hi]

    def summary(self) -> dict[str, Any]:
        """ops, ops/s, latency p50/p99/mean/max in ms, errors by code (inside the window)."""
        lo, hi = self.window
        latencies = sorted(self.in_window())
        span = max(hi - lo, 1e-9)
        errors: dict[str, int] = {}
        for t, code in zip(self.error_times, self.error_codes):
            if lo <= t <= hi:
                errors[code] = errors.get(code, 0) + 1
        return {
            "op": self.spec.op,
            "ops": len(latencies),
            "seconds": round(span, 3),
            "ops_per_s": round(len(latencies) / span, 1),
            "p50_ms": _ms(percentile(latencies, 50)),
            "p99_ms": _ms(percentile(latencies, 99)),
            "mean_ms": _ms(sum(latencies) / len(latencies) if latencies else None),
            "max_ms": _ms(latencies[-1] if latencies else None),
            "errors": errors,
            "client_cpu_s": round(self.client_cpu_s, 2),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = min(max(1, math.ceil(len(sorted_values) * pct / 100.0)), len(sorted_values))
    return sorted_values[rank - 1]


def bench_key(i: int) -> bytes:
    """The i-th key of the benchmark's key space."""
    return KEY_PREFIX + b"%08d" % i


# -- the client process -------------------------------------------------------------------------

def _worker_main(spec: LoadSpec, index: int, barrier: Any, results: Any) -> None:
    """Entry point of a spawned client process: run the load, put a WorkerResult on `results`."""
    try:
        result = asyncio.run(_worker(spec, index, barrier))
    except BaseException:  # report instead of dying silently; let the others go on
        try:
            barrier.abort()
        except Exception:
            pass
        result = WorkerResult(index=index, released_at=0.0, failure=traceback.format_exc(limit=5))
    results.put(result)


async def _worker(spec: LoadSpec, index: int, barrier: Any) -> WorkerResult:
    import grpc

    from kvstore.client import aio_stubs
    from protos.etcd.etcdserverpb import rpc_pb2

    stubs = [aio_stubs(ep) for ep in spec.endpoints]
    try:
        for s in stubs:  # connect before the clock starts
            await asyncio.wait_for(s.channel.channel_ready(), timeout=15.0)
        value = bytes(spec.value_size)
        keys = [bench_key(i) for i in range(spec.key_space)]
        make_call = _call_factory(spec.op, stubs, keys, value, rpc_pb2)
        # A first request per endpoint outside the measurement (lazy server-side setup).
        for ep in range(len(stubs)):
            try:
                await make_call(ep, 0)(timeout=spec.timeout)
            except grpc.aio.AioRpcError:
                pass
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, 120.0)
        result = WorkerResult(index=index, released_at=time.monotonic())
        cpu_at_start = time.process_time()
        end_at = result.released_at + spec.warmup + spec.duration
        budget = [_share(spec.ops, spec.clients, index)] if spec.ops > 0 else None
        drivers = [
            _drive(spec, make_call, (index * spec.inflight + j) % len(stubs), len(stubs),
                   random.Random(spec.seed * 1_000_003 + index * 1009 + j), end_at, budget, result)
            for j in range(spec.inflight)
        ]
        await asyncio.gather(*drivers)
        result.cpu_s = time.process_time() - cpu_at_start
        return result
    finally:
        for s in stubs:
            await s.channel.close()


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def _call_factory(op: str, stubs: list[Any], keys: list[bytes], value: bytes,
                  rpc_pb2: Any) -> Callable[[int, int], Callable[..., Any]]:
    """A function (endpoint index, key index) -> the bound unary call to await with a timeout."""
    if op == "put":
        requests = [rpc_pb2.PutRequest(key=k, value=value) for k in keys]
        return lambda ep, k: _bind(stubs[ep].kv.Put, requests[k])
    if op in ("get", "sget"):
        serializable = op == "sget"
        requests = [rpc_pb2.RangeRequest(key=k, serializable=serializable) for k in keys]
        return lambda ep, k: _bind(stubs[ep].kv.Range, requests[k])
    raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")


def _bind(method: Any, request: Any) -> Callable[..., Any]:
    return lambda timeout: method(request, timeout=timeout)


async def _drive(spec: LoadSpec, make_call: Callable[[int, int], Callable[..., Any]], ep: int,
                 n_endpoints: int, rng: random.Random, end_at: float, budget: list[int] | None,
                 result: WorkerResult) -> None:
    """One request in flight at a time, until the time (or the shared op budget) runs out."""
    import grpc

    clock = time.monotonic
    while True:
        if budget is not None:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        elif clock() >= end_at:
            return
        call = make_call(ep, rng.randrange(spec.key_space))
        started = clock()
        try:
            await call(timeout=spec.timeout)
        except grpc.aio.AioRpcError as err:
            result.error_times.append(clock())
            result.error_codes.append(err.code().name)
            ep = (ep + 1) % n_endpoints
            await asyncio.sleep(spec.retry_pause)
            continue
        result.starts.append(started)
        result.ends.append(clock())


# -- the parent ---------------------------------------------------------------------------------

def run_load(spec: LoadSpec, on_start: Callable[[float], None] | None = None,
             start_timeout: float = 120.0) -> LoadResult:
    """Run `spec` in `spec.clients` spawned processes; return the merged record.

    `on_start(t0)` is called in the parent right after the processes are released (t0 on the
    monotonic clock) and runs while the load runs; the failover bench kills the leader there.
    """
    if spec.op not in OPERATIONS:
        raise ValueError(f"unknown operation {spec.op!r}; expected one of {OPERATIONS}")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(spec.clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(spec, i, barrier, results), daemon=True,
                         name=f"skiff-bench-{spec.op}-{i}") for i in range(spec.clients)]
    for proc in procs:
        proc.start()
    gathered: list[WorkerResult] = []
    try:
        try:
            barrier.wait(start_timeout)
        except Exception:
            pass  # a worker failed before the start; its report says why
        released = time.monotonic()
        if on_start is not None:
            on_start(released)
        wait_limit = start_timeout + spec.warmup + spec.duration + spec.timeout + 60.0
        deadline = time.monotonic() + (wait_limit if spec.ops <= 0 else 3600.0)
        while len(gathered) < len(procs):
            try:
                gathered.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue_module.Empty:
                raise RuntimeError(f"load generator: {len(procs) - len(gathered)} client process(es) "
                                   "did not report") from None
    finally:
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()  # our own child, by its PID
                proc.join()
    failures = [r.failure for r in gathered if r.failure]
    if failures:
        raise RuntimeError("load generator client failed:\n" + failures[0])
    return _merge(spec, gathered)


def _merge(spec: LoadSpec, parts: list[WorkerResult]) -> LoadResult:
    pairs = sorted((e, s) for r in parts for s, e in zip(r.starts, r.ends))
    errors = sorted((t, c) for r in parts for t, c in zip(r.error_times, r.error_codes))
    t0 = min(r.released_at for r in parts)
    if spec.ops > 0:
        first = min((s for _, s in pairs), default=t0)
        last = max((e for e, _ in pairs), default=t0)
        window = (first, last)
    else:
        window = (t0 + spec.warmup, t0 + spec.warmup + spec.duration)
    return LoadResult(spec=spec, window=window, starts=[s for _, s in pairs], ends=[e for e, _ in pairs],
                      error_times=[t for t, _ in errors], error_codes=[c for _, c in errors],
                      client_cpu_s=sum(r.cpu_s for r in parts))


async def _preload_async(endpoints: tuple[str, ...], key_space: int, value_size: int,
                         inflight: int, timeout: float) -> int:
    from kvstore.client import aio_stubs
    from protos.etcd.etcdserverpb import rpc_pb2

    stubs = [aio_stubs(ep) for ep in endpoints]
    pending = list(range(key_space))
    value = bytes(value_size)

    async def writer(j: int) -> None:
        while pending:
            i = pending.pop()
            await stubs[(i + j) % len(stubs)].kv.Put(rpc_pb2.PutRequest(key=bench_key(i), value=value),
                                                     timeout=timeout)

    try:
        await asyncio.gather(*(writer(j) for j in range(inflight)))
    finally:
        for s in stubs:
            await s.channel.close()
    return key_space


def preload(endpoints: list[str] | tuple[str, ...], key_space: int, value_size: int,
            inflight: int = 32, timeout: float = 10.0) -> int:
    """Write every key of the key space once (so gets find a value); returns the count."""
    return asyncio.run(_preload_async(tuple(endpoints), key_space, value_size, inflight, timeout))


async def _cleanup_async(endpoints: tuple[str, ...], timeout: float) -> int:
    from kvstore.client import aio_stubs
    from protos.etcd.etcdserverpb import rpc_pb2

    range_end = KEY_PREFIX[:-1] + bytes([KEY_PREFIX[-1] + 1])
    for ep in endpoints:
        stubs = aio_stubs(ep)
        try:
            reply = await stubs.kv.DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=KEY_PREFIX, range_end=range_end), timeout=timeout)
            return int(reply.deleted)
        except Exception:
            continue
        finally:
            await stubs.channel.close()
    return -1


def cleanup(endpoints: list[str] | tuple[str, ...], timeout: float = 10.0) -> int:
    """Delete the benchmark's keys (count deleted, -1 if no endpoint answered)."""
    return asyncio.run(_cleanup_async(tuple(endpoints), timeout))


def failover_report(result: LoadResult, kill_at: float, lookbehind: float = 1.0) -> dict[str, Any]:
    """How long successful writes stopped around `kill_at` (monotonic time of the kill).

    - `writes_stopped_s`: the longest interval without a successful completion, over the
      intervals that end after `kill_at - lookbehind` (so the gap that spans the kill counts);
      when nothing succeeded after the kill, the time from the last success to the end.
    - `first_ok_after_kill_s`: from the kill to the first success of a request *sent* after it
      (a request in flight at the kill may still complete from the old leader's commit).
    - errors by gRPC code, all of them and those after the kill.
    """
    ends = result.ends  # sorted
    run_end = result.window[1]
    longest, longest_at = 0.0, kill_at
    previous = None
    for end in ends:
        if previous is not None and end >= kill_at - lookbehind and end - previous > longest:
            longest, longest_at = end - previous, previous
        previous = end
    after = [e for s, e in zip(result.starts, result.ends) if s >= kill_at]
    recovered = bool(after)
    if not recovered:
        last = ends[-1] if ends else result.window[0]
        longest, longest_at = max(longest, run_end - last), last
    errors: dict[str, int] = {}
    errors_after: dict[str, int] = {}
    for t, code in zip(result.error_times, result.error_codes):
        errors[code] = errors.get(code, 0) + 1
        if t >= kill_at:
            errors_after[code] = errors_after.get(code, 0) + 1
    before = [e for e in ends if e < kill_at]
    return {
        "recovered": recovered,
        "writes_stopped_s": round(longest, 3),
        "gap_began_s_from_kill": round(longest_at - kill_at, 3),
        "first_ok_after_kill_s": round(min(after) - kill_at, 3) if after else None,
        "last_ok_before_kill_s": round(kill_at - before[-1], 3) if before else None,
        "ok_puts": len(ends),
        "ok_puts_before_kill_per_s": round(len(before) / max(kill_at - result.window[0], 1e-9), 1),
        "errors": errors,
        "errors_after_kill": errors_after,
    }
