"""skiff's CRI runtime over a real unix-socket grpc.aio server: the runc handler end to end
through a real `skiff runtime` process (restarted while its containers run), the process handler
(without isolation everywhere; isolated as root), the fake handler at 1,000 pods, errors.

runc tests need root, runc, busybox-static and docker-registry; their pods' bridge lives in a
network namespace the test creates (``--host-netns``), so the machine's network is not touched.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from node.network.bridge import BridgeConfig, BridgeNetwork, teardown_host
from node.runtime import logs, rootfs
from node.runtime.cgroups import Cgroups
from node.runtime.client import CRIClient
from node.runtime.fake import FakeHandler
from node.runtime.handlers import RuncHandler, RuntimeHandler
from node.runtime.images.importer import import_archive
from node.runtime.images.pull import Puller
from node.runtime.images.service import ImageServicer
from node.runtime.images.store import ImageStore
from node.runtime.process import ProcessHandler
from node.runtime.server import RuntimeServicer
from protos.cri.runtime.v1 import api_pb2 as pb
from tests.imagebuild import LocalRegistry, build_busybox_oci, oci_archive
from tests.procs import Proc

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, overlay mounts, cgroups")
needs_runc = pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)")
needs_busybox = pytest.mark.skipif(not rootfs.HOST_BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)")


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not rootfs.HOST_BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    base = tmp_path_factory.mktemp("busybox")
    return oci_archive(build_busybox_oci(base / "layout", "1.0"), base / "busybox.tar")


@contextlib.asynccontextmanager
async def serve(handlers: Sequence[RuntimeHandler], store: ImageStore) -> AsyncIterator[CRIClient]:
    """Both CRI services on an in-process grpc.aio server on a unix socket, and a client."""
    sock_dir = tempfile.mkdtemp(prefix="skiff-cri-", dir="/tmp")  # unix socket paths are short
    runtime = RuntimeServicer(handlers, store)
    runtime.recover()
    server = grpc.aio.server()
    runtime.add_to_server(server)
    ImageServicer(store, Puller(store)).add_to_server(server)
    server.add_insecure_port(f"unix://{sock_dir}/cri.sock")
    await server.start()
    try:
        async with CRIClient.connect(f"unix://{sock_dir}/cri.sock") as cri:
            yield cri
    finally:
        await server.stop(None)
        shutil.rmtree(sock_dir, ignore_errors=True)


def pod_config(name: str, log_dir: Path | None = None, **labels: str) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="default", uid=f"uid-{name}"),
        hostname=name, log_directory=str(log_dir or ""), labels={"app": name, **labels},
        annotations={"note": "kept"},
        # As the kubelet sends it (an unset pid mode is POD: proto3's zero value).
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))))


def container_config(name: str, image: str, command: Sequence[str], **kw: object) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
                              command=list(command), log_path=f"{name}/0.log", labels={"c": name},
                              **kw)  # type: ignore[arg-type]


async def run_container(cri: CRIClient, sandbox_id: str, pod: pb.PodSandboxConfig,
                        config: pb.ContainerConfig) -> str:
    created = await cri.runtime.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=pod), timeout=60)
    await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=created.container_id), timeout=60)
    return str(created.container_id)


async def status_of(cri: CRIClient, container_id: str) -> pb.ContainerStatus:
    response = await cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=container_id), timeout=30)
    return response.status


async def wait_state(cri: CRIClient, container_id: str, state: int, timeout: float = 30) -> pb.ContainerStatus:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while True:
        status = await status_of(cri, container_id)
        if status.state == state:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"container {container_id} stayed {pb.ContainerState.Name(status.state)}")
        await asyncio.sleep(0.1)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def log_records(path: Path) -> list[logs.LogRecord]:
    return [logs.parse_record(line) for line in path.read_bytes().splitlines()]


def assert_no_processes_mention(text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if text in cmdline and str(os.getpid()) != entry.name:
                    left.append(f"{entry.name}: {cmdline}")
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left behind: {left}")
        time.sleep(0.1)


@contextlib.contextmanager
def host_netns(tmp_path: Path) -> Iterator[str]:
    """A network namespace standing in for the node's host network."""
    path = tmp_path / "hostns"
    path.touch()
    subprocess.run(["unshare", f"--net={path}", "true"], check=True)
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", str(path)], check=False)
        path.unlink(missing_ok=True)


# --- fake -----------------------------------------------------------------------------------


def test_fake_handler_runs_1000_pods_quickly_and_survives_a_restart(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "root")
    count = 1000

    async def scenario() -> tuple[float, list[str], list[str]]:
        async with serve([FakeHandler(tmp_path / "root")], store) as cri:
            started = time.perf_counter()

            async def one(i: int) -> tuple[str, str]:
                pod = pod_config(f"hollow-{i}", tmp_path / "logs" / str(i))
                sandbox = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="fake"))
                cid = await run_container(cri, sandbox.pod_sandbox_id, pod,
                                          container_config("app", "registry.invalid/app:1", ["serve"]))
                return sandbox.pod_sandbox_id, cid

            ids = await asyncio.gather(*(one(i) for i in range(count)))
            elapsed = time.perf_counter() - started
            listed = await cri.runtime.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
                state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))))
            assert len(listed.containers) == count
            sandbox_id, cid = ids[7]
            status = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
            assert status.status.state == pb.SANDBOX_READY and status.status.network.ip.startswith("10.255.")
            assert status.status.runtime_handler == "fake"
            ips = set()
            for s, _ in ids[:50]:
                ips.add((await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=s))).status.network.ip)
            assert len(ips) == 50
            exec_result = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["true"]))
            assert (exec_result.exit_code, exec_result.stdout) == (0, b"")
            await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=5))
            stopped = await status_of(cri, cid)
            assert (stopped.state, stopped.exit_code, stopped.reason) == (pb.CONTAINER_EXITED, 0, "Completed")
            assert Path(stopped.log_path).exists()
            return elapsed, [s for s, _ in ids], [c for _, c in ids]

        raise AssertionError("unreachable")

    elapsed, sandboxes, containers = asyncio.run(scenario())
    print(f"\nfake handler: {count} sandboxes + {count} containers (run, create, start) in {elapsed:.2f} s "
          f"({count / elapsed:.0f} pods/s)")
    assert elapsed < 120  # a hang guard

    async def after_restart() -> None:
        async with serve([FakeHandler(tmp_path / "root")], store) as cri:
            listed = await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())
            assert sorted(s.id for s in listed.items) == sorted(sandboxes)
            by_label = await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(
                filter=pb.PodSandboxFilter(label_selector={"app": "hollow-3"})))
            assert [s.id for s in by_label.items] == [sandboxes[3]]
            assert (await status_of(cri, containers[0])).state == pb.CONTAINER_RUNNING
            assert (await status_of(cri, containers[7])).state == pb.CONTAINER_EXITED
            for sandbox_id in sandboxes:
                await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
                await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
            assert not (await cri.runtime.ListContainers(pb.ListContainersRequest())).containers

    asyncio.run(after_restart())


def test_fake_containers_can_exit_by_themselves(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serve([FakeHandler(tmp_path / "root")], ImageStore(tmp_path / "root")) as cri:
            pod = pod_config("job")
            sandbox = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))
            cid = await run_container(cri, sandbox.pod_sandbox_id, pod, container_config(
                "c", "x", ["run"], annotations={"skiff.io/fake-exit-after-seconds": "0.2",
                                                 "skiff.io/fake-exit-code": "3"}))
            status = await wait_state(cri, cid, pb.CONTAINER_EXITED, timeout=10)
            assert (status.exit_code, status.reason) == (3, "Error")

    asyncio.run(scenario())


def test_host_network_sandbox_gets_no_pod_ip_and_says_node(tmp_path: Path) -> None:
    """namespace_options.network NODE is honoured: no address from the pod CIDR, NODE in the status."""
    async def scenario() -> None:
        async with serve([FakeHandler(tmp_path / "root", "10.244.9.0/24")], ImageStore(tmp_path / "root")) as cri:
            pod = pod_config("on-host")
            pod.linux.security_context.namespace_options.network = pb.NODE
            sid = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
            status = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid))).status
            assert (status.network.ip, status.linux.namespaces.options.network) == ("", pb.NODE)
            other = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config("in-pod")))).pod_sandbox_id
            status = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=other))).status
            assert status.network.ip.startswith("10.244.9.") and status.linux.namespaces.options.network == pb.POD

    asyncio.run(scenario())


# --- errors ---------------------------------------------------------------------------------


def test_unknown_handler_and_unknown_ids_are_clear_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serve([FakeHandler(tmp_path / "root")], ImageStore(tmp_path / "root")) as cri:
            err = await rpc_error(cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(
                config=pod_config("p"), runtime_handler="kata")))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'kata'" in (err.details() or "") and "fake" in (err.details() or "")
            err = await rpc_error(cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="nope")))
            assert err.code() == grpc.StatusCode.NOT_FOUND and "nope" in (err.details() or "")
            err = await rpc_error(cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="gone")))
            assert err.code() == grpc.StatusCode.NOT_FOUND
            # Removal of what is not there succeeds (CRI: idempotent).
            await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id="gone"))
            await cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id="gone"))
            version = await cri.runtime.Version(pb.VersionRequest())
            assert (version.runtime_name, version.runtime_api_version) == ("skiff", "v1")
            status = await cri.runtime.Status(pb.StatusRequest())
            assert {c.type: c.status for c in status.status.conditions} == {"RuntimeReady": True, "NetworkReady": True}
            assert [h.name for h in status.runtime_handlers] == ["", "fake"]

    asyncio.run(scenario())


# --- process ----------------------------------------------------------------------------------


def test_process_handler_without_isolation(tmp_path: Path, busybox_archive: Path) -> None:
    """What a development machine without root gets: host processes, CRI logs, exit codes."""
    root = tmp_path / "root"
    store = ImageStore(root)
    image_id = import_archive(store, busybox_archive)[0].id

    async def scenario() -> None:
        async with serve([ProcessHandler(root, None, isolated=False)], store) as cri:
            pod = pod_config("dev", tmp_path / "pods" / "dev")
            sandbox = await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod, runtime_handler="process"))
            sid = sandbox.pod_sandbox_id
            job = await run_container(cri, sid, pod, container_config(
                "job", image_id, ["sh", "-c", 'echo "hello $GREETING"; echo oops >&2; exit 4'],
                envs=[pb.KeyValue(key="GREETING", value="world")]))
            svc = await run_container(cri, sid, pod, container_config("svc", image_id, ["sleep", "300"]))
            assert (await status_of(cri, svc)).state == pb.CONTAINER_RUNNING
            done = await wait_state(cri, job, pb.CONTAINER_EXITED)
            assert (done.exit_code, done.reason) == (4, "Error")
            assert done.finished_at >= done.started_at > done.created_at > 0
            assert done.log_path == str(tmp_path / "pods" / "dev" / "job" / "0.log")
            records = log_records(Path(done.log_path))
            assert [(r.stream, r.content) for r in records] == [("stdout", b"hello world"), ("stderr", b"oops")]
            result = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=svc, cmd=["sh", "-c", "echo $GREETING-x; exit 2"], timeout=10))
            assert (result.exit_code, result.stdout) == (2, b"-x\n")
            err = await rpc_error(cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=svc, cmd=["sleep", "30"], timeout=1)))
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            status = await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid))
            assert status.status.network.ip == "127.0.0.1"
            assert status.status.linux.namespaces.options.network == pb.NODE
            await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=svc, timeout=10))
            stopped = await status_of(cri, svc)
            assert (stopped.state, stopped.exit_code) == (pb.CONTAINER_EXITED, 128 + signal.SIGTERM)
            await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
            await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
            assert not (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items

    asyncio.run(scenario())
    assert not list((root / "leases").iterdir()), "image leases must be released with the containers"


@needs_root
@needs_busybox
def test_process_handler_isolated_in_the_pod_network_and_image_rootfs(tmp_path: Path, busybox_archive: Path) -> None:
    root = tmp_path / "root"
    store = ImageStore(root)
    image_id = import_archive(store, busybox_archive)[0].id
    with host_netns(tmp_path) as netns:
        config = BridgeConfig(pod_cidr="10.244.9.0/24", state_dir=root / "network", host_netns=netns,
                              bridge="skiffp0")
        handler = ProcessHandler(root, BridgeNetwork(config), isolated=True)

        async def scenario() -> None:
            async with serve([handler], store) as cri:
                pod = pod_config("iso", tmp_path / "pods")
                sid = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod))).pod_sandbox_id
                ip = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid))).status.network.ip
                assert ip.startswith("10.244.9.")
                web = await run_container(cri, sid, pod, container_config(
                    "web", image_id, ["sh", "-c", "echo isolated > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"]))
                deadline = time.monotonic() + 20
                while True:
                    got = await cri.runtime.ExecSync(pb.ExecSyncRequest(
                        container_id=web, cmd=["wget", "-q", "-O", "-", f"http://{ip}:8080/"], timeout=5))
                    if got.exit_code == 0 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert got.stdout == b"isolated\n"
                hosts = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=web, cmd=["cat", "/etc/hosts"]))
                assert f"{ip}\tiso" in hosts.stdout.decode()
                # Chrooted: the image's busybox, not the host's /usr.
                assert (await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=web, cmd=["ls", "/usr"]))).exit_code != 0
                await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
                assert (await status_of(cri, web)).state == pb.CONTAINER_EXITED
                await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))

        try:
            asyncio.run(scenario())
        finally:
            for sandbox in handler.list_sandboxes():
                handler.remove_sandbox(sandbox.id)
            teardown_host(config)
        assert not [p for p in rootfs.mounted_paths() if str(root) in str(p)], "mounts left"
        assert_no_processes_mention(str(root))


# --- runc, through a real `skiff runtime` process ---------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if not LocalRegistry.available():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    if not rootfs.HOST_BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    base = tmp_path_factory.mktemp("registry")
    layout = build_busybox_oci(base / "layout", "1.0")
    with LocalRegistry(base / "reg") as reg:
        reg.push(layout, "1.0", "library/busybox", "1.0")
        yield reg


@needs_root
@needs_runc
@needs_busybox
def test_runc_pod_through_a_restarted_skiff_runtime(tmp_path: Path, registry: LocalRegistry) -> None:
    root = tmp_path / "root"
    sock_dir = Path(tempfile.mkdtemp(prefix="skiff-rt-", dir="/tmp"))
    socket_path = sock_dir / "runtime.sock"
    cgroup_root = f"/skiff-test-{secrets.token_hex(4)}"
    with host_netns(tmp_path) as netns:
        runtime = Proc("deploy.cli.runtime_cmd", ["--socket", str(socket_path), "--root", str(root), "--pod-cidr", "10.244.8.0/24",
                                  "--host-netns", netns, "--bridge", "skiffr0", "--cgroup-root", cgroup_root,
                                  "--handlers", "runc,fake"], tmp_path / "runtime.log")
        config = BridgeConfig(pod_cidr="10.244.8.0/24", state_dir=root / "network", host_netns=netns, bridge="skiffr0")
        try:
            runtime.start()
            ids = asyncio.run(_runc_first_half(socket_path, registry, tmp_path))
            runtime.stop()  # the containers keep running without it
            runtime.start()
            asyncio.run(_runc_second_half(socket_path, ids))
        finally:
            runtime.stop()
            leftover = RuncHandler(root, BridgeNetwork(config), cgroup_root=cgroup_root)
            for sandbox in leftover.list_sandboxes():
                leftover.remove_sandbox(sandbox.id)
            teardown_host(config)
            shutil.rmtree(sock_dir, ignore_errors=True)
            busy = Cgroups().remove(cgroup_root)
            print((tmp_path / "runtime.log").read_text(errors="replace")[-3000:])
    assert not busy and not Cgroups().exists(cgroup_root), f"cgroups still hold processes: {busy}"
    assert not [p for p in rootfs.mounted_paths() if str(root) in str(p)], "mounts left"
    assert_no_processes_mention(str(root))
    assert not list((root / "leases").iterdir()), "image leases must be released with the containers"


async def _connect(socket_path: Path) -> CRIClient:
    cri = CRIClient.connect(f"unix://{socket_path}")
    await cri.wait_ready(timeout=60)
    return cri


async def _runc_first_half(socket_path: Path, registry: LocalRegistry, tmp_path: Path) -> dict[str, str]:
    async with await _connect(socket_path) as cri:
        ref = f"{registry.host}/library/busybox:1.0"
        image_id = (await cri.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)).image_ref
        status = await cri.runtime.Status(pb.StatusRequest())
        assert all(c.status for c in status.status.conditions), status
        pod = pod_config("web", tmp_path / "pods" / "web")
        sid = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod), timeout=120)).pod_sandbox_id
        sandbox = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid))).status
        assert sandbox.state == pb.SANDBOX_READY and sandbox.network.ip.startswith("10.244.8.")
        assert (sandbox.metadata.name, sandbox.labels["app"], sandbox.annotations["note"]) == ("web", "web", "kept")
        assert sandbox.runtime_handler == "runc" and sandbox.created_at > 0
        server = await run_container(cri, sid, pod, container_config(
            "server", ref, ["sh", "-c", "echo hello-over-localhost > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"],
            linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20))))
        client = await run_container(cri, sid, pod, container_config(
            "client", image_id, ["sh", "-c", "for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/ && exit 3; "
                                             "sleep 0.1; done; exit 1"]))
        running = await status_of(cri, server)
        assert running.state == pb.CONTAINER_RUNNING and running.started_at > 0
        assert running.image_id == image_id and running.image.image == ref
        assert running.resources.linux.memory_limit_in_bytes == 64 << 20
        done = await wait_state(cri, client, pb.CONTAINER_EXITED)
        assert (done.exit_code, done.reason) == (3, "Error")
        records = log_records(Path(done.log_path))
        assert [(r.stream, r.content, r.partial) for r in records] == [("stdout", b"hello-over-localhost", False)]
        result = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=server, cmd=["hostname"], timeout=10))
        assert (result.exit_code, result.stdout) == (0, b"web\n")
        stats = (await cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=server))).stats
        assert stats.memory.usage_bytes.value > 0 and stats.cpu.usage_core_nano_seconds.value > 0
        await cri.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
            container_id=server, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 << 20)))
        assert (await status_of(cri, server)).resources.linux.memory_limit_in_bytes == 96 << 20
        return {"sandbox": sid, "server": server, "client": client}


async def _runc_second_half(socket_path: Path, ids: dict[str, str]) -> None:
    async with await _connect(socket_path) as cri:
        sandboxes = (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
        assert [(s.id, s.state) for s in sandboxes] == [(ids["sandbox"], pb.SANDBOX_READY)]
        listed = (await cri.runtime.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=ids["sandbox"])))).containers
        assert {c.id: c.state for c in listed} == {ids["server"]: pb.CONTAINER_RUNNING,
                                                   ids["client"]: pb.CONTAINER_EXITED}
        result = await cri.runtime.ExecSync(pb.ExecSyncRequest(
            container_id=ids["server"], cmd=["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], timeout=10))
        assert result.stdout == b"hello-over-localhost\n"
        await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=ids["server"], timeout=1))
        stopped = await status_of(cri, ids["server"])
        # httpd is PID 1 without a TERM handler: killed after the 1 s grace period.
        assert (stopped.state, stopped.exit_code) == (pb.CONTAINER_EXITED, 137)
        await cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=ids["client"]))
        await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=ids["sandbox"]))
        stopped_pod = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=ids["sandbox"]))).status
        assert stopped_pod.state == pb.SANDBOX_NOTREADY
        await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=ids["sandbox"]))
        assert not (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
        assert not (await cri.runtime.ListContainers(pb.ListContainersRequest())).containers
