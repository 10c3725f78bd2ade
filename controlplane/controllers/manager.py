"""The controller manager: every controller in one process, acting only while it leads.

`ControllerManager(client, options)` builds one `ControllerContext` (the API client, one shared
InformerFactory, clocks) and every controller named in `options.controllers` - module names
under `controlplane.controllers` (`load_controllers`). A module that is not there is skipped with
a warning, so controllers land independently; a module names its controllers in `CONTROLLERS`,
else every `Controller` subclass it defines is taken. Extra constructor arguments
(`options.controller_args`, e.g. `grace_period`) go only to controllers whose `__init__` takes
them.

`run()`:
- with leader election (the default) it campaigns for the Lease `kube-system/
  kube-controller-manager` (lease 15 s, renew deadline 10 s, retry 2 s, configurable) and starts
  the informers and controllers only once it leads. Losing the lease stops every controller and
  returns `False` (Kubernetes' controller manager exits then too: a fresh process starts from
  clean caches). Cancelling `run()` releases the lease so a standby takes over at once.
- without it, it just runs the controllers until cancelled.
- with `metrics_port` set (0 picks a free port; `metrics_address` tells which), an HTTP server
  (plain asyncio, no framework) answers `GET /metrics` in Prometheus' text format 0.0.4 -
  per controller: queue depth, adds, retries, syncs, errors and sync time - plus
  `leader_election_master_status`, and `GET /healthz` with `ok`. It serves whether or not this
  process leads (a standby reports 0).

Invariants: controllers never run while this process believes another holds the lease; no
controller module is imported unless named.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

from controlplane.client.informer import InformerFactory
from controlplane.client.metricsserver import MetricsServer
from controlplane.client.leaderelection import LeaderElector
from controlplane.client.timeutil import SystemClock, WallClock
from controlplane.controllers.base import Controller, ControllerContext
from kvstore.clock import Clock, MonotonicClock

log = logging.getLogger(__name__)

PACKAGE = "controlplane.controllers"
DEFAULT_CONTROLLERS = ("replicaset", "deployment", "daemonset", "statefulset", "nodelifecycle", "endpoints",
                       "garbagecollector", "namespace")
LEASE_NAMESPACE, LEASE_NAME = "kube-system", "kube-controller-manager"


@dataclass
class ManagerOptions:
    controllers: Sequence[str] = DEFAULT_CONTROLLERS
    workers: int = 5
    leader_elect: bool = True
    lease_namespace: str = LEASE_NAMESPACE
    lease_name: str = LEASE_NAME
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    identity: str = ""
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    resync_period: float | None = 60.0
    sync_timeout: float = 60.0
    controller_args: dict[str, Any] = field(default_factory=dict)


def default_identity() -> str:
    """hostname_uuid, as Kubernetes' controller manager names itself in the Lease."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def load_controllers(modules: Sequence[str]) -> list[type[Controller]]:
    """The controller classes of the named modules; a missing module is skipped (warning)."""
    found: list[type[Controller]] = []
    for name in modules:
        full = f"{PACKAGE}.{name}"
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as err:
            if err.name != full:
                raise  # the module exists but something it imports does not: a real bug
            log.warning("controller module %s is not available; its controllers will not run", full)
            continue
        classes = getattr(module, "CONTROLLERS", None)
        if classes is None:
            classes = [c for c in vars(module).values()
                       if inspect.isclass(c) and issubclass(c, Controller) and c is not Controller
                       and c.__module__ == module.__name__]
        found.extend(c for c in classes if c not in found)
    return found


def _accepted(cls: type[Controller], args: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in args.items() if k in params}


def render_metrics(controllers: Sequence[Controller], leading: bool, lease_name: str) -> str:
    """Prometheus text exposition (0.0.4) of the controllers' queue and sync counters."""
    rows: list[tuple[str, str, str, list[tuple[str, float]]]] = [
        ("skiff_controller_queue_depth", "gauge", "Keys waiting for a worker.",
         [(c.name, float(len(c.queue))) for c in controllers]),
        ("skiff_controller_queue_adds_total", "counter", "Keys added to the work queue.",
         [(c.name, float(c.queue.metrics.adds)) for c in controllers]),
        ("skiff_controller_queue_retries_total", "counter", "Keys re-queued with backoff after a failed sync.",
         [(c.name, float(c.queue.metrics.retries)) for c in controllers]),
        ("skiff_controller_syncs_total", "counter", "Syncs run.",
         [(c.name, float(c.metrics.syncs)) for c in controllers]),
        ("skiff_controller_sync_errors_total", "counter", "Syncs that failed.",
         [(c.name, float(c.metrics.errors)) for c in controllers]),
    ]
    lines: list[str] = []
    for metric, kind, help_text, values in rows:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{controller="{name}"}} {_num(v)}' for name, v in values]
    metric = "skiff_controller_sync_duration_seconds"
    lines += [f"# HELP {metric} Time spent in sync.", f"# TYPE {metric} summary"]
    for c in controllers:
        lines.append(f'{metric}_sum{{controller="{c.name}"}} {_num(c.metrics.sync_seconds)}')
        lines.append(f'{metric}_count{{controller="{c.name}"}} {c.metrics.syncs}')
    lines += ["# HELP leader_election_master_status 1 when this process leads, else 0.",
              "# TYPE leader_election_master_status gauge",
              f'leader_election_master_status{{name="{lease_name}"}} {1 if leading else 0}']
    return "\n".join(lines) + "\n"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


class ControllerManager:
    def __init__(self, client: Any, options: ManagerOptions | None = None, clock: Clock | None = None,
                 wall: WallClock | None = None, sleep: Any = asyncio.sleep) -> None:
        self.options = options or ManagerOptions()
        self.client = client
        self.clock: Clock = clock or MonotonicClock()
        self.sleep = sleep
        self.identity = self.options.identity or default_identity()
        self.informers = InformerFactory(client, resync_period=self.options.resync_period, clock=self.clock)
        self.ctx = ControllerContext(client, self.informers, self.clock, wall or SystemClock())
        self.controllers: list[Controller] = [
            cls(self.ctx, **_accepted(cls, self.options.controller_args))
            for cls in load_controllers(self.options.controllers)]
        self.elector: LeaderElector | None = None
        self.leading = False
        self.metrics_address: tuple[str, int] | None = None
        self._server: MetricsServer | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.controllers]

    async def run_controllers(self) -> None:
        """Start the informers, wait for their first lists, run every controller until cancelled."""
        self.leading = True
        try:
            self.informers.start()
            if not await self.informers.wait_for_sync(self.options.sync_timeout):
                log.warning("informers not synced after %.0fs; starting the controllers anyway",
                            self.options.sync_timeout)
            log.info("running controllers: %s", ", ".join(self.names))
            await asyncio.gather(*(c.run(self.options.workers) for c in self.controllers))
        finally:
            self.leading = False
            await self.informers.stop()

    async def run(self) -> bool:
        """Run (see the module docstring); False when leadership was lost."""
        if self.options.metrics_port is not None:
            await self.start_metrics()
        try:
            if not self.options.leader_elect:
                await self.run_controllers()
                return True
            o = self.options
            self.elector = LeaderElector(
                self.client, o.lease_namespace, o.lease_name, self.identity, o.lease_duration, o.renew_deadline,
                o.retry_period, clock=self.clock, on_started_leading=self.run_controllers,
                on_new_leader=lambda who: log.info("the leader is now %s", who), release_on_cancel=True,
                sleep=self.sleep)
            log.info("%s: campaigning for the lease %s/%s", self.identity, o.lease_namespace, o.lease_name)
            await self.elector.run()
            return False
        finally:
            await self.stop_metrics()

    # ---- metrics -----------------------------------------------------------------------------

    def metrics_text(self) -> str:
        return render_metrics(self.controllers, self.leading, self.options.lease_name)

    async def start_metrics(self) -> tuple[str, int]:
        server = MetricsServer(self.metrics_text, self.options.metrics_host, self.options.metrics_port or 0)
        await server.start()
        self._server = server
        self.metrics_address = (self.options.metrics_host, server.port)
        log.info("serving metrics on http://%s:%d/metrics", *self.metrics_address)
        return self.metrics_address

    async def stop_metrics(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
