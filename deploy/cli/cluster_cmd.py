"""`skiff cluster init`: make (or complete) a cluster's certificates, tokens and client configs.

    skiff cluster init --dir DIR [--name skiff] [--api-address ADDR ...] [--node NAME ...]

Idempotent, like the `init_pki` it wraps: the CA in DIR is reused, so running it again with
another `--node` adds that node's identity and leaves the rest as it was.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from controlplane.apiserver.auth.certs import DEFAULT_API_PORT, PkiLayout, init_pki
from deploy.cli.errors import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, type=Path, help="directory for the CA, certificates, tokens and configs")
    p.add_argument("--name", default="skiff", help="cluster name (the CA is named after it; default skiff)")
    p.add_argument("--api-address", action="append", default=[], metavar="ADDR",
                   help="host name or IP the API server is reached at (repeatable; the first goes in the "
                        "client configs; localhost and 127.0.0.1 are always included)")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help=f"API server port (default {DEFAULT_API_PORT})")
    p.add_argument("--node", action="append", default=[], metavar="NAME", help="a node to make an identity for (repeatable)")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.api_port < 65536:
        raise CommandError(f"--api-port {args.api_port}: not a TCP port")
    try:
        layout = init_pki(args.dir, args.name, args.api_address, args.node, api_port=args.api_port)
    except ValueError as err:
        raise CommandError(str(err)) from None
    except OSError as err:
        raise CommandError(f"{err.filename or args.dir}: {err.strerror}") from None
    print(summary(layout))
    return 0


def summary(layout: PkiLayout) -> str:
    """What was written and kept, and how to use the admin config."""
    lines = [f"PKI in {layout.directory}:"]
    lines += [f"  wrote {p.name}" for p in layout.written]
    if layout.kept:
        lines.append(f"  kept {len(layout.kept)} existing files ({', '.join(sorted({p.name for p in layout.kept}))})")
    lines.append(f"identities: {', '.join(layout.identities)}")
    admin = layout.admin.config.resolve()
    lines.append(f"admin config: {admin}")
    lines.append(f"  export SKIFF_CONFIG={admin}")
    return "\n".join(lines)
