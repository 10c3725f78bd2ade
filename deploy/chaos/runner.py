"""A Jepsen-style run against the lab's store: workload + nemesis, heal, converge, check, report.

Sequence (contract of `run`):
 1. wait until the store has a leader (it must start healthy);
 2. start the workload's clients (spread round-robin over the replicas) and the nemesis schedule
    together, for `duration` seconds; then stop the clients (each finishes its in-flight op);
 3. heal everything (network, paused and killed processes), wait until every replica reports the
    same revision and the same HashKV at that revision (`converged`);
 4. the workload's final reads and checks; the linearizability / set checker over the history;
 5. write `history.jsonl`, `verdict.json`, `timeline.png`, `nemesis.json` into the output
    directory. `RunResult.ok` (the exit status) is true only when every check holds.

Times are monotonic ns throughout (the history, the fault log, the periods), so they line up.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from deploy.chaos import nemesis as nem
from deploy.chaos.clients import Recorder, sync_channel_stubs
from deploy.chaos.workloads import WORKLOADS, Workload
from deploy.lab import faults
from deploy.lab.faultlog import read_faults
from deploy.lab.hosts import wait_store_ready
from deploy.lab.state import LabState
from protos.etcd.etcdserverpb import rpc_pb2


@dataclass
class RunConfig:
    lab_dir: Path
    workload: str = "register"
    nemesis: str = "partition"
    duration: float = 60.0
    clients: int = 5
    seed: int = 0
    out: Path | None = None
    rate: float = 20.0  # ops/s per client
    timeout: float = 1.0  # gRPC deadline per operation
    keys: int = 3
    converge_timeout: float = 60.0
    schedule: list[nem.Fault] | None = None  # explicit schedule (tests); else planned from nemesis
    timeline: bool = True


@dataclass
class RunResult:
    ok: bool
    out: Path
    verdict: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    periods: list[nem.Period] = field(default_factory=list)


def run(config: RunConfig) -> RunResult:
    """Run synchronously (see module doc)."""
    return asyncio.run(run_async(config))


async def run_async(cfg: RunConfig) -> RunResult:
    if cfg.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {cfg.workload!r} (choose from {', '.join(WORKLOADS)})")
    lab = LabState.load(cfg.lab_dir)
    if len(lab.replicas) < 3:
        raise ValueError(f"a chaos run needs a store of 3 or 5 replicas; the lab has {len(lab.replicas)}")
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out = Path(cfg.out or Path(lab.dir) / "runs" / run_id)
    out.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(faults.heal_all, Path(lab.dir))  # start from a whole cluster
    lab = LabState.load(cfg.lab_dir)  # heal_all may have restarted processes (new pids)
    await asyncio.to_thread(wait_store_ready, lab, 30.0)
    schedule = cfg.schedule if cfg.schedule is not None else nem.plan(cfg.nemesis, lab.replicas, cfg.duration, cfg.seed)
    recorder = Recorder()
    workload: Workload = WORKLOADS[cfg.workload](recorder, lab.store_endpoints(), run_id, cfg.seed,
                                                 rate=cfg.rate, timeout=cfg.timeout, keys=cfg.keys)
    await workload.setup()
    executor = nem.Executor(Path(lab.dir), lab.replicas, cfg.seed)
    stop, nemesis_stop = asyncio.Event(), asyncio.Event()
    t0 = time.monotonic_ns()
    tasks = [asyncio.create_task(workload.client(i, stop)) for i in range(cfg.clients)]
    nemesis_task = asyncio.create_task(executor.run(schedule, t0, nemesis_stop))
    try:
        await asyncio.sleep(cfg.duration)
    finally:
        stop.set()
        nemesis_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(nemesis_task, return_exceptions=True)
        t_end = time.monotonic_ns()
        for period in executor.periods:
            period.lifting_ns = period.lifting_ns or t_end
            period.end_ns = period.end_ns or t_end
        await asyncio.to_thread(faults.heal_all, Path(lab.dir))
    lab = LabState.load(cfg.lab_dir)
    converged = await asyncio.to_thread(wait_converged, lab, cfg.converge_timeout)
    workload_checks = await workload.finish()
    await workload.close()
    verdict = build_verdict(cfg, lab, recorder, workload_checks, converged, executor, schedule, t0, run_id)
    write_outputs(out, recorder.events, verdict, executor.periods, lab, t0, cfg.timeline)
    return RunResult(verdict["ok"], out, verdict, recorder.events, executor.periods)


def wait_converged(lab: LabState, timeout: float) -> dict[str, Any]:
    """Poll until every replica has the same revision and HashKV at it (see module doc)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        revisions: dict[str, int] = {}
        for name, ep in lab.store_endpoints().items():
            try:
                stubs = sync_channel_stubs(ep)
                revisions[name] = stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=2).header.revision
                stubs.channel.close()
            except grpc.RpcError as err:
                revisions[name] = -1
                last = {"ok": False, "reason": f"{name}: {err.code().name}"}
        if len(set(revisions.values())) == 1 and -1 not in revisions.values():
            rev = next(iter(revisions.values()))
            hashes = _hashes(lab, rev)
            last = {"ok": len(set(hashes.values())) == 1 and None not in hashes.values(),
                    "revision": rev, "hashes": hashes}
            if last["ok"]:
                return last
            if any(isinstance(h, str) for h in hashes.values()):
                last["reason"] = "HashKV failed: " + ", ".join(f"{n}: {h}" for n, h in hashes.items() if isinstance(h, str))
        else:
            last = {"ok": False, "revisions": revisions}
        time.sleep(0.3)
    last.setdefault("reason", f"replicas did not converge within {timeout:.0f}s")
    return last


def _hashes(lab: LabState, revision: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, ep in lab.store_endpoints().items():
        stubs = sync_channel_stubs(ep)
        try:
            out[name] = stubs.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=5).hash
        except grpc.RpcError as err:
            out[name] = f"{err.code().name}: {err.details()}"
        finally:
            stubs.channel.close()
    return out


def build_verdict(cfg: RunConfig, lab: LabState, recorder: Recorder, workload_checks: dict[str, Any],
                  converged: dict[str, Any], executor: nem.Executor, schedule: list[nem.Fault], t0: int,
                  run_id: str) -> dict[str, Any]:
    """Run the checker over the history and assemble every check (see module doc)."""
    from deploy.chaos import checker

    events = recorder.events
    checks: dict[str, Any] = {"converged": converged, **workload_checks}
    history = [e for e in events if e["f"] in ("read", "write", "cas", "add")]
    if cfg.workload == "set":
        sv = checker.check_set(_as_events(history))
        checks["set"] = {"ok": sv.ok, "outcome": sv.outcome, "report": sv.render()}
    else:
        lv = checker.check_register(_as_events(history), timeout=60.0)
        checks["linearizable"] = {"ok": lv.ok, "outcome": lv.outcome, "report": lv.render()}
    counts = {t: sum(1 for e in events if e["type"] == t) for t in ("ok", "fail", "info")}
    mutations_ok = sum(1 for e in events if e["type"] == "ok" and e["f"] != "read")
    checks["progress"] = {"ok": mutations_ok > 0, "acknowledged_mutations": mutations_ok}
    checks["nemesis"] = {"ok": not executor.errors, "errors": executor.errors}
    ok = all(c.get("ok", False) for c in checks.values())
    return {
        "ok": ok, "run_id": run_id, "workload": cfg.workload, "nemesis": cfg.nemesis, "seed": cfg.seed,
        "duration": cfg.duration, "clients": cfg.clients, "store": lab.store, "replicas": lab.replicas,
        "counts": counts, "checks": checks, "t0_ns": t0,
        "schedule": nem.describe(schedule), "periods": [asdict(p) for p in executor.periods],
        "processes": {str(p): {"node": n, "client": recorder.process_client[p]} for p, n in recorder.process_node.items()},
        "failed": sorted(name for name, c in checks.items() if not c.get("ok", False)),
    }


def _as_events(history: list[dict[str, Any]]) -> list[Any]:
    from deploy.chaos.history import Event

    return [Event.from_dict(e) for e in history]


def write_outputs(out: Path, events: list[dict[str, Any]], verdict: dict[str, Any], periods: list[nem.Period],
                  lab: LabState, t0: int, timeline: bool) -> None:
    with open(out / "history.jsonl", "w") as fh:
        for e in events:
            fh.write(json.dumps(e, separators=(",", ":")) + "\n")
    (out / "verdict.json").write_text(json.dumps(verdict, indent=1, default=str) + "\n")
    (out / "faults.jsonl").write_text("".join(json.dumps(f) + "\n" for f in read_faults(lab.dir, since_ns=t0)))
    if timeline:
        from deploy.chaos.timeline import render_timeline

        render_timeline(out / "timeline.png", events, periods, t0,
                        title=f"{verdict['workload']} / {verdict['nemesis']} / seed {verdict['seed']}: "
                              f"{'PASS' if verdict['ok'] else 'FAIL'}")


def summary(result: RunResult) -> str:
    """The verdict lines a person reads at the end of a run."""
    v = result.verdict
    lines = [f"{'PASS' if v['ok'] else 'FAIL'}: {v['workload']} under {v['nemesis']} on {v['store']} "
             f"({len(v['replicas'])} replicas), {v['duration']:.0f}s, {v['clients']} clients, seed {v['seed']}: "
             f"{v['counts']['ok']} ok, {v['counts']['fail']} fail, {v['counts']['info']} info; "
             f"{len(v['periods'])} faults"]
    for name, check in v["checks"].items():
        detail = check.get("outcome") or check.get("reason") or ""
        lines.append(f"  {name}: {'ok' if check.get('ok') else 'FAILED'} {detail}".rstrip())
        if not check.get("ok") and check.get("report"):
            lines.extend("    " + line for line in str(check["report"]).splitlines()[:30])
        if not check.get("ok") and check.get("errors"):
            lines.extend(f"    {e}" for e in check["errors"][:10])
    lines.append(f"  output: {result.out}")
    return "\n".join(lines)
