"""`skiff apiserver`: run one API server in the foreground until SIGTERM/SIGINT.

Flag names follow kube-apiserver's where they mean the same thing (--etcd-servers,
--tls-cert-file, --client-ca-file, --token-auth-file, --service-cluster-ip-range,
--service-node-port-range).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from deploy.cli.daemon import stop_on_signals
from deploy.cli.errors import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="127.0.0.1:6443", metavar="HOST:PORT", help="API address (default 127.0.0.1:6443)")
    p.add_argument("--etcd-servers", required=True, metavar="URL,...",
                   help="store endpoints (skiff's store or etcd), comma-separated")
    p.add_argument("--etcd-cafile", type=Path, help="CA of the store's TLS certificate")
    p.add_argument("--etcd-certfile", type=Path, help="client certificate for the store")
    p.add_argument("--etcd-keyfile", type=Path, help="client key for the store")
    p.add_argument("--tls-cert-file", type=Path, help="serve TLS with this certificate ...")
    p.add_argument("--tls-private-key-file", type=Path, help="... and this key")
    p.add_argument("--client-ca-file", type=Path, help="accept client certificates signed by this CA (CN=user, O=groups)")
    p.add_argument("--token-auth-file", type=Path, help="static bearer tokens: CSV token,user,uid,\"group1,group2\"")
    p.add_argument("--no-auth", action="store_true",
                   help="no authentication or authorization: every caller is an administrator (development only)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/16", metavar="CIDR")
    p.add_argument("--service-node-port-range", default="30000-32767", metavar="LOW-HIGH")
    p.add_argument("--max-watches-per-user", type=int, default=5000)
    p.add_argument("--watch-cache-size", type=int, default=10_000, metavar="EVENTS",
                   help="recent events kept per resource for watches that resume (default 10000)")
    p.add_argument("--bookmark-interval", type=float, default=10.0, metavar="SECONDS",
                   help="how often a quiet watch that asked for bookmarks gets one (default 10)")
    p.add_argument("--watch-flush-interval", type=float, default=0.01, metavar="SECONDS",
                   help="least time between two messages on one watch; events meanwhile go together (default 0.01)")
    p.add_argument("--watch-message-rate", type=float, default=2000.0, metavar="PER_SECOND",
                   help="watch messages per second per resource the server aims not to exceed: watchers wait "
                        "(watchers / rate) s between messages, at most 0.1 s, and get events in batches (default 2000)")
    p.add_argument("--log-level", default="INFO")


def build_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from controlplane.apiserver.server import ApiServerConfig
    from controlplane.apiserver.service import ServiceConfig
    from kvstore.client import TLSFiles

    if bool(args.tls_cert_file) != bool(args.tls_private_key_file):
        raise CommandError("--tls-cert-file and --tls-private-key-file go together")
    if not args.no_auth and not (args.token_auth_file or args.client_ca_file):
        raise CommandError("give --token-auth-file and/or --client-ca-file (or --no-auth for development)")
    if args.client_ca_file and not args.tls_cert_file:
        raise CommandError("--client-ca-file needs TLS: give --tls-cert-file and --tls-private-key-file")
    low, sep, high = args.service_node_port_range.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or int(low) > int(high):
        raise CommandError(f"--service-node-port-range: '{args.service_node_port_range}' is not LOW-HIGH")
    for path in (args.tls_cert_file, args.tls_private_key_file, args.client_ca_file, args.token_auth_file,
                 args.etcd_cafile):
        if path is not None and not path.is_file():
            raise CommandError(f"no such file: {path}")
    store_tls = TLSFiles(args.etcd_cafile, args.etcd_certfile, args.etcd_keyfile) if args.etcd_cafile else None
    service = ServiceConfig(bookmark_interval=args.bookmark_interval,
                            max_watches_per_user=args.max_watches_per_user,
                            watch_flush_interval=args.watch_flush_interval,
                            watch_message_rate=args.watch_message_rate)
    return ApiServerConfig(
        store_endpoints=[e for e in args.etcd_servers.split(",") if e], listen=args.listen,
        store_tls=store_tls, tls_cert=args.tls_cert_file, tls_key=args.tls_private_key_file,
        client_ca=args.client_ca_file, token_file=args.token_auth_file, no_auth=args.no_auth,
        service_cidr=args.service_cluster_ip_range, node_port_range=(int(low), int(high)), service=service,
        watch_history=args.watch_cache_size)


async def serve(config) -> None:  # type: ignore[no-untyped-def]
    from controlplane.apiserver.server import ApiServer

    server = ApiServer(config)
    await server.start()
    logging.getLogger("skiff.apiserver").info("serving the API on %s (port %d)", config.listen, server.port)
    stop = stop_on_signals()
    await stop.wait()
    await server.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = build_config(args)
    try:
        asyncio.run(serve(config))
    except ValueError as err:
        raise CommandError(str(err)) from None
    return 0
