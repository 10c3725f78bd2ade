"""`skiff exec POD [-c CONTAINER] [--timeout S] -- COMMAND [ARG...]`: run a command in a container.

The command runs to completion on the pod's node (NodeService.Exec, CRI ExecSync; no terminal,
no stdin); its stdout and stderr are printed and `skiff exec` exits with the command's exit
code. Finding the node and the credentials are `skiff logs`' (see logs_cmd.node_service).
"""
from __future__ import annotations

import argparse
import sys

from controlplane.client import scheme
from deploy.cli.errors import CommandError
from deploy.cli.kubectl.common import Session, add_connection_arguments, run_session
from deploy.cli.kubectl.logs_cmd import call_node, pod_name
from protos.skiff.node.v1 import node_pb2, node_pb2_grpc


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--container", default="", help="the container (optional when the pod has one)")
    p.add_argument("--timeout", type=int, default=0, help="kill the command after this many seconds (default: none)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _options(p)
    add_connection_arguments(p)
    # Everything from POD on is parsed by `split_words`: argparse alone cannot take options
    # between POD and `--` and also keep the command's own options (`sh -c ...`) untouched.
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="POD [-c CONTAINER] -- COMMAND [ARG...]",
                   help="the pod, then the command to run after --")


def split_words(words: list[str], args: argparse.Namespace) -> tuple[str, list[str]]:
    """(pod, command) from `POD [options] -- COMMAND...`; options there land in `args`."""
    if "--" in words:
        cut = words.index("--")
        head, command = words[:cut], words[cut + 1:]
    else:
        head, command = words[:1], words[1:]
    parser = argparse.ArgumentParser(prog="skiff exec", add_help=False)
    parser.add_argument("pod")
    _options(parser)
    add_connection_arguments(parser)
    defaults = {k: v for k, v in vars(args).items() if k != "words"}
    try:
        parsed = parser.parse_args(head, argparse.Namespace(**defaults))
    except SystemExit:
        raise CommandError("usage: skiff exec POD [-c CONTAINER] [--timeout S] -- COMMAND [ARG...]") from None
    for key, value in vars(parsed).items():
        setattr(args, key, value)
    return str(parsed.pod), command


def run(args: argparse.Namespace) -> int:
    if not args.words:
        raise CommandError("usage: skiff exec POD [-c CONTAINER] [--timeout S] -- COMMAND [ARG...]")
    pod, command = split_words(list(args.words), args)
    name = pod_name(pod)
    if not command:
        raise CommandError("you must specify at least one command for the container: skiff exec POD -- COMMAND")

    async def body(session: Session) -> int:
        namespace = session.namespace_for(scheme.by_resource("pods"))
        request = node_pb2.ExecRequest(namespace=namespace, pod=name, container=args.container, command=command,
                                       timeout_seconds=args.timeout)

        async def call(stub: node_pb2_grpc.NodeServiceStub, metadata: tuple[tuple[str, str], ...]) -> int:
            resp = await stub.Exec(request, metadata=metadata)
            sys.stdout.buffer.write(resp.stdout)
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(resp.stderr)
            sys.stderr.buffer.flush()
            return int(resp.exit_code)

        return await call_node(session, namespace, name, call)

    return run_session(args, body)



if __name__ == "__main__":  # `python -m deploy.cli.kubectl.exec_cmd ...` is `skiff ...` for this command
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.cli.kubectl.exec_cmd"))
