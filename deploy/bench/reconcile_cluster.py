"""The cluster `skiff bench reconcile` runs on: what it starts, and stops by PID in reverse order.

Started by the bench (unless `--server` names a running control plane): a 3-replica store,
`skiff apiserver --no-auth` (a watch cache large enough that no watch falls out of it and
relists), `skiff scheduler`, and `skiff controller-manager --node-monitor-grace-period G` - two
of them with `standby`, `bench-cm-a` and `bench-cm-b`, campaigning for the Lease
kube-system/kube-controller-manager with a short lease (`--cm-lease-duration` D; renew deadline
3D/4, retry period D/8) so that the cm-failover scenario has a standby to take over.

Always: M hollow nodes (`skiff hollow-nodes`: real agents, fake runtime) in processes of at most
`--nodes-per-process`, plus one process holding a single node, the one the node-lost scenario
freezes (`lost`). With `--handler runc` (root) one real node instead: a `skiff runtime` with the
runc handler and a `skiff agent`, busybox pods from a local registry.

Invariant: `check_alive` fails on any process that exited unless the bench stopped it on purpose
(the frozen node's process, a controller manager in `killed`).
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

from deploy.bench.podstart import ModuleComponent, NodeRig, progress
from deploy.components import Component

NODE_LABEL = "bench.skiff.io/node"


class BenchCluster:
    """What the bench started, stopped by PID in reverse order (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, root: Path, standby: bool = False) -> None:
        self.args = args
        self.standby = standby  # two controller managers, for cm-failover
        self.root = root
        self.server: str = args.server or ""
        self.store: Any = None
        self.components: list[Component] = []
        self.lost: Component | None = None  # the one-node process the node-lost scenario freezes
        self.lost_node = ""
        self.managers: dict[str, Component] = {}  # Lease identity -> its process (two, or none)
        self.killed: set[Component] = set()  # exited on purpose: not a failure
        self.cpu_at_kill: dict[str, float] = {}  # a dead process's /proc is gone: its CPU seconds, kept
        self.rig: NodeRig | None = None
        self.registry: Any = None
        self.image = "bench.invalid/app"
        self.node_count = 1 if args.handler == "runc" else args.nodes

    def start(self) -> None:
        if not self.server:
            self._control_plane()
        if self.args.handler == "runc":
            self._real_node()
        else:
            self._hollow_nodes()

    def _control_plane(self) -> None:
        from deploy.bench.scheduler import SchedulerProcess
        from deploy.components import ApiServerProcess
        from kvstore.localcluster import LocalCluster

        managers = "two controller managers" if self.standby else "the controller manager"
        progress(f"starting a 3-replica store, an API server, the scheduler and {managers}")
        self.store = LocalCluster(self.root / "store", size=3)
        self.store.start(timeout=60)
        cache = 20 * self.args.pods + 50 * self.node_count + 10_000  # no watch may fall out of it and relist
        api = ApiServerProcess(self.root / "api", self.store.endpoints,
                               extra_args=("--no-auth", "--watch-cache-size", str(cache)))
        self.components.append(api)
        api.start(timeout=60)
        self.server = api.address
        sched = SchedulerProcess(self.root / "scheduler", self.server, ["--bind-concurrency", "64"])
        self.components.append(sched)
        sched.start(timeout=120)
        cm_args = ["controller-manager", "--server", self.server, "--node-monitor-grace-period", str(self.args.node_grace)]
        if not self.standby:
            self.components.append(Component("controller-manager", cm_args, self.root).start())
            return
        d = self.args.cm_lease_duration
        lease = ["--leader-elect-lease-duration", str(d), "--leader-elect-renew-deadline", str(d * 0.75),
                 "--leader-elect-retry-period", str(d / 8)]
        for suffix in ("a", "b"):
            cm = Component(f"controller-manager-{suffix}", [*cm_args, *lease, "--identity", f"bench-cm-{suffix}"], self.root)
            self.managers[f"bench-cm-{suffix}"] = cm
            self.components.append(cm.start())

    def _hollow_nodes(self) -> None:
        per, total = self.args.nodes_per_process, self.node_count
        groups = [(start, min(per, total - 1 - start)) for start in range(0, total - 1, per)] + [(total - 1, 1)]
        progress(f"starting {total} hollow nodes in {len(groups)} processes")
        for start, count in groups:
            c = ModuleComponent(f"hollow-{start}", "deploy.cli.hollow_cmd", [
                "--count", str(count), "--start", str(start), "--prefix", "bench-hollow-", "--server", self.server,
                "--root", str(self.root / "hollow" / str(start)), "--pod-cidr-base", "10.200.0.0/16",
                "--lease-interval", str(self.args.lease_interval), "--node-labels", f"{NODE_LABEL}=yes"], self.root)
            self.components.append(c.start())
        self.lost = self.components[-1]
        self.lost_node = f"bench-hollow-{total - 1}"

    def _real_node(self) -> None:
        from deploy.images import LocalRegistry

        self.registry = LocalRegistry(self.root / "registry").__enter__()
        self.image = self.registry.push_busybox("library/busybox", "v1").rsplit(":", 1)[0]
        self.registry.push_busybox("library/busybox", "v2")
        progress("starting a runtime (runc) and an agent: one real node")
        self.rig = NodeRig(self.root / "node", "runc", 0, self.server, labels=f"{NODE_LABEL}=yes").start()

    def check_alive(self) -> None:
        for c in self.components + (self.rig.components if self.rig else []):
            if not c.alive and c is not self.lost and c not in self.killed:
                hint = " (lease lost under load? raise --cm-lease-duration)" if c in self.managers.values() else ""
                raise RuntimeError(f"{c.name} exited{hint}: {c.log_tail()}")

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU seconds each process used so far (the store's replicas summed)."""
        from deploy.bench.common import cpu_seconds, server_pids

        pids = {c.name: [c.pid] for c in self.components + (self.rig.components if self.rig else []) if c.pid}
        pids["store"] = server_pids(self.store)
        pids["bench client"] = [os.getpid()]
        used = {name: round(cpu_seconds([p for p in ps if p]) or 0.0, 1) for name, ps in pids.items() if ps}
        return used | self.cpu_at_kill

    def kill(self, c: Component) -> None:
        """SIGKILL c by its PID, on purpose (check_alive ignores it); its CPU seconds so far are kept."""
        from deploy.bench.common import cpu_seconds

        assert c.pid is not None
        self.cpu_at_kill[c.name] = round(cpu_seconds([c.pid]) or 0.0, 1)
        self.killed.add(c)
        os.kill(c.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.lost is not None and self.lost.pid is not None:
            try:
                os.kill(self.lost.pid, signal.SIGCONT)  # a stopped process cannot take SIGTERM
            except ProcessLookupError:
                pass
        if self.rig is not None:
            self.rig.stop()
        for c in reversed(self.components):
            c.stop()
        if self.registry is not None:
            self.registry.__exit__()
        if self.store is not None:
            self.store.stop()
