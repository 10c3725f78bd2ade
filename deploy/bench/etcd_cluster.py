"""A throwaway 3-member etcd cluster on loopback, for benchmarking skiff against the real thing.

It runs Debian's `/usr/bin/etcd` (3.4) with default timing (heartbeat 100 ms, election 1 s) and
default durability (fsync on every commit), one data directory and one log file per member under
a directory the caller owns. Ports are picked free on 127.0.0.1 just before start.

The interface mirrors `kvstore.localcluster.LocalCluster` (start, endpoints, leader_index, kill,
stop, context manager) so the benchmark drives either system through the same code. Processes
are only ever signalled by the PIDs this object started.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kvstore.localcluster import free_ports

ETCD_BINARY = "/usr/bin/etcd"
ETCDCTL_BINARY = "/usr/bin/etcdctl"


class EtcdError(RuntimeError):
    """The etcd cluster could not be started or did not become healthy."""


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    member_id: int = 0


def etcd_available() -> bool:
    """Whether Debian's etcd server and client binaries are installed."""
    return os.access(ETCD_BINARY, os.X_OK) and os.access(ETCDCTL_BINARY, os.X_OK)


def _clean_env() -> dict[str, str]:
    """The environment without ETCD_*/ETCDCTL_* variables, which etcd would read as flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


class EtcdCluster:
    """`size` etcd members on `host`, data under `base_dir` (created; left for the caller to remove)."""

    def __init__(self, base_dir: Path, size: int = 3, host: str = "127.0.0.1",
                 extra_args: tuple[str, ...] | list[str] = ()) -> None:
        self.base_dir = Path(base_dir)
        self.size = size
        self.host = host
        self.extra_args = list(extra_args)
        self._members: list[_Member] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start every member and wait until all answer Status and agree on a leader."""
        if not os.access(ETCD_BINARY, os.X_OK):
            raise EtcdError(f"{ETCD_BINARY} not found (Debian package etcd-server)")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.size, self.host)
        self._members = [
            _Member(name=f"bench{i}", client_port=ports[2 * i], peer_port=ports[2 * i + 1],
                    data_dir=self.base_dir / f"bench{i}.etcd", log_path=self.base_dir / f"bench{i}.log")
            for i in range(self.size)
        ]
        initial = ",".join(f"{m.name}=http://{self.host}:{m.peer_port}" for m in self._members)
        token = "skiff-bench-" + secrets.token_hex(4)
        try:
            for member in self._members:
                self._spawn(member, initial, token)
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, member: _Member, initial_cluster: str, token: str) -> None:
        client_url = f"http://{self.host}:{member.client_port}"
        peer_url = f"http://{self.host}:{member.peer_port}"
        argv = [
            ETCD_BINARY, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
            "--initial-cluster-state", "new", "--logger", "zap", *self.extra_args,
        ]
        with open(member.log_path, "ab") as log:
            member.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=_clean_env())

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for index, member in enumerate(self._members):
                if member.process is not None and member.process.poll() is not None:
                    raise EtcdError(f"etcd member {index} exited with {member.process.returncode}: "
                                    f"{self._log_tail(member)}")
            try:
                leaders = set()
                for member in self._members:
                    status = self._status(member, timeout=1.0)
                    member.member_id = status.header.member_id
                    leaders.add(status.leader)
                if len(leaders) == 1 and 0 not in leaders:
                    return
                last_error = f"leaders reported: {sorted(leaders)}"
            except Exception as err:  # not up yet: connection refused, deadline
                last_error = f"{type(err).__name__}: {err}"
            time.sleep(0.1)
        raise EtcdError(f"etcd cluster not healthy after {timeout:.0f} s ({last_error})")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the members one at a time (each up to `grace` s, then SIGKILL).

        One at a time, because an etcd leader hands its leadership over before it exits: with
        every member terminating at once the hand-over has no taker and waits out its timeout
        (about 7 s here); in turn, each hand-over takes milliseconds.
        """
        for member in self._members:
            proc = member.process
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def remove_data(self) -> None:
        """Delete the members' data directories and logs (after stop)."""
        for member in self._members:
            shutil.rmtree(member.data_dir, ignore_errors=True)
            member.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "EtcdCluster":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- inspection and faults ---------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Client endpoints as host:port, in member order."""
        return [f"{self.host}:{m.client_port}" for m in self._members]

    @property
    def pids(self) -> list[int | None]:
        """Each member's PID (None if it was never started)."""
        return [m.process.pid if m.process is not None else None for m in self._members]

    def leader_index(self) -> int | None:
        """Index of the member the live members report as leader, or None if none is known."""
        by_id = {m.member_id: i for i, m in enumerate(self._members)}
        for member in self._members:
            if member.process is None or member.process.poll() is not None:
                continue
            try:
                status = self._status(member, timeout=0.5)
            except Exception:
                continue
            if status.leader in by_id:
                return by_id[status.leader]
        return None

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to member `index` (by its PID); with SIGKILL, reap it."""
        proc = self._members[index].process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def _status(self, member: _Member, timeout: float):  # -> rpc_pb2.StatusResponse
        from kvstore.client import sync_stubs
        from protos.etcd.etcdserverpb import rpc_pb2

        stubs = sync_stubs(f"{self.host}:{member.client_port}")
        try:
            return stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=timeout)
        finally:
            stubs.channel.close()

    @staticmethod
    def _log_tail(member: _Member, lines: int = 5) -> str:
        try:
            return " | ".join(member.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def check_perf(endpoints: list[str], load: str = "l", timeout: float = 240.0) -> dict[str, object]:
    """Run `etcdctl check perf --load=LOAD` against `endpoints` (etcd or skiff).

    It writes for about 60 s under its own prefix and deletes what it wrote. Returns whether it
    passed, its PASS/FAIL lines, and its exit status.
    """
    if not os.access(ETCDCTL_BINARY, os.X_OK):
        raise EtcdError(f"{ETCDCTL_BINARY} not found (Debian package etcd-client)")
    env = _clean_env()
    env["ETCDCTL_API"] = "3"
    argv = [ETCDCTL_BINARY, "check", "perf", f"--load={load}", "--endpoints=" + ",".join(endpoints)]
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"load": load, "passed": False, "lines": [f"FAIL: no answer within {timeout:.0f} s"],
                "exit_status": None, "seconds": round(time.monotonic() - started, 1)}
    text = (proc.stdout + proc.stderr).decode(errors="replace").replace("\r", "\n")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(("PASS", "FAIL"))]
    verdicts = [line for line in lines if line in ("PASS", "FAIL")]
    passed = proc.returncode == 0 and bool(verdicts) and verdicts[-1] == "PASS"
    if not lines:  # an error before any verdict (e.g. a request that failed): keep its last words
        said = [line.strip() for line in text.splitlines() if line.strip()]
        errors = [line for line in said if line.startswith("Error")]
        lines = [f"FAIL: {(errors or said or ['no output'])[-1][:300]}"]
    return {"load": load, "passed": passed, "lines": [ln for ln in lines if ln not in ("PASS", "FAIL")],
            "exit_status": proc.returncode, "seconds": round(time.monotonic() - started, 1)}
