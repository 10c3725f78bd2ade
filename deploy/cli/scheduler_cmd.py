"""`skiff scheduler`: run the scheduler in the foreground until SIGTERM/SIGINT.

Connects with a client config (`--config`, `--server`, `--token`, as the kubectl-like commands),
loads score weights from `--config-file` (skiff's short form or a KubeSchedulerConfiguration),
and schedules. With `--leader-elect`, several may run: the informers of each fill their caches
at once (so a takeover is quick), but only the holder of the Lease (kube-system/kube-scheduler
by default, 15 s lease, renew deadline 10 s, retry 2 s, as kube-scheduler) schedules. A leader
that loses its lease exits with status 1, as kube-scheduler does: it may have lost it while
binding, and a fresh start is the simple way to a clean cache. With `--metrics-port`, metrics
are on http://HOST:PORT/metrics, plus /healthz and /readyz (ready: caches synced and leading).

Also runnable as `python -m deploy.cli.scheduler_cmd ...` (tests, benchmarks).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import random
import socket
import sys
import uuid
from typing import TYPE_CHECKING

from deploy.cli.daemon import stop_on_signals
from deploy.cli.errors import CommandError

if TYPE_CHECKING:
    from controlplane.client.config import ClientConfig
    from controlplane.scheduler.framework import SchedulerConfig

log = logging.getLogger("skiff.scheduler")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--server", metavar="HOST:PORT", help="the API server (overrides the client config)")
    g.add_argument("--token", help="bearer token (overrides the client config; needs TLS)")
    g.add_argument("--config", metavar="PATH", help="client config file (default: $SKIFF_CONFIG, else ~/.skiff/config)")
    p.add_argument("--config-file", metavar="PATH",
                   help="scheduler configuration: score weights, percentageOfNodesToScore, schedulerName (YAML)")
    p.add_argument("--leader-elect", action="store_true", help="schedule only while holding the leader Lease")
    p.add_argument("--lease-namespace", default="kube-system")
    p.add_argument("--lease-name", default="kube-scheduler")
    p.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS")
    p.add_argument("--lease-renew-deadline", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--lease-retry-period", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--identity", help="this candidate's name in the Lease (default: hostname_random)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics, /healthz, /readyz on this port (0: any)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST")
    p.add_argument("--bind-concurrency", type=int, default=64, metavar="N", help="binds in flight at once (default 64)")
    p.add_argument("--seed", type=int, help="seed for breaking score ties (reproducible choices)")
    p.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from controlplane.client.config import ConfigError as ClientConfigError
    from controlplane.client.config import load_config as load_client_config
    from controlplane.scheduler.framework import ConfigError, load_config

    if args.bind_concurrency < 1:
        raise CommandError("--bind-concurrency must be at least 1")
    try:
        sched_config = load_config(args.config_file)
        client_config = load_client_config(args.config, args.server, args.token)
        client_config.channel_credentials()  # fail now, with the config's message, not later
    except (ConfigError, ClientConfigError) as err:
        raise CommandError(str(err)) from None
    return asyncio.run(_serve(args, client_config, sched_config))


async def _serve(args: argparse.Namespace, client_config: "ClientConfig", sched_config: "SchedulerConfig") -> int:
    from controlplane.client.api import ApiClient
    from controlplane.client.leaderelection import LeaderElector
    from controlplane.scheduler.driver import Scheduler
    from controlplane.client.metricsserver import MetricsServer
    from controlplane.scheduler.metrics import SchedulerMetrics

    client = ApiClient.from_config(client_config)
    identity = args.identity or f"{socket.gethostname()}_{uuid.uuid4()}"
    metrics = SchedulerMetrics()
    rng = random.Random(args.seed) if args.seed is not None else random.Random()
    sched = Scheduler(client, sched_config, rng=rng, metrics=metrics,
                      bind_concurrency=args.bind_concurrency, identity=identity)
    elector: LeaderElector | None = None
    if args.leader_elect:
        try:
            elector = LeaderElector(client, args.lease_namespace, args.lease_name, identity, args.lease_duration,
                                    args.lease_renew_deadline, args.lease_retry_period,
                                    on_started_leading=sched.run, release_on_cancel=True)
        except ValueError as err:
            raise CommandError(f"leader election: {err}") from None
    server: MetricsServer | None = None
    if args.metrics_port is not None:
        server = MetricsServer(metrics.render, args.metrics_host, args.metrics_port,
                               ready=lambda: sched.synced and (elector is None or elector.is_leader))
        try:
            await server.start()
        except OSError as err:
            raise CommandError(f"--metrics-port {args.metrics_port}: {err.strerror}") from None
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, server.port)
    sched.start_informers()
    main = asyncio.create_task(elector.run() if elector is not None else sched.run())
    stop = stop_on_signals()
    log.info("scheduler %s started (%s)", identity, "leader election on" if elector else "no leader election")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([main, stopper], return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if main.done():
        exc = main.exception()
        if exc is not None:
            log.error("scheduler stopped: %s", exc)
            status = 1
        elif elector is not None:
            log.error("lost the leader lease %s/%s; exiting", args.lease_namespace, args.lease_name)
            status = 1
    main.cancel()
    stopper.cancel()
    await asyncio.gather(main, stopper, return_exceptions=True)
    await sched.stop()
    if server is not None:
        await server.stop()
    await client.close()
    return status



if __name__ == "__main__":  # `python -m deploy.cli.scheduler_cmd ...` is `skiff ...` for this command
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.cli.scheduler_cmd"))
