"""Who may do what, through a real API server with TLS: tokens (every identity of `skiff cluster
init` has one), client certificates (a second server requiring them), and each role's allowed
and refused calls."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import grpc
import pytest

from controlplane.apiserver.auth import authn, certs
from deploy.components import ApiServerProcess
from controlplane.client import api as apiclient
from controlplane.client.api import ApiClient
from protos.skiff.api.v1 import coordination_pb2, core_pb2
from tests.apiutil import ApiEnv


class Cluster:
    def __init__(self, env: ApiEnv, pki: certs.PkiLayout, tokens: dict[str, str], cert_server: ApiServerProcess) -> None:
        self.env, self.pki, self.tokens, self.cert_server = env, pki, tokens, cert_server
        self.ca = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())

    def run(self, user: str | None, body: Callable[[ApiClient], Awaitable[Any]], token: str | None = None) -> Any:
        async def main() -> Any:
            tok = token if token is not None else (self.tokens[user] if user else None)
            client = ApiClient.connect(self.env.address, self.ca, tok)
            try:
                return await body(client)
            finally:
                await client.close()
        return asyncio.run(main())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("auth")
    pki = certs.init_pki(base / "pki", "test", ["127.0.0.1"], nodes=["n1", "n2"])
    tokens = {e.user: e.token for e in authn.TokenFile.load(pki.tokens).entries}
    tls = ("--tls-cert-file", str(pki.apiserver_cert), "--tls-private-key-file", str(pki.apiserver_key))
    env = ApiEnv(base, "skiff", server_args=(*tls, "--token-auth-file", str(pki.tokens)))
    env.credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    env.token = tokens["admin"]
    env.start()
    admin = pki.admin
    cert_creds = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), admin.key.read_bytes(), admin.cert.read_bytes())
    cert_server = ApiServerProcess(base / "api-certs", env.store.endpoints,
                                   extra_args=(*tls, "--client-ca-file", str(pki.ca_cert)))
    try:
        cert_server.start(timeout=60, credentials=cert_creds)
        c = Cluster(env, pki, tokens, cert_server)
        _seed(c)
        yield c
    finally:
        cert_server.stop()
        env.stop()


def _seed(c: Cluster) -> None:
    async def body(client: ApiClient) -> None:
        for name in ("n1", "n2"):
            node = core_pb2.Node()
            node.metadata.name = name
            await client.create(node)
        for name, node in (("on-n1", "n1"), ("on-n2", "n2")):
            pod = core_pb2.Pod()
            pod.metadata.name = name
            pod.spec.node_name = node
            pod.spec.containers.add(name="c", image="busybox")
            await client.create(pod, "default")
        secret = core_pb2.Secret()
        secret.metadata.name = "s"
        secret.data["k"] = b"v"
        await client.create(secret, "default")
    c.run("admin", body)


def test_tls_is_required(cluster: Cluster) -> None:
    async def body() -> None:
        async with grpc.aio.insecure_channel(cluster.env.address) as channel:
            client = ApiClient(channel, timeout=3)
            with pytest.raises(apiclient.ApiStatusError):
                await client.whoami()
    asyncio.run(body())


def test_no_or_bad_credentials_are_unauthenticated(cluster: Cluster) -> None:
    with pytest.raises(apiclient.UnauthenticatedError, match="no credentials"):
        cluster.run(None, lambda c: c.list("pods", "default"))
    with pytest.raises(apiclient.UnauthenticatedError):
        cluster.run(None, lambda c: c.list("pods", "default"), token="not-a-token")


def test_whoami_names_each_identity(cluster: Cluster) -> None:
    assert cluster.run("admin", lambda c: c.whoami())[0] == "admin"
    name, groups = cluster.run("system:node:n1", lambda c: c.whoami())
    assert name == "system:node:n1" and "system:nodes" in groups


def _node_status(name: str) -> Callable[[ApiClient], Awaitable[Any]]:
    async def body(c: ApiClient) -> Any:
        node = await c.get("nodes", name)
        node.status.phase = "Running"
        return await c.update_status(node)
    return body


def _pod_status(name: str) -> Callable[[ApiClient], Awaitable[Any]]:
    async def body(c: ApiClient) -> Any:
        pod = await c.get("pods", name, "default")
        pod.status.phase = "Running"
        return await c.update_status(pod)
    return body


def _lease(name: str, namespace: str) -> Callable[[ApiClient], Awaitable[Any]]:
    async def body(c: ApiClient) -> Any:
        lease = coordination_pb2.Lease()
        lease.metadata.name = name
        lease.spec.holder_identity = name
        try:
            return await c.create(lease, namespace)
        except apiclient.AlreadyExistsError:
            return None
    return body


def _new_pod(name: str) -> Callable[[ApiClient], Awaitable[Any]]:
    async def body(c: ApiClient) -> Any:
        pod = core_pb2.Pod()
        pod.metadata.name = name
        pod.spec.containers.add(name="c", image="busybox")
        return await c.create(pod, "default")
    return body


ALLOWED = [
    ("admin", "list secrets", lambda c: c.list("secrets", "default")),
    ("admin", "create a pod", _new_pod("by-admin")),
    ("system:node:n1", "update its own node's status", _node_status("n1")),
    ("system:node:n1", "its lease", _lease("n1", "kube-node-lease")),
    ("system:node:n1", "status of a pod bound to it", _pod_status("on-n1")),
    ("system:node:n1", "list pods", lambda c: c.list("pods", "", field_selector="spec.nodeName=n1")),
    ("system:kube-scheduler", "bind a pod", lambda c: c.bind("default", "by-admin", "n2")),
    ("system:kube-scheduler", "a lease in kube-system", _lease("kube-scheduler", "kube-system")),
    ("system:kube-controller-manager", "create a pod", _new_pod("by-kcm")),
]

REFUSED = [
    ("system:node:n1", "another node's status", _node_status("n2"), 'User "system:node:n1" cannot update'),
    ("system:node:n1", "status of a pod on another node", _pod_status("on-n2"), 'bound to node "n2"'),
    ("system:node:n1", "another node's lease", _lease("n2", "kube-node-lease"), "cannot create"),
    ("system:node:n1", "create a pod", _new_pod("by-node"), "cannot create"),
    ("system:kube-scheduler", "read secrets", lambda c: c.list("secrets", "default"), "cannot list"),
    ("system:kube-scheduler", "delete a node", lambda c: c.delete("nodes", "n1"), "cannot delete"),
]


@pytest.mark.parametrize("user,what,call", ALLOWED, ids=[f"{u}:{w}" for u, w, _ in ALLOWED])
def test_allowed(cluster: Cluster, user: str, what: str, call: Callable[[ApiClient], Awaitable[Any]]) -> None:
    cluster.run(user, call)


@pytest.mark.parametrize("user,what,call,message", REFUSED, ids=[f"{u}:{w}" for u, w, _, _ in REFUSED])
def test_refused(cluster: Cluster, user: str, what: str, call: Callable[[ApiClient], Awaitable[Any]], message: str) -> None:
    with pytest.raises(apiclient.ForbiddenError, match=message):
        cluster.run(user, call)


def test_view_role_reads_but_does_not_write(cluster: Cluster, tmp_path: Path) -> None:
    view_token = "view-token-0123456789"
    tokens = cluster.pki.tokens.read_text() + f'{view_token},viewer,viewer,"skiff:view"\n'
    token_file = tmp_path / "tokens.csv"
    token_file.write_text(tokens)
    server = ApiServerProcess(tmp_path, cluster.env.store.endpoints, extra_args=(
        "--tls-cert-file", str(cluster.pki.apiserver_cert), "--tls-private-key-file", str(cluster.pki.apiserver_key),
        "--token-auth-file", str(token_file)))
    server.start(timeout=60, credentials=cluster.ca, metadata=(("authorization", f"Bearer {view_token}"),))
    try:
        async def body() -> None:
            client = ApiClient.connect(server.address, cluster.ca, view_token)
            try:
                assert len((await client.list("pods", "default")).items) >= 2
                with pytest.raises(apiclient.ForbiddenError, match='User "viewer" cannot list resource "secrets"'):
                    await client.list("secrets", "default")
                with pytest.raises(apiclient.ForbiddenError, match="cannot delete"):
                    await client.delete("pods", "on-n1", "default")
            finally:
                await client.close()
        asyncio.run(body())
    finally:
        server.stop()


def test_client_certificates(cluster: Cluster) -> None:
    pki = cluster.pki
    node = pki.identities["system:node:n2"]

    async def body() -> None:
        creds = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), node.key.read_bytes(), node.cert.read_bytes())
        client = ApiClient.connect(cluster.cert_server.address, creds, timeout=5)
        try:
            name, groups = await client.whoami()
            assert name == "system:node:n2" and "system:nodes" in groups
            await _node_status("n2")(client)
            with pytest.raises(apiclient.ForbiddenError):
                await _node_status("n1")(client)
        finally:
            await client.close()
        bare = ApiClient.connect(cluster.cert_server.address, cluster.ca, cluster.tokens["admin"], timeout=5)
        try:
            with pytest.raises(apiclient.UnavailableError):  # the TLS handshake wants a certificate
                await bare.whoami()
        finally:
            await bare.close()
    asyncio.run(body())
