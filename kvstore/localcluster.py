"""A store cluster of real processes on one machine (loopback): for `skiff up`, tests and benches.

Each member is a `skiff kvstore` process with its own data directory, log file and ports. The
cluster can kill (any signal), restart (same data) and find the leader through etcd's Status RPC.
Processes are tracked by PID and stopped by PID only.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import grpc

from kvstore.client import sync_stubs
from protos.etcd.etcdserverpb import rpc_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel says are free now (bound together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Member:
    name: str
    client: str
    peer: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """`size` replicas on `host`, under `base_dir` (data-N/, member-N.log, secret)."""

    def __init__(self, base_dir: Path, size: int = 3, host: str = "127.0.0.1",
                 extra_args: Sequence[str] = (), ports: Sequence[int] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.extra_args = list(extra_args)
        self.secret_file = self.base_dir / "secret"
        if not self.secret_file.exists():
            self.secret_file.write_text(secrets.token_hex(16))
            self.secret_file.chmod(0o600)
        ports = list(ports) if ports else free_ports(2 * size, host)
        self.members = [
            Member(f"m{i + 1}", f"{host}:{ports[2 * i]}", f"{host}:{ports[2 * i + 1]}",
                   self.base_dir / f"data-{i + 1}", self.base_dir / f"member-{i + 1}.log")
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.client for m in self.members]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer}" for m in self.members)

    def command(self, member: Member) -> list[str]:
        return [sys.executable, "-m", "deploy.cli.main", "kvstore", "--name", member.name,
                "--data-dir", str(member.data_dir), "--listen-client", member.client,
                "--listen-peer", member.peer, "--initial-cluster", self.initial_cluster,
                "--secret-file", str(self.secret_file), *self.extra_args]

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        for index in range(len(self.members)):
            self.start_member(index)
        self.wait_leader(timeout)

    def start_member(self, index: int) -> None:
        member = self.members[index]
        if member.alive:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        log = open(member.log_path, "ab")
        member.process = subprocess.Popen(self.command(member), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, cwd=str(REPO_ROOT))
        log.close()

    def restart(self, index: int) -> None:
        self.start_member(index)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        member = self.members[index]
        if member.process is None:
            return
        if member.process.poll() is None:
            member.process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            try:
                member.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None and member.alive:
                member.process.send_signal(signal.SIGCONT)  # a paused member could not exit
                member.process.terminate()
        for index, member in enumerate(self.members):
            if member.process is not None:
                try:
                    member.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.kill(index)

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- observing -------------------------------------------------------------------------

    def status(self, index: int, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        member = self.members[index]
        if not member.alive:
            return None
        stubs = sync_stubs(member.client)
        try:
            return stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
        finally:
            stubs.channel.close()

    def leader_index(self) -> int | None:
        """The member that reports itself as leader, if any answers so."""
        for index in range(len(self.members)):
            st = self.status(index)
            if st is not None and st.leader and st.leader == st.header.member_id:
                return index
        return None

    def wait_leader(self, timeout: float = 30.0, exclude: int | None = None) -> int:
        """Wait until a live member leads and every live member has published itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, member in enumerate(self.members):
                if member.process is not None and member.process.poll() is not None and index != exclude:
                    raise RuntimeError(f"{member.name} exited ({member.process.returncode}); see {member.log_path}")
            leader = self.leader_index()
            if leader is not None and leader != exclude and self._published():
                return leader
            time.sleep(0.1)
        raise TimeoutError(f"no leader within {timeout:.0f}s; logs in {self.base_dir}")

    def _published(self) -> bool:
        alive = [i for i, m in enumerate(self.members) if m.alive]
        stubs = sync_stubs(self.members[alive[0]].client)
        try:
            members = stubs.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=1.0).members
            named = {m.name for m in members if m.clientURLs}
            return all(self.members[i].name in named for i in alive)
        except grpc.RpcError:
            return False
        finally:
            stubs.channel.close()
