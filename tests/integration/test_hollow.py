"""Hollow nodes end to end: `skiff apiserver` (ApiEnv) and one `skiff hollow-nodes` process with
10 nodes. They register and become Ready, renew their Leases; a pod bound to one of them runs
(fake handler: no process) and reaches Running with an IP from that node's pod CIDR; deleting
it removes it from the API. Also the in-process CRI adapter's error mapping, without processes.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from controlplane.client.api import ApiClient, NotFoundError
from node.hollow import HollowCRIClient, pod_cidrs
from protos.cri.runtime.v1 import api_pb2 as cri
from tests.apiutil import ApiEnv, obj

REPO = Path(__file__).resolve().parents[2]
COUNT = 10
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll until check() is truthy; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except NotFoundError as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    base = tmp_path_factory.mktemp("hollow")
    env = ApiEnv(base, "skiff").start()
    log = open(base / "hollow.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli.hollow_cmd", "--count", str(COUNT), "--prefix", "hn-",
         "--server", env.address, "--root", str(base / "nodes"), "--pod-cidr-base", "10.210.0.0/16",
         "--lease-interval", "1", "--status-interval", "2", "--sync-interval", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print("--- hollow-nodes log ---\n" + (base / "hollow.log").read_text(errors="replace")[-3000:])
        env.stop()


def ready(node: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def test_nodes_register_become_ready_and_renew_leases(cluster: ApiEnv) -> None:
    async def nodes(client: ApiClient) -> Any:
        return (await client.list("nodes")).items

    listed = wait_for("10 Ready hollow nodes",
                      lambda: (lambda ns: ns if len(ns) == COUNT and all(map(ready, ns)) else None)(cluster.run(nodes)))
    names = sorted(n.metadata.name for n in listed)
    assert names == sorted(f"hn-{i}" for i in range(COUNT))
    cidrs = {n.metadata.name: n.spec.pod_cidr for n in listed}
    assert cidrs["hn-3"] == "10.210.3.0/24" and len(set(cidrs.values())) == COUNT
    assert all(n.status.node_info.container_runtime_version.startswith("skiff://") for n in listed)

    async def leases(client: ApiClient) -> dict[str, str]:
        return {x.metadata.name: x.spec.renew_time for x in (await client.list("leases", "kube-node-lease")).items}

    first = wait_for("10 leases", lambda: (lambda ls: ls if len(ls) == COUNT else None)(cluster.run(leases)))
    wait_for("every lease renewed",
             lambda: all(cluster.run(leases)[name] != first[name] for name in first), timeout=30)


def test_pod_bound_to_a_hollow_node_runs_and_is_deleted(cluster: ApiEnv) -> None:
    wait_for("node hn-7", lambda: cluster.run(lambda c: c.get("nodes", "hn-7")))
    pod = obj("""
apiVersion: v1
kind: Pod
metadata: {name: hollow-pod, namespace: default}
spec:
  nodeName: hn-7
  containers: [{name: app, image: "registry.invalid/app:1.0"}, {name: side, image: "registry.invalid/side:2"}]
""")
    cluster.run(lambda c: c.create(pod, "default"))

    def running() -> Any:
        got = cluster.run(lambda c: c.get("pods", "hollow-pod", "default"))
        ok = got.status.phase == "Running" and len(got.status.container_statuses) == 2 and all(
            s.state.HasField("running") for s in got.status.container_statuses)
        return got if ok else None

    got = wait_for("pod Running", running)
    assert ipaddress.IPv4Address(got.status.pod_ip) in ipaddress.IPv4Network("10.210.7.0/24")
    assert got.status.host_ip == "127.0.0.1"
    assert {s.image for s in got.status.container_statuses} == {"registry.invalid/app:1.0", "registry.invalid/side:2"}

    cluster.run(lambda c: c.delete("pods", "hollow-pod", "default"))

    def gone() -> bool:
        try:
            cluster.run(lambda c: c.get("pods", "hollow-pod", "default"))
        except NotFoundError:
            return True
        return False
    wait_for("pod gone from the API", gone)


def test_in_process_cri_maps_errors_as_the_wire_does(tmp_path: Path) -> None:
    async def body() -> None:
        client = HollowCRIClient.for_root(tmp_path, "10.1.2.0/24", "n")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id="nope"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in (err.value.details() or "")
            assert not (await client.images.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image="x:1")))).HasField("image")
            pulled = await client.images.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image="x:1")))
            status = await client.images.ImageStatus(cri.ImageStatusRequest(image=cri.ImageSpec(image="x:1")))
            assert status.image.id == pulled.image_ref
            config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="default"))
            sid = (await client.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
            st = await client.runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sid))
            assert st.status.state == cri.SANDBOX_READY and st.status.network.ip.startswith("10.1.2.")
        finally:
            await client.close()
            await client.close()  # safe twice
    asyncio.run(body())


def test_pod_cidrs_split_the_base_and_refuse_overflow() -> None:
    assert pod_cidrs("10.200.0.0/16", 254, 2) == ["10.200.254.0/24", "10.200.255.0/24"]
    with pytest.raises(ValueError, match="not enough"):
        pod_cidrs("10.200.0.0/16", 250, 10)
