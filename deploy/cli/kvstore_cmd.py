"""`skiff kvstore`: run one replica of the store in the foreground until SIGTERM/SIGINT."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from deploy.cli.daemon import stop_on_signals
from deploy.cli.main import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="this member's name (must appear in --initial-cluster)")
    p.add_argument("--data-dir", required=True, type=Path, help="journal and snapshots live here")
    p.add_argument("--listen-client", required=True, metavar="HOST:PORT", help="etcd v3 gRPC API address")
    p.add_argument("--listen-peer", required=True, metavar="HOST:PORT", help="Raft address (authenticated with the secret)")
    p.add_argument("--advertise-client", metavar="HOST:PORT", help="client address other members forward to (default: --listen-client)")
    p.add_argument("--initial-cluster", required=True, metavar="n1=HOST:PORT,...", help="every member's name and peer address")
    p.add_argument("--secret-file", required=True, type=Path, help="cluster secret: the Raft port only accepts peers that know it")
    p.add_argument("--tls-cert", type=Path, help="serve the client port with TLS using this certificate ...")
    p.add_argument("--tls-key", type=Path, help="... and this key")
    p.add_argument("--client-ca", type=Path, help="require client certificates signed by this CA")
    p.add_argument("--compaction-retention", type=int, default=10_000, metavar="REVISIONS",
                   help="MVCC history kept (revisions); 0 turns automatic compaction off (default 10000)")
    p.add_argument("--compaction-interval", type=float, default=30.0, metavar="SECONDS",
                   help="how often the leader compacts MVCC history (default 30)")
    p.add_argument("--snapshot-entries", type=int, default=20_000, metavar="N",
                   help="compact the Raft log into a snapshot after this many entries (default 20000)")
    p.add_argument("--no-fsync", action="store_true",
                   help="acknowledge before the journal is on stable storage (unsafe: a power loss can lose acknowledged writes)")
    p.add_argument("--log-level", default="INFO")


def parse_cluster(spec: str) -> dict[str, str]:
    members: dict[str, str] = {}
    for item in filter(None, spec.split(",")):
        name, sep, addr = item.partition("=")
        if not sep or not name or ":" not in addr:
            raise CommandError(f"--initial-cluster: '{item}' is not NAME=HOST:PORT")
        members[name] = addr.removeprefix("http://")
    return members


def build_config(args: argparse.Namespace):
    from kvstore.raft import RaftSettings
    from kvstore.replica import ReplicaConfig

    cluster = parse_cluster(args.initial_cluster)
    if cluster.get(args.name) != args.listen_peer:
        raise CommandError(f"--initial-cluster must list {args.name}={args.listen_peer}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    try:
        secret = args.secret_file.read_text().strip()
    except OSError as err:
        raise CommandError(f"--secret-file: {err.strerror}: {args.secret_file}") from None
    if len(secret) < 16:
        raise CommandError("--secret-file: the cluster secret must be at least 16 characters")
    return ReplicaConfig(
        name=args.name, data_dir=args.data_dir, listen_client=args.listen_client,
        listen_peer=args.listen_peer, initial_cluster=cluster, secret=secret,
        advertise_client=args.advertise_client, tls_cert=args.tls_cert, tls_key=args.tls_key,
        client_ca=args.client_ca, compaction_retention=args.compaction_retention,
        compaction_interval=args.compaction_interval,
        raft=RaftSettings(durable=not args.no_fsync, log_compaction_entries=args.snapshot_entries),
    )


async def serve(config) -> None:
    from kvstore.replica import Replica
    from kvstore.server import make_server

    replica = Replica(config)
    await replica.start()
    server = make_server(replica)
    await server.start()
    logging.getLogger("skiff.kvstore").info("%s serving %s (peer %s)", config.name, config.client_url, config.listen_peer)
    stop = stop_on_signals()
    await stop.wait()
    await server.stop(grace=0.5)
    await replica.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pysyncobj").setLevel(logging.WARNING)
    config = build_config(args)
    # The Raft tick thread and the gRPC loop hand the GIL back and forth on every request; the
    # default 5 ms switch interval would add up to that much to each hand-off.
    sys.setswitchinterval(0.0005)
    asyncio.run(serve(config))
    return 0
