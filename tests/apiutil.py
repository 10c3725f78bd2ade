"""Test harness for the API: a store (skiff's or etcd) and `skiff apiserver` processes on loopback.

`ApiEnv` owns what it started and stops it by PID. Tests drive the API with
`env.run(lambda client: ...)`: a fresh ApiClient inside a fresh event loop per call, so tests
stay plain functions.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import grpc
import yaml

from deploy.components import ApiServerProcess
from controlplane.client import codec
from controlplane.client.api import ApiClient
from deploy.bench.etcd_cluster import EtcdCluster, etcd_available
from kvstore.localcluster import LocalCluster

T = TypeVar("T")


class ApiEnv:
    def __init__(self, base: Path, backend: str, server_args: tuple[str, ...] = ("--no-auth",),
                 servers: int = 1) -> None:
        self.base = base
        self.backend = backend
        self.server_args = server_args
        self.store: LocalCluster | EtcdCluster
        if backend == "etcd":
            self.store = EtcdCluster(base / "etcd", size=1)
        else:
            self.store = LocalCluster(base / "store", size=3)
        self.servers: list[ApiServerProcess] = []
        self.count = servers
        self.credentials: grpc.ChannelCredentials | None = None
        self.token: str | None = None

    def start(self) -> "ApiEnv":
        self.store.start(timeout=60)
        for _ in range(self.count):
            self.add_server()
        return self

    def add_server(self) -> ApiServerProcess:
        proc = ApiServerProcess(self.base / "api", self.store.endpoints, extra_args=self.server_args)
        self.servers.append(proc)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        proc.start(timeout=60, credentials=self.credentials, metadata=metadata)
        return proc

    def stop(self) -> None:
        for proc in self.servers:
            proc.stop()
        self.store.stop()

    @property
    def address(self) -> str:
        return self.servers[0].address

    def client(self, server: int = 0, token: str | None = None,
               credentials: grpc.ChannelCredentials | None = None) -> ApiClient:
        return ApiClient.connect(self.servers[server].address, credentials or self.credentials,
                                 token if token is not None else self.token)

    def run(self, body: Callable[[ApiClient], Awaitable[T]], server: int = 0, **kw: Any) -> T:
        async def main() -> T:
            client = self.client(server, **kw)
            try:
                return await body(client)
            finally:
                await client.close()
        return asyncio.run(main())


def backends() -> list[str]:
    """skiff's store always; etcd 3.4 when Debian's etcd-server is installed."""
    return ["skiff", "etcd"] if etcd_available() else ["skiff"]


def obj(text: str) -> Any:
    """A served object from a YAML manifest."""
    return codec.decode_object(yaml.safe_load(text))
