"""TLS and authentication end to end: a grpc.aio server on 127.0.0.1 with certificates from init_pki.

The server answers only WhoAmI (the generated `skiff.api.v1.Api` service) with the user the
authenticator found. It listens twice, because grpc's Python API offers only two modes:
- the token port (`require_client_auth=False`): the server does not even ask for a client
  certificate, so bearer tokens identify callers and everyone else is anonymous;
- the mutual-TLS port (`require_client_auth=True`): a certificate signed by the cluster CA is
  required, and its CN/O identify the caller.
"""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Awaitable, Callable, Iterator

import grpc
import pytest

from controlplane.apiserver.auth import certs
from controlplane.apiserver.auth.authn import Authenticator, TokenFile, authenticate_rpc
from controlplane.client.config import ClientConfig, load_config
from protos.skiff.api.v1 import api_pb2, api_pb2_grpc

CALL_TIMEOUT = 10  # a hang guard only; every call here answers or fails at once


class WhoAmIOnly(api_pb2_grpc.ApiServicer):
    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def WhoAmI(self, request: api_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext) -> api_pb2.WhoAmIResponse:
        user = await authenticate_rpc(self.authenticator, context)
        return api_pb2.WhoAmIResponse(username=user.name, groups=list(user.groups))


@dataclasses.dataclass
class Env:
    pki: certs.PkiLayout
    token_port: int
    mtls_port: int

    def config(self, user: str, port: int, **changes: object) -> ClientConfig:
        cfg = load_config(self.pki.identities[user].config, server=f"127.0.0.1:{port}")
        return dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]


Scenario = Callable[[Env], Awaitable[None]]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Callable[[Scenario], None]]:
    pki = certs.init_pki(tmp_path / "pki", "itest", ["127.0.0.1"], ["n1"])

    async def serve_and(scenario: Scenario) -> None:
        server = grpc.aio.server()
        api_pb2_grpc.add_ApiServicer_to_server(
            WhoAmIOnly(Authenticator(TokenFile.load(pki.tokens), allow_client_certs=True)), server)
        pair = [(pki.apiserver_key.read_bytes(), pki.apiserver_cert.read_bytes())]
        ca = pki.ca_cert.read_bytes()
        token_port = server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=False))
        mtls_port = server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials(pair, root_certificates=ca, require_client_auth=True))
        await server.start()
        try:
            await scenario(Env(pki, token_port, mtls_port))
        finally:
            await server.stop(grace=None)

    yield lambda scenario: asyncio.run(serve_and(scenario))


async def whoami(cfg: ClientConfig) -> tuple[str, list[str]]:
    async with cfg.open_channel() as channel:
        reply = await api_pb2_grpc.ApiStub(channel).WhoAmI(api_pb2.WhoAmIRequest(), timeout=CALL_TIMEOUT)
    return reply.username, list(reply.groups)


async def whoami_fails(cfg: ClientConfig) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await whoami(cfg)
    return err.value


def test_token_user_recognised(run: Callable[[Scenario], None]) -> None:
    async def scenario(env: Env) -> None:
        # admin.conf carries a token and a certificate; this port never asks for the certificate.
        assert await whoami(env.config("admin", env.token_port)) == (
            "admin", ["system:masters", "system:authenticated"])
        node = env.config("system:node:n1", env.token_port, client_certificate=None, client_key=None)
        assert await whoami(node) == ("system:node:n1", ["system:nodes", "system:authenticated"])
    run(scenario)


def test_client_certificate_user_recognised_with_groups(run: Callable[[Scenario], None]) -> None:
    async def scenario(env: Env) -> None:
        node = env.config("system:node:n1", env.mtls_port, token=None)
        assert await whoami(node) == ("system:node:n1", ["system:nodes", "system:authenticated"])
        scheduler = env.config("system:kube-scheduler", env.mtls_port, token=None)
        assert await whoami(scheduler) == ("system:kube-scheduler", ["system:authenticated"])
    run(scenario)


def test_no_credentials_is_anonymous(run: Callable[[Scenario], None]) -> None:
    async def scenario(env: Env) -> None:
        bare = env.config("admin", env.token_port, token=None, client_certificate=None, client_key=None)
        assert await whoami(bare) == ("system:anonymous", ["system:unauthenticated"])
        # Where client auth is not required, grpc does not request the certificate: it identifies nobody.
        cert_only = env.config("admin", env.token_port, token=None)
        assert await whoami(cert_only) == ("system:anonymous", ["system:unauthenticated"])
    run(scenario)


def test_invalid_token_is_unauthenticated(run: Callable[[Scenario], None]) -> None:
    async def scenario(env: Env) -> None:
        for port in (env.token_port, env.mtls_port):
            err = await whoami_fails(env.config("admin", port, token="not-a-token"))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == "invalid bearer token"
    run(scenario)


def test_wrong_ca_cannot_connect(run: Callable[[Scenario], None], tmp_path: Path) -> None:
    other = certs.init_pki(tmp_path / "other", "other", ["127.0.0.1"], [])

    async def scenario(env: Env) -> None:
        # The client does not trust the server's CA.
        cfg = env.config("admin", env.token_port, certificate_authority=other.ca_cert)
        assert (await whoami_fails(cfg)).code() == grpc.StatusCode.UNAVAILABLE
        # The server does not trust the client's CA.
        foreign = dataclasses.replace(load_config(other.admin.config, server=f"127.0.0.1:{env.mtls_port}"),
                                      certificate_authority=env.pki.ca_cert, token=None)
        assert (await whoami_fails(foreign)).code() == grpc.StatusCode.UNAVAILABLE
    run(scenario)


def test_mutual_tls_port_requires_a_certificate(run: Callable[[Scenario], None]) -> None:
    async def scenario(env: Env) -> None:
        token_only = env.config("admin", env.mtls_port, client_certificate=None, client_key=None)
        assert (await whoami_fails(token_only)).code() == grpc.StatusCode.UNAVAILABLE
    run(scenario)


def test_plain_text_client_cannot_talk_to_the_tls_port(run: Callable[[Scenario], None]) -> None:
    async def scenario(env: Env) -> None:
        plain = ClientConfig(server=f"127.0.0.1:{env.token_port}")
        assert plain.channel_credentials() is None
        assert (await whoami_fails(plain)).code() == grpc.StatusCode.UNAVAILABLE
    run(scenario)
