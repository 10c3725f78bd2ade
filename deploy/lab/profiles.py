"""Host profiles: which processes a lab host runs, as data.

A host has a list of roles ("store" today; later "apiserver", "scheduler", "controller-manager",
"agent"). Each role has a builder `(lab, host) -> ProcState` registered in `ROLES`; `lab up`
asks the builders for every role of every host and `lab start` re-runs the recorded argv, so a
restart reuses the same data directory and flags. A later issue adds a profile by registering a
builder and listing its role in `assign_roles` -- nothing else in the lab changes.

Store flavours: "skiff" runs `skiff kvstore` (this repository's store) with the cluster secret;
"etcd" runs Debian's etcd 3.4 as a reference to validate the lab and compare behaviour against.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable

from deploy.lab.procs import REPO_ROOT
from deploy.lab.state import HostState, LabError, LabState, ProcState

CLIENT_PORT = 2379
PEER_PORT = 2380
STORES = ("skiff", "etcd")

RoleBuilder = Callable[[LabState, HostState], ProcState]


def _store_skiff(lab: LabState, host: HostState) -> ProcState:
    cluster = ",".join(f"{h.name}={h.ip}:{PEER_PORT}" for h in lab.hosts if h.name in lab.replicas)
    argv = [
        sys.executable, "-m", "deploy.cli.main", "kvstore",
        "--name", host.name,
        "--data-dir", str(Path(host.dir) / "store"),
        "--listen-client", f"{host.ip}:{CLIENT_PORT}",
        "--listen-peer", f"{host.ip}:{PEER_PORT}",
        "--initial-cluster", cluster,
        "--secret-file", lab.secret_file,
    ]
    return ProcState(role="store", argv=argv, log=str(Path(host.dir) / "store.log"), cwd=str(REPO_ROOT))


def _store_etcd(lab: LabState, host: HostState) -> ProcState:
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    cluster = ",".join(f"{h.name}=http://{h.ip}:{PEER_PORT}" for h in lab.hosts if h.name in lab.replicas)
    client = f"http://{host.ip}:{CLIENT_PORT}"
    peer = f"http://{host.ip}:{PEER_PORT}"
    argv = [
        etcd,
        "--name", host.name,
        "--data-dir", str(Path(host.dir) / "store"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster, "--initial-cluster-state", "new",
        "--initial-cluster-token", f"skiff-lab-{lab.prefix}",
        "--logger", "zap", "--log-outputs", "stderr",
    ]
    return ProcState(role="store", argv=argv, log=str(Path(host.dir) / "store.log"), cwd=host.dir)


def _store(lab: LabState, host: HostState) -> ProcState:
    if lab.store == "skiff":
        return _store_skiff(lab, host)
    if lab.store == "etcd":
        if shutil.which("etcd") is None and not Path("/usr/bin/etcd").exists():
            raise LabError("etcd not found (apt-get install etcd-server) for --store etcd")
        return _store_etcd(lab, host)
    raise LabError(f"unknown store {lab.store!r} (choose from {', '.join(STORES)})")


ROLES: dict[str, RoleBuilder] = {"store": _store}


def assign_roles(host_count: int, replicas: int) -> list[list[str]]:
    """Roles per host index: the store on the first `replicas` hosts, nothing else yet."""
    return [["store"] if i < replicas else [] for i in range(host_count)]


def build(lab: LabState, host: HostState, role: str) -> ProcState:
    try:
        builder = ROLES[role]
    except KeyError:
        raise LabError(f"unknown host role {role!r} (known: {', '.join(ROLES)})") from None
    return builder(lab, host)
