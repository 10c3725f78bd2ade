"""`skiff controller-manager`: run the controllers in the foreground until SIGTERM/SIGINT.

Connection as for every client command (`--config`, else $SKIFF_CONFIG, else ~/.skiff/config;
`--server`/`--token` override). Flag names follow kube-controller-manager's where they mean the
same (`--leader-elect`, `--leader-elect-lease-duration`, `--controllers`, ...). Exit status 0 on
a signal (the lease is released for a standby), 1 when the lease was lost (as Kubernetes' does:
a fresh process restarts from clean caches).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from deploy.cli.errors import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--config", metavar="PATH", help="client config (default: $SKIFF_CONFIG, else ~/.skiff/config)")
    g.add_argument("--server", metavar="HOST:PORT", help="the API server (overrides the client config)")
    g.add_argument("--token", help="bearer token (overrides the client config; needs TLS)")
    p.add_argument("--controllers", default="*", metavar="NAME,...",
                   help="controller modules to run ('*' = all: replicaset, deployment, daemonset, statefulset, "
                        "nodelifecycle, endpoints, garbagecollector, namespace)")
    p.add_argument("--workers", type=int, default=5, metavar="N", help="concurrent syncs per controller (default 5)")
    p.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True,
                   help="run only while holding the Lease kube-system/kube-controller-manager (default on)")
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0, metavar="SECONDS")
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, metavar="SECONDS")
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--leader-elect-resource-namespace", default="kube-system")
    p.add_argument("--leader-elect-resource-name", default="kube-controller-manager")
    p.add_argument("--identity", default="", help="name in the Lease (default: hostname_uuid)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics and /healthz on this port (0: any free port; default off)")
    p.add_argument("--metrics-bind-address", default="127.0.0.1", metavar="HOST")
    p.add_argument("--resync-period", type=float, default=60.0, metavar="SECONDS",
                   help="how often every cached object is reconciled again (default 60)")
    p.add_argument("--node-monitor-grace-period", type=float, default=None, metavar="SECONDS",
                   help="node lifecycle: a node not heard from for this long is unreachable (default 50)")
    p.add_argument("--log-level", default="INFO")


def build_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from controlplane.controllers.manager import DEFAULT_CONTROLLERS, ManagerOptions

    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    if not (args.leader_elect_lease_duration > args.leader_elect_renew_deadline
            > args.leader_elect_retry_period * 1.2 > 0):
        raise CommandError("need --leader-elect-lease-duration > --leader-elect-renew-deadline > "
                           "1.2 x --leader-elect-retry-period > 0")
    wanted = tuple(c.strip() for c in args.controllers.split(",") if c.strip())
    if wanted in ((), ("*",)):
        wanted = DEFAULT_CONTROLLERS
    unknown = [c for c in wanted if c not in DEFAULT_CONTROLLERS]
    if unknown:
        raise CommandError(f"--controllers: unknown {', '.join(unknown)} (known: {', '.join(DEFAULT_CONTROLLERS)})")
    extra = {} if args.node_monitor_grace_period is None else {"grace_period": args.node_monitor_grace_period}
    return ManagerOptions(
        controllers=wanted, workers=args.workers, leader_elect=args.leader_elect,
        lease_namespace=args.leader_elect_resource_namespace, lease_name=args.leader_elect_resource_name,
        lease_duration=args.leader_elect_lease_duration, renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period, identity=args.identity, metrics_port=args.metrics_port,
        metrics_host=args.metrics_bind_address, resync_period=args.resync_period or None, controller_args=extra)


async def serve(config, options) -> bool:  # type: ignore[no-untyped-def]
    from controlplane.client.api import ApiClient
    from controlplane.controllers.manager import ControllerManager

    client = ApiClient.from_config(config)
    manager = ControllerManager(client, options)
    task = asyncio.create_task(manager.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return True  # asked to stop: the lease was released on the way out
    finally:
        await client.close()


def run(args: argparse.Namespace) -> int:
    from controlplane.client.config import ConfigError, load_config

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = build_options(args)
    try:
        config = load_config(args.config, args.server, args.token)
        config.channel_credentials()  # a token without TLS is refused here, in one line
    except ConfigError as err:
        raise CommandError(str(err)) from None
    if not asyncio.run(serve(config, options)):
        raise CommandError("leader election lost; exiting (restart me to campaign again)")
    return 0
