"""A calibration "system" for `skiff bench kv --calibrate`: etcd's KV and Status answered by
Python grpc.aio servers that do nothing else (no Raft, no storage, no state).

Its rows are the ceiling any Python gRPC server reaches under the bench's load on this machine:
what skiff's store costs beyond Python's gRPC is the gap between its rows and these.

Run one server: `python -m deploy.bench.noop_server HOST:PORT`.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from kvstore.localcluster import REPO_ROOT, free_ports


async def _serve(address: str) -> None:
    import grpc

    from protos.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)

    class KV(rpc_pb2_grpc.KVServicer):
        async def Range(self, request, context):  # noqa: N802
            return rpc_pb2.RangeResponse(header=header)

        async def Put(self, request, context):  # noqa: N802
            return rpc_pb2.PutResponse(header=header)

        async def DeleteRange(self, request, context):  # noqa: N802
            return rpc_pb2.DeleteRangeResponse(header=header)

    class Maintenance(rpc_pb2_grpc.MaintenanceServicer):
        async def Status(self, request, context):  # noqa: N802
            return rpc_pb2.StatusResponse(header=header, version="grpc-noop", leader=1)

    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(Maintenance(), server)
    server.add_insecure_port(address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=0.2)


class NoopCluster:
    """Three no-op servers on loopback, with the bench's cluster interface."""

    def __init__(self, size: int = 3, host: str = "127.0.0.1") -> None:
        self._endpoints = [f"{host}:{port}" for port in free_ports(size, host)]
        self._processes: list[subprocess.Popen] = []

    @property
    def endpoints(self) -> list[str]:
        return list(self._endpoints)

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        for endpoint in self._endpoints:
            self._processes.append(subprocess.Popen([sys.executable, "-m", "deploy.bench.noop_server", endpoint],
                                                    env=env, stdin=subprocess.DEVNULL))
        time.sleep(1.0)  # the bench's Status probe retries; this just avoids its first failures

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def leader_index(self) -> int | None:
        return 0

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        self._processes[index].send_signal(sig)

    @property
    def members(self) -> list:
        """For the bench's CPU accounting (it reads `members[i].process.pid`)."""
        return [type("Member", (), {"process": p})() for p in self._processes]


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
