"""Pure parts of skiff's CRI server: CRI messages to the handlers' values and back, endpoint
parsing, and the fake handler's journal (replayed by a new handler on the same root)."""
from __future__ import annotations

from pathlib import Path

import pytest

from node.runtime import oci
from node.runtime.client import normalize_endpoint
from node.runtime.containers import ContainerStatus
from node.runtime.fake import FakeHandler
from node.runtime.sandbox import NotFound, SandboxConfig
from node.runtime.server import container_request, container_status_message, sandbox_config
from protos.cri.runtime.v1 import api_pb2 as pb


def test_sandbox_config_takes_names_dns_and_the_pid_mode() -> None:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", namespace="ns", uid="u1", attempt=2), hostname="web-0",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["ns.svc"], options=["ndots:5"]),
        labels={"a": "b"}, linux=pb.LinuxPodSandboxConfig(cgroup_parent="/kubepods/pod-u1"))
    got = sandbox_config(config)
    assert got == SandboxConfig(name="web", namespace="ns", uid="u1", attempt=2, hostname="web-0",
                                dns_servers=("10.96.0.10",), dns_searches=("ns.svc",), dns_options=("ndots:5",),
                                share_process_namespace=True, cgroup_parent="/kubepods/pod-u1", labels={"a": "b"})
    config.linux.security_context.namespace_options.pid = pb.CONTAINER
    assert not sandbox_config(config).share_process_namespace


def test_container_request_maps_command_env_mounts_resources_and_security() -> None:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="app"), command=["sh"], args=["-c", "true"], working_dir="/w",
        envs=[pb.KeyValue(key="A", value="1")],
        mounts=[pb.Mount(container_path="/data", host_path="/var/lib/x", readonly=True)],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(cpu_shares=512, cpu_quota=50_000, cpu_period=100_000,
                                                 memory_limit_in_bytes=1 << 26),
            security_context=pb.LinuxContainerSecurityContext(
                run_as_user=pb.Int64Value(value=1000), no_new_privs=True,
                capabilities=pb.Capability(drop_capabilities=["NET_RAW"]))))
    got = container_request(config)
    assert (got.name, got.command, got.args, got.env, got.working_dir) == ("app", ("sh",), ("-c", "true"), (("A", "1"),), "/w")
    assert got.mounts == (oci.Mount("/data", "/var/lib/x", True),)
    assert got.resources == oci.Resources(cpu_shares=512, cpu_quota=50_000, cpu_period=100_000, memory_limit_bytes=1 << 26)
    assert (got.run_as_user, got.run_as_group, got.allow_privilege_escalation) == (1000, None, False)
    assert got.drop_capabilities == ("NET_RAW",)


def test_container_status_message_carries_the_servers_record() -> None:
    status = ContainerStatus(
        id="c1", sandbox_id="s1", name="app", attempt=1, state="CONTAINER_EXITED", created_ns=1, started_ns=2,
        finished_ns=3, exit_code=137, reason="OOMKilled", log_path="/l", labels={"k": "v"},
        info={"image": "docker.io/library/busybox:1.0", "image_id": "sha256:aa", "image_ref": "busybox@sha256:bb",
              "mounts": [{"containerPath": "/d", "hostPath": "/h"}], "resources": {"memoryLimitInBytes": "64"}})
    got = container_status_message(status)
    assert (got.state, got.exit_code, got.reason, got.finished_at) == (pb.CONTAINER_EXITED, 137, "OOMKilled", 3)
    assert (got.image.image, got.image_id, got.image_ref) == ("docker.io/library/busybox:1.0", "sha256:aa", "busybox@sha256:bb")
    assert got.mounts[0].host_path == "/h" and got.resources.linux.memory_limit_in_bytes == 64


@pytest.mark.parametrize("endpoint, target", [
    ("unix:///run/skiff/runtime.sock", "unix:///run/skiff/runtime.sock"),
    ("unix:/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
    ("/run/x.sock", "unix:///run/x.sock"),
])
def test_runtime_endpoints(endpoint: str, target: str) -> None:
    assert normalize_endpoint(endpoint) == target


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:1234", "unix://relative.sock", "x.sock"])
def test_runtime_endpoints_that_are_not_unix_sockets_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="runtime endpoint"):
        normalize_endpoint(endpoint)


def test_fake_journal_is_replayed_by_a_new_handler(tmp_path: Path) -> None:
    fake = FakeHandler(tmp_path, pod_cidr="10.9.0.0/29")
    a = fake.run_sandbox(SandboxConfig(name="a"))
    b = fake.run_sandbox(SandboxConfig(name="b"))
    fake.create_container("c1", a.id, oci.ContainerRequest("app", command=("x",)), oci.ImageConfig(), [], 0, None, {})
    fake.start_container("c1")
    fake.stop_sandbox(b.id)
    fake.remove_sandbox(b.id)
    fake.close()
    again = FakeHandler(tmp_path, pod_cidr="10.9.0.0/29")
    assert [s.id for s in again.list_sandboxes()] == [a.id]
    assert again.container_status("c1").state == "CONTAINER_RUNNING"
    # Addresses go round robin and skip live ones; a /29 has 5 pod addresses (.2-.6).
    ips = {again.run_sandbox(SandboxConfig(name=f"p{i}")).ip for i in range(4)}
    assert a.ip not in ips and len(ips) == 4
    with pytest.raises(NotFound):
        again.container_status("gone")
    with pytest.raises(oci.SpecError):
        again.create_container("c2", a.id, oci.ContainerRequest("none"), oci.ImageConfig(), [], 0, None, {})
