"""Thin access to an etcd v3 endpoint (skiff's store or a real etcd): channels and stubs.

This is deliberately small: the generated stubs are the API. It exists so every tool (the lab,
the chaos runner, the benchmarks, tests) opens channels the same way, with the same message
size limits and the same TLS handling.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from protos.etcd.etcdserverpb import rpc_pb2_grpc
from protos.skiff.kvstore.v1 import peer_pb2_grpc

# etcd's default request limit is 1.5 MiB; replies can be larger (ranges), so allow more.
MAX_RECV_BYTES = 64 * 1024 * 1024
MAX_SEND_BYTES = 2 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_RECV_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
]


@dataclass(frozen=True)
class TLSFiles:
    """Client-side TLS material: a CA to trust and, for mutual TLS, a certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


def strip_scheme(endpoint: str) -> str:
    """'http://127.0.0.1:2379' -> '127.0.0.1:2379' (etcd tools accept both forms)."""
    for scheme in ("http://", "https://", "unix://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme):]
    return endpoint


class Stubs:
    """The five etcd services on one channel, plus skiff's replica-to-replica `peer` service."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.channel = channel
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.watch = rpc_pb2_grpc.WatchStub(channel)
        self.lease = rpc_pb2_grpc.LeaseStub(channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.peer = peer_pb2_grpc.PeerStub(channel)


def sync_stubs(endpoint: str, tls: TLSFiles | None = None) -> Stubs:
    """Blocking stubs on a new channel to `endpoint` (host:port or http://host:port)."""
    target = strip_scheme(endpoint)
    if tls is None:
        channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    else:
        channel = grpc.secure_channel(target, tls.credentials(), options=CHANNEL_OPTIONS)
    return Stubs(channel)


def aio_stubs(endpoint: str, tls: TLSFiles | None = None) -> Stubs:
    """asyncio stubs on a new grpc.aio channel; call inside a running event loop."""
    target = strip_scheme(endpoint)
    if tls is None:
        channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    else:
        channel = grpc.aio.secure_channel(target, tls.credentials(), options=CHANNEL_OPTIONS)
    return Stubs(channel)
