"""`skiff up`: a whole local cluster in the foreground (for now: a 3-replica store on loopback).

Data lives under the state directory and survives restarts of `skiff up`. Ctrl-C stops every
process it started (by PID).
"""
from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

from deploy.cli.main import CommandError

# The first member takes etcd's default client port, so a bare `etcdctl` talks to it.
CLIENT_PORTS = (2379, 2479, 2579)
PEER_PORTS = (2380, 2480, 2580)


def default_state_dir() -> Path:
    return Path(os.environ.get("SKIFF_STATE_DIR", Path.home() / ".skiff" / "state"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                   help="where the cluster keeps its data and logs (default ~/.skiff/state, or $SKIFF_STATE_DIR)")


def run(args: argparse.Namespace) -> int:
    from kvstore.localcluster import LocalCluster

    ports = [p for pair in zip(CLIENT_PORTS, PEER_PORTS) for p in pair]
    busy = sorted(set(ports) - set(_free(ports)))
    if busy:
        raise CommandError(f"ports {', '.join(map(str, busy))} are in use (another skiff up or an etcd?)")
    store_dir = args.state_dir / "kvstore"
    cluster = LocalCluster(store_dir, size=3, ports=ports)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        cluster.start(timeout=60)
        endpoints = ",".join(cluster.endpoints)
        print(f"skiff is up: store replicas at {endpoints}")
        print(f"  data and logs: {store_dir}")
        print(f"  try: ETCDCTL_API=3 etcdctl --endpoints {endpoints} put hello world")
        print(f"       ETCDCTL_API=3 etcdctl --endpoints {endpoints} endpoint status -w table")
        print("Ctrl-C stops the cluster.", flush=True)
        while not stop["now"]:
            for member in cluster.members:
                if not member.alive:
                    raise CommandError(f"{member.name} exited; see {member.log_path}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        cluster.stop()
    return 0


def _free(ports: list[int]) -> list[int]:
    import socket

    free = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                free.append(port)
            except OSError:
                pass
    return free
