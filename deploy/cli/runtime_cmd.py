"""`skiff runtime`: skiff's container runtime, serving CRI (runtime.v1) on a unix socket.

    skiff runtime [--socket PATH] [--root DIR] [--pod-cidr CIDR] [--cluster-cidr CIDR]
                  [--bridge skiff0] [--insecure-registry HOST]... [--handlers runc,process,fake]
                  [--host-netns PATH] [--cgroup-root /skiff]

The first handler listed is the default one (RuntimeClass handler ""); by default
``runc,process,fake`` as root and ``process,fake`` otherwise. Without ``--pod-cidr`` pods get a
network namespace with loopback only (runc, process as root) and the runtime reports
NetworkReady false.

On start the runtime cleans up sandboxes a crash left half-made and serves what is on disk:
running pods are re-adopted with their ids. SIGTERM or SIGINT stop the server only: pods and
containers keep running (their shims are in their own sessions) for the next runtime to adopt.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from deploy.cli.daemon import stop_on_signals
from deploy.cli.errors import CommandError
from deploy.cli.image_cmd import default_root

HANDLERS = ("runc", "process", "fake")


def default_socket() -> Path:
    return Path("/run/skiff/runtime.sock") if os.geteuid() == 0 else Path.home() / ".skiff" / "runtime.sock"


def default_handlers() -> str:
    return "runc,process,fake" if os.geteuid() == 0 else "process,fake"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", type=Path, default=None, help=f"unix socket to serve CRI on (default: {default_socket()})")
    p.add_argument("--root", type=Path, default=None, help=f"state directory: images, pods, logs (default: {default_root()})")
    p.add_argument("--pod-cidr", default=None, help="this node's pod addresses, e.g. 10.244.1.0/24 (bridge + IPAM)")
    p.add_argument("--cluster-cidr", default=None, help="every node's pods (reached without NAT), e.g. 10.244.0.0/16")
    p.add_argument("--bridge", default="skiff0", help="the pod bridge's name (default: skiff0)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="pull over plain HTTP from this registry (loopback registries always are)")
    p.add_argument("--handlers", default=None,
                   help=f"RuntimeClass handlers, the first the default (default: {default_handlers()}); "
                        "with only 'fake', image pulls are faked too (hollow nodes)")
    p.add_argument("--host-netns", default=None, metavar="PATH",
                   help="build the pod bridge in this network namespace (a lab host's) instead of ours")
    p.add_argument("--cgroup-root", default="/skiff", help="parent cgroup of every pod (default: /skiff)")


def parse_handlers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in HANDLERS]
    if unknown or not names:
        raise CommandError(f"--handlers {text!r}: choose from {', '.join(HANDLERS)}")
    if "runc" in names and os.geteuid() != 0:
        raise CommandError("the runc handler needs root: run as root or use --handlers process,fake")
    return names


def run(args: argparse.Namespace) -> int:
    handlers = parse_handlers(args.handlers or default_handlers())
    socket_path = args.socket or default_socket()
    root = args.root or default_root()
    if len(str(socket_path)) > 100:
        raise CommandError(f"--socket {socket_path}: unix socket paths must be shorter than 108 bytes")
    return asyncio.run(_serve(args, socket_path, root, handlers))


async def _serve(args: argparse.Namespace, socket_path: Path, root: Path, handlers: list[str]) -> int:
    from node.runtime.server import make_server

    try:
        server, _ = make_server(socket_path, root, pod_cidr=args.pod_cidr, cluster_cidr=args.cluster_cidr,
                                bridge=args.bridge, host_netns=args.host_netns, insecure_registries=args.insecure_registry,
                                handlers=handlers, cgroup_root=args.cgroup_root, fake_images=handlers == ["fake"])
    except PermissionError as err:
        raise CommandError(f"{err.strerror}: {err.filename} (run as root, or pass --root and --socket)") from None
    await server.start()
    stop = stop_on_signals()
    print(f"skiff runtime: serving CRI on unix://{socket_path} (root {root}, handlers {','.join(handlers)})",
          file=sys.stderr, flush=True)
    await stop.wait()
    # Pods keep running: only the server stops; a new runtime adopts them from the disk.
    await server.stop(grace=2)
    socket_path.unlink(missing_ok=True)
    return 0



if __name__ == "__main__":  # `python -m deploy.cli.runtime_cmd ...` is `skiff ...` for this command
    from deploy.cli.main import run_module
    sys.exit(run_module("deploy.cli.runtime_cmd"))
