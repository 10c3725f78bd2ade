"""An API server process: the gRPC server, its watch caches, and the first namespaces.

`ApiServer(config)` is started and stopped inside a running asyncio loop. It keeps no state of
its own — every object lives in the store — so several may run against one store (each with
its own caches) and any may be killed at any time.

Security: with `tls_cert`/`tls_key` the port speaks TLS only; with `client_ca` it requires client
certificates (gRPC's Python server cannot ask for one without requiring it), whose subject names
the user (CN) and groups (O); `token_file` holds bearer tokens, and a token, when sent, names the
user even on a connection with a certificate. `no_auth` turns authentication and authorization off — for
tests and development on loopback only; it is never the default.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import message_factory

from controlplane.apiserver import errors
from controlplane.apiserver.admission import Admission
from controlplane.apiserver.auth import authn
from controlplane.apiserver.lister import Lister
from controlplane.apiserver.registry import Registry
from controlplane.apiserver.service import ApiService, ServiceConfig
from controlplane.apiserver.storage import StoreClient
from controlplane.apiserver.watchcache import ResourceCache
from controlplane.client import scheme
from controlplane.client.timeutil import SystemClock, WallClock
from kvstore.client import TLSFiles
from protos.skiff.api.v1 import api_pb2, core_pb2

log = logging.getLogger(__name__)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-node-lease")
MAX_REQUEST_BYTES = 3 * 1024 * 1024     # Kubernetes' request body limit
MAX_RESPONSE_BYTES = 512 * 1024 * 1024  # a list of every pod of a big cluster


@dataclass
class ApiServerConfig:
    store_endpoints: list[str]
    listen: str = "127.0.0.1:6443"
    store_tls: TLSFiles | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    token_file: Path | None = None
    no_auth: bool = False
    service_cidr: str = "10.96.0.0/16"
    node_port_range: tuple[int, int] = (30000, 32767)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    watch_history: int = 10_000


def _serialize(response: object) -> bytes:
    """Watch events arrive already encoded (once for every watcher); replies are messages."""
    return response if isinstance(response, bytes) else response.SerializeToString()  # type: ignore[attr-defined]


def api_handlers(service: ApiService) -> grpc.GenericRpcHandler:
    """The Api service's handlers, like the generated registration but letting a handler send
    pre-encoded bytes, so a watch event is serialized once and not once per watcher."""
    handlers = {}
    for method in api_pb2.DESCRIPTOR.services_by_name["Api"].methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        make = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(service, method.name), request_deserializer=request_cls.FromString,
                                     response_serializer=_serialize)
    return grpc.method_handlers_generic_handler("skiff.api.v1.Api", handlers)


class ApiServer:
    def __init__(self, config: ApiServerConfig, clock: WallClock | None = None) -> None:
        if not config.no_auth and not (config.token_file or config.client_ca):
            raise ValueError("no way to authenticate: give a token file or a client CA (or no_auth for development)")
        if config.client_ca and not config.tls_cert:
            raise ValueError("client certificates need TLS: give tls_cert and tls_key")
        self.config = config
        self.clock = clock or SystemClock()
        self.store: StoreClient | None = None
        self.caches: dict[str, ResourceCache] = {}
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._bootstrap: asyncio.Task[None] | None = None

    async def start(self) -> None:
        cfg = self.config
        self.store = StoreClient(cfg.store_endpoints, cfg.store_tls)
        await self.store.prefer_leader()
        self.caches = {k.resource: ResourceCache(k, self.store, cfg.watch_history) for k in scheme.KINDS}
        for cache in self.caches.values():
            cache.start()
        ns_cache = self.caches["namespaces"]
        admission = Admission(self.store, cfg.service_cidr, cfg.node_port_range,
                              namespaces=lambda name: ns_cache.objects.get(name))
        registry = Registry(self.store, self.caches, self.clock, admission)
        lister = Lister(self.store, self.caches)
        service = ApiService(registry, lister, self.caches, self._authenticator(), cfg.service)
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.so_reuseport", 0),
        ])
        self.server.add_generic_rpc_handlers((api_handlers(service),))
        if cfg.tls_cert and cfg.tls_key:
            creds = grpc.ssl_server_credentials(
                [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                root_certificates=cfg.client_ca.read_bytes() if cfg.client_ca else None,
                # gRPC's Python server can only "not ask" or "require": with a client CA every
                # client must present a certificate (a bearer token may still name the user).
                require_client_auth=cfg.client_ca is not None)
            self.port = self.server.add_secure_port(cfg.listen, creds)
        else:
            self.port = self.server.add_insecure_port(cfg.listen)
        await self.server.start()
        self._bootstrap = asyncio.create_task(self._create_namespaces(registry))

    def _authenticator(self) -> authn.Authenticator | None:
        cfg = self.config
        if cfg.no_auth:
            return None
        tokens = authn.TokenFile.load(cfg.token_file) if cfg.token_file else None
        return authn.Authenticator(tokens, allow_client_certs=cfg.client_ca is not None)

    async def _create_namespaces(self, registry: Registry) -> None:
        """Make the namespaces every cluster has; retried until the store answers."""
        kind = scheme.by_resource("namespaces")
        pending = list(INITIAL_NAMESPACES)
        delay = 0.1
        while pending:
            name = pending[0]
            ns = core_pb2.Namespace()
            ns.metadata.name = name
            try:
                await registry.create(kind, "", ns)
            except errors.AlreadyExists:
                pass
            except errors.Unavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            pending.pop(0)

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until every cache has listed and the initial namespaces exist."""
        async def wait() -> None:
            for cache in self.caches.values():
                await cache.ready.wait()
            if self._bootstrap is not None:
                await self._bootstrap
        await asyncio.wait_for(wait(), timeout)

    async def stop(self, grace: float = 1.0) -> None:
        if self._bootstrap is not None:
            self._bootstrap.cancel()
        if self.server is not None:
            await self.server.stop(grace)
        for cache in self.caches.values():
            await cache.stop()
        if self.store is not None:
            await self.store.close()
