"""The `skiff` command: one entry point that dispatches to every subcommand.

Each subcommand lives in its own module exposing two functions:

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int        # the process exit status

Modules are imported only when their command runs, so `skiff --help` stays fast and a broken
optional dependency of one command cannot break the others. Errors a user can act on are raised
as `CommandError` (or any exception) and printed as one line; set SKIFF_DEBUG=1 for a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

from deploy.cli.errors import CommandError
from deploy.cli.kubectl import COMMANDS as KUBECTL_COMMANDS

__all__ = ["CommandError", "main"]

# command words -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("kvstore",): ("deploy.cli.kvstore_cmd", "run one replica of the Raft key-value store (etcd v3 API)"),
    ("up",): ("deploy.cli.up_cmd", "run a local cluster in the foreground (a 3-replica store and the API server on loopback)"),
    ("reset",): ("deploy.cli.reset_cmd", "remove what skiff up left on this host: its pods, the pods' bridge, its state and client config"),
    ("apiserver",): ("deploy.cli.apiserver_cmd", "run an API server (Kubernetes-shaped objects over gRPC) against the store"),
    ("scheduler",): ("deploy.cli.scheduler_cmd", "run the scheduler: binds pending pods to nodes (filter and score plugins)"),
    ("controller-manager",): ("deploy.cli.controller_manager_cmd", "run the controllers (replica sets, deployments, daemon sets, ...) under leader election"),
    ("cluster", "init"): ("deploy.cli.cluster_cmd", "make a cluster's certificates, tokens and client configs"),
    ("agent",): ("deploy.cli.agent_cmd", "run the node agent: registers the node, runs its pods through a CRI runtime"),
    ("runtime",): ("deploy.cli.runtime_cmd", "run the CRI container runtime (runc, process and fake handlers) on a unix socket"),
    ("hollow-nodes",): ("deploy.cli.hollow_cmd", "run M hollow nodes (real node agents over an in-process fake runtime) in one process"),
    ("image",): ("deploy.cli.image_cmd", "manage the runtime's images: import, ls, rm, pull"),
    ("lab",): ("deploy.lab.cli", "simulated hosts in network namespaces: up, down, status, faults"),
    ("chaos", "run"): ("deploy.chaos.cli", "Jepsen-style run against the lab's store, with a nemesis"),
    ("bench", "kv"): ("deploy.bench.kv", "key-value store throughput and latency (optionally vs etcd)"),
    ("bench", "api"): ("deploy.bench.api", "API server: create latency with watchers open, list latency, watch fan-out"),
    ("bench", "scheduler"): ("deploy.bench.scheduler", "scheduler throughput (pods/s) and latency with hollow nodes"),
    ("bench", "pod-start"): ("deploy.bench.podstart", "node agent: time from a bound pod to Running, per runtime handler"),
    ("bench", "reconcile"): ("deploy.bench.reconcile", "reconcile latency on hollow nodes: startup, scale, rolling update, deleted pod, node lost, controller manager killed"),
    ("bench", "checker"): ("deploy.bench.checker", "linearizability checker speed (operations/s)"),
}
COMMANDS.update(KUBECTL_COMMANDS)  # apply, get, describe, ... (kubectl's habits)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skiff", description="skiff: a small, real Kubernetes.")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): top}
    for words, (module, help_text) in COMMANDS.items():
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in groups:
                group_parser = groups[words[: depth - 1]].add_parser(words[depth - 1], help=f"{words[depth - 1]} commands")
                groups[prefix] = group_parser.add_subparsers(dest="_".join(prefix) + "_command", metavar="COMMAND")
        sub = groups[words[:-1]].add_parser(words[-1], help=help_text, description=help_text)
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Parse once to find the module, then let the module add its own arguments and parse again.
    # Help flags are held back in the first pass so the module's own arguments appear in --help.
    known, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    module_name = getattr(known, "_module", None)
    if module_name is None:
        parser.print_help()
        return 2
    module = importlib.import_module(module_name)
    sub_parser = _find_subparser(parser, module_name)
    module.add_arguments(sub_parser)
    args = parser.parse_args(argv)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CommandError as err:
        print(f"skiff: {err}", file=sys.stderr)
        return err.status
    except Exception as err:  # one line for the user, never a traceback unless asked
        if os.environ.get("SKIFF_DEBUG"):
            raise
        print(f"skiff: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def run_module(module_name: str, argv: Sequence[str] | None = None) -> int:
    """`python -m <module> ARGS` runs `skiff <the module's words> ARGS` (tests and benchmarks
    start daemons that way)."""
    words = next(w for w, (module, _) in COMMANDS.items() if module == module_name)
    return main([*words, *(sys.argv[1:] if argv is None else argv)])


def _find_subparser(parser: argparse.ArgumentParser, module_name: str) -> argparse.ArgumentParser:
    stack = [parser]
    while stack:
        current = stack.pop()
        if current.get_default("_module") == module_name:
            return current
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    raise LookupError(module_name)


if __name__ == "__main__":
    sys.exit(main())
