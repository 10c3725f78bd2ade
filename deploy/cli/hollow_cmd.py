"""`skiff hollow-nodes`: M hollow nodes in this one process (real node agents, fake runtime).

    skiff hollow-nodes --count M [--prefix hollow-] [--start 0] (--server HOST:PORT | --config FILE)
                       [--token T] [--pod-cidr-base 10.200.0.0/16] [--root DIR] [--node-ip 127.0.0.1]
                       [--max-pods 110] [--cpu N] [--memory Q] [--node-labels k=v,...]
                       [--lease-interval 10] [--status-interval 10] [--status-report-interval 300] [--sync-interval 10]

Nodes are named `<prefix><start>` .. `<prefix><start+M-1>`; node i gets the i-th /24 of
`--pod-cidr-base` as its pod CIDR (so processes given disjoint `--start` ranges never overlap).
Pods bound to them "run" at once without processes (the `fake` handler; see node/hollow.py).
Use one process per ~100 nodes: they share one Python interpreter, one core.

`--sync-interval` defaults to 10 s rather than the agent's 1 s: it is how often a pod worker
re-reads the runtime to notice exits, and hollow containers only exit when a pod asks for it
(the skiff.io/fake-exit-* annotations); API changes wake workers at once either way.

Prints `skiff hollow-nodes: M nodes registered ...` on stderr once every Node exists. SIGTERM or
SIGINT stop it; SIGSTOP freezes every node in it (their Leases stop being renewed: a "lost" node).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.cli.daemon import run_until_stopped
from deploy.cli.errors import CommandError

if TYPE_CHECKING:
    from node.agent.agent import AgentConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, required=True, help="how many hollow nodes this process runs")
    p.add_argument("--prefix", default="hollow-", help="node name prefix (default hollow-)")
    p.add_argument("--start", type=int, default=0, help="index of the first node (default 0)")
    p.add_argument("--server", metavar="HOST:PORT", help="the API server (overrides the client config)")
    p.add_argument("--config", metavar="PATH", help="client config file (default: $SKIFF_CONFIG, else ~/.skiff/config)")
    p.add_argument("--token", help="bearer token (overrides the client config; needs TLS)")
    p.add_argument("--pod-cidr-base", default="10.200.0.0/16", help="node i gets the i-th /24 of this (default 10.200.0.0/16)")
    p.add_argument("--root", type=Path, default=None, help="state of every node: <root>/<node> (default: a temporary directory)")
    p.add_argument("--node-ip", default="127.0.0.1", help="every node's InternalIP; node services listen there (default 127.0.0.1)")
    p.add_argument("--max-pods", type=int, default=110, help="pods capacity per node (default 110)")
    p.add_argument("--cpu", default="", help="cpu capacity to report (default: the host's CPU count)")
    p.add_argument("--memory", default="", help="memory capacity to report (default: the host's)")
    p.add_argument("--node-labels", default="", metavar="k=v,...", help="extra labels for every node")
    p.add_argument("--lease-interval", type=float, default=10.0, help="seconds between Lease renewals (default 10)")
    p.add_argument("--status-interval", type=float, default=10.0,
                   help="seconds between computing each node's status; written when it changed (default 10)")
    p.add_argument("--status-report-interval", type=float, default=300.0,
                   help="seconds after which an unchanged node status is written anyway (default 300)")
    p.add_argument("--sync-interval", type=float, default=10.0, help="seconds between a pod worker's runtime polls (default 10)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every action of every agent")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.count < 1 or args.start < 0:
        raise CommandError("--count must be at least 1 and --start not negative")
    if min(args.lease_interval, args.status_interval, args.sync_interval) <= 0:
        raise CommandError("--lease-interval, --status-interval and --sync-interval must be positive")
    if args.root is not None:
        return asyncio.run(_serve(args, args.root))
    with tempfile.TemporaryDirectory(prefix="skiff-hollow-") as tmp:
        return asyncio.run(_serve(args, Path(tmp)))


def _template(args: argparse.Namespace, root: Path) -> AgentConfig:
    from controlplane.client.config import ConfigError, load_config
    from deploy.cli.agent_cmd import parse_pairs
    from node.agent.agent import AgentConfig
    from node.agent.node import NodeConfig

    try:
        client = load_config(args.config, args.server, args.token)
        client.channel_credentials()  # a token without TLS is refused here, in one line
    except ConfigError as err:
        raise CommandError(str(err)) from None
    node = NodeConfig(name="template", node_ip=args.node_ip, max_pods=args.max_pods, cpu=args.cpu,
                      memory=args.memory, labels=parse_pairs(args.node_labels, "--node-labels"),
                      status_interval=args.status_interval, status_report_interval=args.status_report_interval,
                      lease_interval=args.lease_interval)
    return AgentConfig(node=node, client=client, runtime_endpoint="inprocess://", root=root,
                       sync_interval=args.sync_interval)


async def _serve(args: argparse.Namespace, root: Path) -> int:
    from node.hollow import HollowNodes, HollowSpec, hollow_configs

    spec = HollowSpec(prefix=args.prefix, start=args.start, count=args.count, pod_cidr_base=args.pod_cidr_base)
    try:
        configs = hollow_configs(_template(args, root), spec)
    except ValueError as err:
        raise CommandError(str(err)) from None
    nodes = HollowNodes(configs)

    def announce() -> None:
        names = [c.node.name for c in configs]
        print(f"skiff hollow-nodes: {len(names)} nodes registered ({names[0]}..{names[-1]}) in "
              f"{nodes.registered_in:.1f}s, root {root}", file=sys.stderr, flush=True)
    return await run_until_stopped(nodes.run, nodes.ready, announce)



if __name__ == "__main__":  # `python -m deploy.cli.hollow_cmd ...` is `skiff ...` for this command
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.cli.hollow_cmd"))
