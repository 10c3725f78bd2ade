"""The client port with TLS and required client certificates, including forwarding between replicas."""
from __future__ import annotations

import os
import subprocess

import grpc
import pytest

from kvstore.client import TLSFiles, sync_stubs
from protos.etcd.etcdserverpb import rpc_pb2
from tests.conftest import require_etcdctl
from tests.tlsutil import make_pki


def test_mutual_tls_required_and_forwarding_works(cluster_factory, tmp_path):
    certs = make_pki(tmp_path, ["server", "client"])
    ca = tmp_path / "ca.pem"
    server_cert, server_key = certs["server"]
    cluster = cluster_factory(extra_args=("--tls-cert", str(server_cert), "--tls-key", str(server_key),
                                          "--client-ca", str(ca)), start=False)
    # LocalCluster polls Status in plain text; with TLS we wait for a leader through etcdctl instead.
    for i in range(3):
        cluster.start_member(i)
    client_cert, client_key = certs["client"]
    tls = TLSFiles(ca, client_cert, client_key)
    env = dict(os.environ, ETCDCTL_API="3")
    args = [require_etcdctl(), "--endpoints", ",".join(cluster.endpoints), "--cacert", str(ca),
            "--cert", str(client_cert), "--key", str(client_key)]
    out = ""
    for _ in range(60):
        proc = subprocess.run(args + ["put", "secure", "yes"], capture_output=True, text=True, env=env, timeout=20)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0:
            break
    assert "OK" in out, out
    # Every replica answers a linearizable read over mutual TLS (followers forward to the leader over TLS).
    for endpoint in cluster.endpoints:
        stubs = sync_stubs(endpoint, tls)
        assert stubs.kv.Range(rpc_pb2.RangeRequest(key=b"secure"), timeout=10).kvs[0].value == b"yes"
        stubs.channel.close()
    # Without a client certificate the handshake is refused.
    stubs = sync_stubs(cluster.endpoints[0], TLSFiles(ca))
    with pytest.raises(grpc.RpcError) as info:
        stubs.kv.Range(rpc_pb2.RangeRequest(key=b"secure"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    stubs.channel.close()
    # Plain text is refused too.
    stubs = sync_stubs(cluster.endpoints[1])
    with pytest.raises(grpc.RpcError):
        stubs.kv.Range(rpc_pb2.RangeRequest(key=b"secure"), timeout=5)
    stubs.channel.close()
