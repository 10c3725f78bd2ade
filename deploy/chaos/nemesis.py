"""Nemesis schedules: which fault, on which hosts, when, during a chaos run.

`plan(kind, replicas, duration, seed)` is pure: the same seed gives the same schedule (the
targets that depend on the cluster at run time, such as "the leader", are resolved when the
fault starts and recorded). A schedule is a list of non-overlapping `Fault`s, each with a start
and end offset in seconds from the start of the workload; between faults the cluster is whole.

Kinds:
  partition         random minority | majority split of the replicas
  partition-leader  the current leader (plus others to fill the minority) | the rest
  isolate           one random replica cut off from every host
  bridge, ring      Jepsen's bridge and majorities ring over the replicas in random order
  kill, kill-leader SIGKILL a random minority of replicas (or the leader), restart at the end
  kill-all          SIGKILL every replica at once, restart them together (durability of acks)
  pause, pause-leader  SIGSTOP a random minority (or the leader), SIGCONT at the end: a leader
                    that wakes up must not serve from its stale belief
  mixed             a random one of the above for each fault

`Executor.run` applies a schedule against a lab, waiting on the monotonic clock, and records the
periods actually in force (monotonic ns from the fault log) for the timeline and the checks.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.lab import faults
from deploy.lab.state import LabState
from deploy.lab.status import leader_host

KINDS = ("partition", "partition-leader", "isolate", "bridge", "ring", "kill", "kill-leader", "kill-all", "pause",
         "pause-leader")
CHOICES = ("partition", "kill", "pause", "bridge", "mixed") + tuple(k for k in KINDS if k not in ("partition", "kill", "pause", "bridge"))
MIXED = ("partition", "partition-leader", "isolate", "bridge", "ring", "kill", "kill-leader", "pause", "pause-leader")


@dataclass
class Fault:
    """One scheduled fault. `hosts` (kill/pause/isolate) or `groups` (partition) are chosen by
    `plan`, except for *-leader kinds whose targets are filled in when the fault starts."""

    start: float
    end: float
    kind: str
    hosts: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)


@dataclass
class Period:
    """A fault as it happened: monotonic ns from the fault log."""

    kind: str
    hosts: list[str]
    groups: list[list[str]]
    start_ns: int  # when the fault was in force (logged after it took effect)
    end_ns: int = 0  # when it was lifted (logged after the undo took effect)
    lifting_ns: int = 0  # when the undo began: the fault surely held in [start_ns, lifting_ns]
    detail: str = ""


def minority_size(replicas: int) -> int:
    return max(1, (replicas - 1) // 2)


def plan(kind: str, replicas: list[str], duration: float, seed: int) -> list[Fault]:
    """A seeded schedule filling [warm-up, duration) with faults separated by quiet gaps."""
    if kind not in CHOICES:
        raise ValueError(f"unknown nemesis {kind!r} (choose from {', '.join(CHOICES)})")
    rng = random.Random(seed)
    # Scale with the run: short CI runs get short faults, long runs longer ones.
    # 60 s: faults of 3.6-7.2 s with 2.4-4.8 s of calm between, about eight faults.
    fault_lo, fault_hi = _clip(duration * 0.06, 2, 8), _clip(duration * 0.12, 3, 12)
    gap_lo, gap_hi = _clip(duration * 0.04, 1, 3), _clip(duration * 0.08, 2, 6)
    t = _clip(duration * 0.1, 1, 5)  # warm-up: the first ops run on a healthy cluster
    out: list[Fault] = []
    while True:
        length = rng.uniform(fault_lo, fault_hi)
        if t + length > duration:
            break
        chosen = rng.choice(MIXED if kind == "mixed" else (kind,))
        if chosen == "ring" and len(replicas) < 5:
            chosen = "bridge"  # a ring over 3 hosts cuts nothing
        out.append(_targets(Fault(round(t, 3), round(t + length, 3), chosen), replicas, rng))
        t += length + rng.uniform(gap_lo, gap_hi)
    return out


def _clip(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _targets(fault: Fault, replicas: list[str], rng: random.Random) -> Fault:
    shuffled = rng.sample(replicas, len(replicas))
    small = minority_size(len(replicas))
    if fault.kind == "partition":
        fault.groups = [sorted(shuffled[:small]), sorted(shuffled[small:])]
    elif fault.kind == "isolate":
        fault.hosts = shuffled[:1]
    elif fault.kind in ("bridge", "ring"):
        fault.hosts = shuffled
    elif fault.kind in ("kill", "pause"):
        fault.hosts = sorted(shuffled[:rng.randint(1, small)])
    elif fault.kind == "kill-all":
        fault.hosts = sorted(replicas)
    return fault


def describe(schedule: list[Fault]) -> list[dict[str, Any]]:
    return [asdict(f) for f in schedule]


class Executor:
    """Applies a schedule to the lab in `lab_dir` (see module doc)."""

    def __init__(self, lab_dir: Path, replicas: list[str], seed: int = 0) -> None:
        self.lab_dir = Path(lab_dir)
        self.replicas = replicas
        self.rng = random.Random(seed + 1)  # fallback choices (no leader known) stay seeded
        self.periods: list[Period] = []
        self.errors: list[str] = []

    async def run(self, schedule: list[Fault], t0_ns: int, stop: asyncio.Event) -> None:
        for fault in sorted(schedule, key=lambda f: f.start):
            if not await self._sleep_until(t0_ns, fault.start, stop):
                return
            try:
                period = await asyncio.to_thread(self._begin, fault)
            except Exception as err:  # a nemesis that cannot act is reported, the run goes on
                self.errors.append(f"{fault.kind} at {fault.start:.1f}s: {err}")
                continue
            self.periods.append(period)
            await self._sleep_until(t0_ns, fault.end, stop)
            period.lifting_ns = time.monotonic_ns()
            try:
                period.end_ns = await asyncio.to_thread(self._end, fault)
            except Exception as err:
                self.errors.append(f"ending {fault.kind}: {err}")
                period.end_ns = time.monotonic_ns()

    async def _sleep_until(self, t0_ns: int, offset: float, stop: asyncio.Event) -> bool:
        delay = (t0_ns + offset * 1e9 - time.monotonic_ns()) / 1e9
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return False
            except asyncio.TimeoutError:
                return True
        return not stop.is_set()

    def _leader_or_random(self) -> str:
        leader = leader_host(LabState.load(self.lab_dir), timeout=1.0)
        return leader or self.rng.choice(self.replicas)

    def _begin(self, fault: Fault) -> Period:
        kind = fault.kind
        if kind == "partition-leader":
            leader = self._leader_or_random()
            others = [h for h in self.replicas if h != leader]
            small = minority_size(len(self.replicas))
            fault.groups = [sorted([leader] + others[:small - 1]), sorted(others[small - 1:])]
            kind = "partition"
        if kind in ("kill-leader", "pause-leader"):
            fault.hosts = [self._leader_or_random()]
            kind = kind.split("-")[0]
        if kind == "kill-all":
            kind = "kill"
        if kind == "partition":
            entry = faults.partition(self.lab_dir, fault.groups)
        elif kind == "isolate":
            entry = faults.isolate(self.lab_dir, fault.hosts[0])
            others = [h for h in self.replicas if h not in fault.hosts]
            fault.groups = [fault.hosts, others]
        elif kind == "bridge":
            entry = faults.bridge(self.lab_dir, fault.hosts)
            fault.groups = faults.bridge_groups(fault.hosts)
        elif kind == "ring":
            entry = faults.ring(self.lab_dir, fault.hosts)
        elif kind == "kill":
            entry = faults.kill(self.lab_dir, fault.hosts)
        elif kind == "pause":
            entry = faults.pause(self.lab_dir, fault.hosts)
        else:
            raise ValueError(f"unknown fault kind {kind}")
        hosts = fault.hosts or sorted({h for g in fault.groups for h in g})
        return Period(fault.kind, hosts, fault.groups, entry["mono_ns"], detail=entry.get("detail", ""))

    def _end(self, fault: Fault) -> int:
        if fault.kind in ("kill", "kill-leader", "kill-all"):
            return int(faults.start(self.lab_dir, fault.hosts)["mono_ns"])
        if fault.kind in ("pause", "pause-leader"):
            return int(faults.resume(self.lab_dir, fault.hosts)["mono_ns"])
        return int(faults.heal(self.lab_dir)["mono_ns"])
