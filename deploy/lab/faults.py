"""Nemeses: network cuts, process faults and slowness, each logged to the fault log.

Network faults are described as a set of *blocked host pairs* (unordered, so both directions
are cut). `partition`, `isolate`, `bridge` and `ring` compute pairs from host groups and
*replace* whatever cut was in force (as Jepsen's partitioner does); `heal` lifts all cuts and
all slowness. The pure functions (`pairs_*`) compute the cut; `apply_network` enforces it.

Process faults act on every process recorded for the host: `kill` (SIGKILL, then wait until
they are gone), `start` (restart the ones not running, same argv and data), `pause` (SIGSTOP),
`resume` (SIGCONT). `kill` also kills anything else running in the host's namespace (e.g. a
`lab exec` shell): the host "loses power".

Every function takes the lab directory, runs under the lab's lock (hosts.transaction), and
returns the fault-log entry it wrote; entries are written after the fault took effect.
"""
from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any, Iterable

from deploy.lab import net, procs
from deploy.lab.faultlog import log_fault
from deploy.lab.hosts import tag, transaction
from deploy.lab.state import LabError, LabState

Pair = tuple[str, str]


# --- pure: which pairs a fault cuts ------------------------------------------------------

def _pair(a: str, b: str) -> Pair:
    return (a, b) if a < b else (b, a)


def pairs_between_groups(groups: list[list[str]]) -> set[Pair]:
    """Hosts in different groups are cut; hosts named in no group are left alone."""
    seen: set[str] = set()
    for group in groups:
        if not group:
            raise LabError("empty group in partition (write groups as A,B/C,D,E)")
        dup = seen.intersection(group)
        if dup:
            raise LabError(f"host {sorted(dup)[0]} is in two groups of the partition")
        seen.update(group)
    if len(groups) < 2:
        raise LabError("a partition needs at least two groups, e.g. n1/n2,n3")
    return {_pair(a, b) for g1, g2 in itertools.combinations(groups, 2) for a in g1 for b in g2}


def bridge_groups(hosts: list[str]) -> list[list[str]]:
    """Jepsen's bridge: two halves that share the middle host, e.g. n1,n2,n3 / n3,n4,n5."""
    if len(hosts) < 3:
        raise LabError("bridge needs at least 3 hosts")
    mid = len(hosts) // 2
    return [hosts[:mid + 1], hosts[mid:]]


def pairs_bridge(hosts: list[str]) -> set[Pair]:
    left, right = bridge_groups(hosts)
    shared = set(left) & set(right)
    return {_pair(a, b) for a in left for b in right if a not in shared and b not in shared}


def pairs_ring(hosts: list[str]) -> set[Pair]:
    """Each host reaches only its two neighbours on a ring (5 hosts: each sees a majority of 3,
    but no two hosts see the same majority). With 3 hosts nothing is cut."""
    if len(hosts) < 3:
        raise LabError("ring needs at least 3 hosts")
    n = len(hosts)
    near = {_pair(hosts[i], hosts[(i + 1) % n]) for i in range(n)}
    return {_pair(a, b) for a, b in itertools.combinations(hosts, 2)} - near


def parse_groups(spec: str) -> list[list[str]]:
    """'n1,n2/n3,n4,n5' -> [['n1','n2'], ['n3','n4','n5']]."""
    return [[h.strip() for h in part.split(",") if h.strip()] for part in spec.split("/")]


def describe(groups: list[list[str]]) -> str:
    return " | ".join(",".join(g) for g in groups)


# --- enforcement -------------------------------------------------------------------------

def apply_network(lab: LabState, pairs: set[Pair], description: str) -> None:
    """Make exactly `pairs` cut on every host (idempotent; replaces the previous cut)."""
    ip = {h.name: h.ip for h in lab.hosts}
    for p in pairs:
        for name in p:
            lab.host(name)  # LabError for an unknown host, before anything changes
    for host in lab.hosts:
        blocked = [ip[b if a == host.name else a] for a, b in pairs if host.name in (a, b)]
        net.apply_blocks(host.netns, blocked)
    lab.blocked = sorted([list(p) for p in pairs])
    lab.network_fault = description if pairs else ""


def _network(lab_dir: Path, fault: str, pairs_fn: Any, hosts: list[str], detail: str) -> dict[str, Any]:
    with transaction(lab_dir) as lab:
        pairs = pairs_fn(lab)
        apply_network(lab, pairs, f"{fault} {detail}")
    return log_fault(lab_dir, fault, hosts, detail)


def partition(lab_dir: Path, groups: list[list[str]]) -> dict[str, Any]:
    pairs = pairs_between_groups(groups)
    names = [h for g in groups for h in g]
    return _network(lab_dir, "partition", lambda lab: pairs, names, describe(groups))


def isolate(lab_dir: Path, host: str) -> dict[str, Any]:
    def pairs(lab: LabState) -> set[Pair]:
        lab.host(host)
        others = [h.name for h in lab.hosts if h.name != host]
        return pairs_between_groups([[host], others]) if others else set()
    return _network(lab_dir, "isolate", pairs, [host], f"{host} | rest")


def bridge(lab_dir: Path, hosts: list[str] | None = None) -> dict[str, Any]:
    def pairs(lab: LabState) -> set[Pair]:
        return pairs_bridge(hosts or [h.name for h in lab.hosts])
    names = hosts or [h.name for h in load_names(lab_dir)]
    return _network(lab_dir, "bridge", pairs, names, describe(bridge_groups(names)))


def ring(lab_dir: Path, hosts: list[str] | None = None) -> dict[str, Any]:
    names = hosts or [h.name for h in load_names(lab_dir)]
    return _network(lab_dir, "ring", lambda lab: pairs_ring(names), names, " - ".join(names + names[:1]))


def load_names(lab_dir: Path) -> list[Any]:
    return LabState.load(Path(lab_dir)).hosts


def heal(lab_dir: Path) -> dict[str, Any]:
    """Lift every network cut and every bandwidth limit."""
    with transaction(lab_dir) as lab:
        for host in lab.hosts:
            net.clear_blocks(host.netns)
            if host.slow:
                net.clear_slow(host.netns, host.veth)
                host.slow = ""
        lab.blocked = []
        lab.network_fault = ""
        names = [h.name for h in lab.hosts]
    return log_fault(lab_dir, "heal", names)


def slow(lab_dir: Path, host_name: str, rate: str) -> dict[str, Any]:
    """tbf-limit a host to `rate` both ways; rate 'off' removes the limit."""
    with transaction(lab_dir) as lab:
        host = lab.host(host_name)
        if rate == "off":
            net.clear_slow(host.netns, host.veth)
            host.slow = ""
        else:
            net.set_slow(host.netns, host.veth, rate)
            host.slow = rate
    return log_fault(lab_dir, "slow-off" if rate == "off" else "slow", [host_name], rate)


# --- process faults ----------------------------------------------------------------------

def kill(lab_dir: Path, host_names: Iterable[str]) -> dict[str, Any]:
    names = list(host_names)
    with transaction(lab_dir) as lab:
        pids: set[int] = set()
        for host in lab.hosts_named(names):
            pids.update(p.pid for p in host.procs.values() if procs.state_of(p) != "stopped")
            pids.update(net.netns_pids(host.netns))
        procs.kill_all(sorted(pids))
    return log_fault(lab_dir, "kill", names)


def start(lab_dir: Path, host_names: Iterable[str]) -> dict[str, Any]:
    names = list(host_names)
    with transaction(lab_dir) as lab:
        for host in lab.hosts_named(names):
            for role, proc in host.procs.items():
                if procs.state_of(proc) == "stopped":
                    procs.start(host.netns, proc, tag(lab, host, role))
    return log_fault(lab_dir, "start", names)


def _signal_hosts(lab_dir: Path, host_names: list[str], sig: int, fault: str) -> dict[str, Any]:
    # Signal delivery is asynchronous (every thread must stop), so wait until the processes
    # show the new state: the fault log's timestamp must mean "in force from here".
    want = "paused" if sig == signal.SIGSTOP else "alive"
    with transaction(lab_dir) as lab:
        signalled = []
        for host in lab.hosts_named(host_names):
            for proc in host.procs.values():
                if procs.signal_proc(proc, sig):
                    signalled.append(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(procs.state_of(p) not in (want, "stopped") for p in signalled):
            time.sleep(0.005)
    return log_fault(lab_dir, fault, host_names)


def pause(lab_dir: Path, host_names: Iterable[str]) -> dict[str, Any]:
    return _signal_hosts(lab_dir, list(host_names), signal.SIGSTOP, "pause")


def resume(lab_dir: Path, host_names: Iterable[str]) -> dict[str, Any]:
    return _signal_hosts(lab_dir, list(host_names), signal.SIGCONT, "resume")


def heal_all(lab_dir: Path) -> list[dict[str, Any]]:
    """Undo every fault: network, slowness, paused and killed processes (the end of a run)."""
    lab = LabState.load(Path(lab_dir))
    names = [h.name for h in lab.hosts]
    return [heal(lab_dir), resume(lab_dir, names), start(lab_dir, names)]
