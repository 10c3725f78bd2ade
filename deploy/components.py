"""A skiff daemon (`skiff apiserver`, `skiff scheduler`, `skiff controller-manager`, `skiff
agent`, ...) as a child process: started with its log in a file, checked for life, stopped by the
PID it was given (SIGTERM, then SIGKILL after a grace period). `skiff up`, the benchmarks and the
tests use it so every place starts and stops components the same way. `ApiServerProcess` also
waits until the API answers.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from kvstore.localcluster import free_ports
from protos.skiff.api.v1 import api_pb2, api_pb2_grpc


class Component:
    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "deploy.cli.main", *self.args]

    def start(self) -> "Component":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # A daemon given --server and no --config must not pick up the user's ~/.skiff/config
            # (its CA and token would turn a plain-text connection into TLS).
            isolate = {"SKIFF_CONFIG": "none"} if "--server" in self.args and "--config" not in self.args else {}
            env = dict(os.environ, PYTHONUNBUFFERED="1", **isolate, **(self.env or {}))
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(5)


class ApiServerProcess(Component):
    """`skiff apiserver` on loopback against the given store endpoints."""

    def __init__(self, base_dir: Path, store_endpoints: list[str], port: int | None = None,
                 extra_args: tuple[str, ...] = (), host: str = "127.0.0.1") -> None:
        self.store_endpoints = store_endpoints
        self.host = host
        self.port = port or free_ports(1, host)[0]
        self.extra_args = extra_args
        super().__init__(f"apiserver-{self.port}", [], base_dir)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "deploy.cli.main", "apiserver", "--listen", self.address,
                "--etcd-servers", ",".join(self.store_endpoints), *self.extra_args]

    def start(self, timeout: float = 30.0, credentials: grpc.ChannelCredentials | None = None,  # type: ignore[override]
              metadata: tuple[tuple[str, str], ...] = ()) -> "ApiServerProcess":
        """Spawn the server and wait until it answers with these credentials."""
        super().start()
        self.wait_ready(timeout, credentials, metadata)
        return self

    def wait_ready(self, timeout: float = 30.0, credentials: grpc.ChannelCredentials | None = None,
                   metadata: tuple[tuple[str, str], ...] = ()) -> None:
        """Until the server answers a Get of namespace default (it exists once bootstrap ran)."""
        deadline = time.monotonic() + timeout

        async def probe() -> bool:
            if credentials is None:
                channel = grpc.aio.insecure_channel(self.address)
            else:
                channel = grpc.aio.secure_channel(self.address, credentials)
            async with channel:
                stub = api_pb2_grpc.ApiStub(channel)
                try:
                    await stub.Get(api_pb2.GetRequest(resource="namespaces", name="default"),
                                   metadata=metadata, timeout=2.0)
                    return True
                except grpc.aio.AioRpcError:
                    return False

        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"skiff apiserver exited with {self.process.returncode}: {self.log_tail()}")
            if asyncio.run(probe()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"skiff apiserver on {self.address} not ready after {timeout:.0f}s: {self.log_tail()}")

    def __enter__(self) -> "ApiServerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
