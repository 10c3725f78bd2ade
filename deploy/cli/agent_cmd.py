"""`skiff agent`: the node agent (skiff's kubelet) for this host.

    skiff agent [--node-name N] (--server HOST:PORT | --config FILE) [--token T]
                [--runtime-endpoint unix:///run/skiff/runtime.sock] [--root DIR]
                [--pod-cidr CIDR] [--node-ip IP] [--max-pods 110] [--cpu N] [--memory Q]
                [--system-reserved cpu=100m,memory=256Mi] [--node-labels k=v,...]
                [--lease-interval 10] [--status-interval 10] [--status-report-interval 300] [--sync-interval 1]
                [--listen-node-service HOST:PORT] [--node-service-cert F --node-service-key F]
                [--backoff-initial 10] [--backoff-max 300]

It registers the Node, heartbeats (Lease in kube-node-lease), runs the pods bound to the node
through the CRI runtime, and serves container logs and exec (`skiff logs`, `skiff exec`) on the
node service (default `<node ip>:10250`). SIGTERM or SIGINT stop the agent only: the pods keep
running, and the next agent adopts them.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.cli.daemon import run_until_stopped
from deploy.cli.errors import CommandError

if TYPE_CHECKING:
    from node.agent.agent import AgentConfig


def default_root() -> Path:
    return Path("/var/lib/skiff/agent") if os.geteuid() == 0 else Path.home() / ".skiff" / "agent"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from deploy.cli.runtime_cmd import default_socket

    p.add_argument("--node-name", default=None, help="this node's name (default: the host name)")
    p.add_argument("--server", metavar="HOST:PORT", help="the API server (overrides the client config)")
    p.add_argument("--config", metavar="PATH", help="client config file (default: $SKIFF_CONFIG, else ~/.skiff/config)")
    p.add_argument("--token", help="bearer token (overrides the client config; needs TLS)")
    p.add_argument("--runtime-endpoint", default=None,
                   help=f"the CRI runtime's socket (default: unix://{default_socket()})")
    p.add_argument("--root", type=Path, default=None, help=f"state: volumes, logs (default: {default_root()})")
    p.add_argument("--pod-cidr", default="", help="this node's pod CIDR when the control plane gives none")
    p.add_argument("--node-ip", default=None, help="the node's InternalIP (default: the address that routes to the API)")
    p.add_argument("--max-pods", type=int, default=110, help="pods capacity (default: 110)")
    p.add_argument("--cpu", default="", help="cpu capacity to report (default: the host's CPU count)")
    p.add_argument("--memory", default="", help="memory capacity to report (default: /proc/meminfo's MemTotal)")
    p.add_argument("--system-reserved", default="", metavar="cpu=Q,memory=Q",
                   help="capacity kept from pods: allocatable = capacity - this")
    p.add_argument("--node-labels", default="", metavar="k=v,...", help="extra labels for the Node")
    p.add_argument("--lease-interval", type=float, default=10.0, help="seconds between Lease renewals (default: 10)")
    p.add_argument("--status-interval", type=float, default=10.0,
                   help="seconds between computing the node status; it is written when it changed (default: 10)")
    p.add_argument("--status-report-interval", type=float, default=300.0,
                   help="seconds after which an unchanged node status is written anyway (default: 300)")
    p.add_argument("--sync-interval", type=float, default=1.0,
                   help="seconds between a pod worker's looks at the runtime (default: 1)")
    p.add_argument("--listen-node-service", default="", metavar="HOST:PORT",
                   help="the node service's address (logs, exec; default: <node ip>:10250)")
    p.add_argument("--node-service-cert", type=Path, default=None, help="TLS certificate for the node service")
    p.add_argument("--node-service-key", type=Path, default=None, help="its key")
    p.add_argument("--backoff-initial", type=float, default=10.0, help="crash-loop backoff's first delay, seconds")
    p.add_argument("--backoff-max", type=float, default=300.0, help="crash-loop backoff's longest delay, seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="log every action")


def parse_pairs(text: str, flag: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{flag} {text!r}: want key=value[,key=value...]")
        out[key] = value
    return out


def build_config(args: argparse.Namespace) -> AgentConfig:
    from controlplane.client.config import ConfigError, load_config
    from deploy.cli.runtime_cmd import default_socket
    from node.agent.agent import AgentConfig, default_node_ip
    from node.agent.node import NodeConfig
    from node.agent.plan import BackoffPolicy
    from node.runtime.client import normalize_endpoint

    try:
        client = load_config(args.config, args.server, args.token)
    except ConfigError as err:
        raise CommandError(str(err)) from None
    endpoint = args.runtime_endpoint or f"unix://{default_socket()}"
    try:
        normalize_endpoint(endpoint)
    except ValueError as err:
        raise CommandError(f"--runtime-endpoint: {err}") from None
    if (args.node_service_cert is None) != (args.node_service_key is None):
        raise CommandError("--node-service-cert and --node-service-key go together")
    if args.backoff_initial <= 0 or args.backoff_max < args.backoff_initial:
        raise CommandError("need 0 < --backoff-initial <= --backoff-max")
    node = NodeConfig(
        name=(args.node_name or socket.gethostname()).lower(), node_ip=args.node_ip or default_node_ip(client.server),
        pod_cidr=args.pod_cidr, max_pods=args.max_pods, cpu=args.cpu, memory=args.memory,
        reserved=parse_pairs(args.system_reserved, "--system-reserved"),
        labels=parse_pairs(args.node_labels, "--node-labels"),
        status_interval=args.status_interval, status_report_interval=args.status_report_interval,
        lease_interval=args.lease_interval)
    return AgentConfig(node=node, client=client, runtime_endpoint=endpoint,
                       root=args.root or default_root(), listen_node_service=args.listen_node_service,
                       node_service_cert=args.node_service_cert, node_service_key=args.node_service_key,
                       backoff=BackoffPolicy(initial=args.backoff_initial, maximum=args.backoff_max),
                       sync_interval=args.sync_interval)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = build_config(args)
    return asyncio.run(_serve(config))


async def _serve(config: AgentConfig) -> int:
    from node.agent.agent import Agent

    agent = Agent(config)

    def announce() -> None:
        print(f"skiff agent: node {config.node.name} ({config.node.node_ip}), runtime {config.runtime_endpoint}, "
              f"node service port {agent.node_service_port}", file=sys.stderr, flush=True)
    return await run_until_stopped(agent.run, agent.ready, announce)



if __name__ == "__main__":  # `python -m deploy.cli.agent_cmd ...` is `skiff ...` for this command
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.cli.agent_cmd"))
