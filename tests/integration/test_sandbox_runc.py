"""Pods and containers through runc for real: sandboxes, shared namespaces, OOM, exec, re-adoption,
CRI logs. Needs root (namespaces, mounts, cgroups) and runc; each test leaves nothing behind.

The "host" of each test is a network namespace the test creates, so the machine's own network
is never touched; the containers' root is a busybox-static tree used as a single image layer.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.network.bridge import BridgeConfig, BridgeNetwork, teardown_host
from node.runtime import logs, rootfs
from node.runtime.cgroups import Cgroups
from node.runtime.oci import ContainerRequest, ImageConfig, Mount, Resources
from node.runtime.runc import reap_shims
from node.runtime.containers import CREATED, EXITED, RUNNING, ContainerManager
from node.runtime.sandbox import READY, SandboxConfig, SandboxManager

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay mounts, cgroups"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)"),
    pytest.mark.skipif(not rootfs.HOST_BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
]

IMAGE = ImageConfig(cmd=("sh",))


@dataclass
class Node:
    root: Path
    layer: Path
    host_netns: str
    config: BridgeConfig
    cgroup_root: str
    sandboxes: SandboxManager
    containers: ContainerManager

    def restart(self) -> Node:
        """New manager objects on the same root: what a restarted runtime builds."""
        network = BridgeNetwork(self.config)
        sandboxes = SandboxManager(self.root, network, cgroup_root=self.cgroup_root)
        return Node(self.root, self.layer, self.host_netns, self.config, self.cgroup_root,
                    sandboxes, ContainerManager(self.root, sandboxes))


def make_node(tmp_path: Path, layer: Path) -> Node:
    root = tmp_path / "runtime"
    host_netns = tmp_path / "hostns"
    host_netns.touch()
    subprocess.run(["unshare", f"--net={host_netns}", "true"], check=True)
    config = BridgeConfig(pod_cidr="10.244.7.0/24", state_dir=root / "network",
                          host_netns=str(host_netns))
    cgroup_root = f"/skiff-test-{secrets.token_hex(4)}"
    sandboxes = SandboxManager(root, BridgeNetwork(config), cgroup_root=cgroup_root, stop_timeout=5)
    return Node(root, layer, str(host_netns), config, cgroup_root, sandboxes,
                ContainerManager(root, sandboxes))


def teardown_node(node: Node) -> None:
    for container in node.containers.list():
        node.containers.remove(container.id)
    for sandbox in node.sandboxes.list():
        node.sandboxes.remove(sandbox.id)
    teardown_host(node.config)
    subprocess.run(["umount", node.host_netns], check=False)
    Path(node.host_netns).unlink(missing_ok=True)
    cgroups = Cgroups()
    busy = cgroups.remove(node.cgroup_root)
    assert not busy, f"cgroups still hold processes: {busy}"
    assert not cgroups.exists(node.cgroup_root)
    assert not [p for p in rootfs.mounted_paths() if str(node.root) in str(p)], "mounts left"
    assert_no_processes_mention(str(node.root))


def assert_no_processes_mention(text: str, timeout: float = 10.0) -> None:
    """No shim, runc or container process is left (shims exit right after their container)."""
    deadline = time.monotonic() + timeout
    while True:
        reap_shims()
        left = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if text in cmdline:
                    left.append(f"{entry.name}: {cmdline}")
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left behind: {left}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rootfs.make_busybox_rootfs(tmp_path_factory.mktemp("image") / "layer")


@pytest.fixture
def node(tmp_path: Path, layer: Path) -> Iterator[Node]:
    n = make_node(tmp_path, layer)
    holder = [n]
    try:
        yield n
    finally:
        teardown_node(holder[0])


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_container(node: Node, sandbox_id: str, request: ContainerRequest) -> str:
    container_id = node.containers.create(sandbox_id, request, IMAGE, [node.layer])
    assert node.containers.status(container_id).state == CREATED
    node.containers.start(container_id)
    return container_id


def test_two_containers_share_the_pod_network_and_a_volume(node: Node, tmp_path: Path) -> None:
    shared = tmp_path / "empty-dir"
    shared.mkdir()
    sandbox = node.sandboxes.run(SandboxConfig(name="web", namespace="ns1", hostname="web-0"))
    volume = (Mount("/shared", str(shared)),)
    server = run_container(node, sandbox.id, ContainerRequest(
        "server", command=("sh", "-c", ("echo hello-from-server > /shared/index.html; "
                                        "exec httpd -f -p 8080 -h /shared")), mounts=volume))
    client = run_container(node, sandbox.id, ContainerRequest(
        "client", command=("sh", "-c", "echo from-client > /shared/c.txt; exec sleep 3600"),
        mounts=volume))
    assert node.containers.status(server).state == RUNNING

    def fetch() -> bool:
        result = node.containers.exec_sync(client, ["wget", "-q", "-O", "-",
                                                    "http://127.0.0.1:8080/index.html"], timeout=5)
        return result.exit_code == 0 and result.stdout == b"hello-from-server\n"

    wait_for(fetch, what="the client to reach the server on 127.0.0.1:8080")
    wait_for(lambda: (shared / "c.txt").exists(), what="the client's write to the shared dir")
    assert (shared / "c.txt").read_text() == "from-client\n"
    hostname = node.containers.exec_sync(client, ["hostname"], timeout=5)
    assert hostname.stdout == b"web-0\n"
    hosts = node.containers.exec_sync(client, ["cat", "/etc/hosts"], timeout=5).stdout.decode()
    assert f"{sandbox.ip}\tweb-0" in hosts
    stats = node.containers.stats(server)
    assert stats.pids and stats.pids >= 1 and stats.memory_usage_bytes
    # httpd is PID 1 of its PID namespace with no SIGTERM handler: the kernel ignores the
    # TERM, and stop() ends it with SIGKILL after the grace period, as the kubelet would.
    node.containers.stop(server, timeout=1)
    status = node.containers.status(server)
    assert (status.state, status.exit_code, status.reason) == (EXITED, 137, "Error")


def test_memory_limit_ends_in_oom_kill(node: Node) -> None:
    sandbox = node.sandboxes.run(SandboxConfig(name="oom"))
    request = ContainerRequest("hog", command=("tail", "/dev/zero"),
                               resources=Resources.from_kubernetes(memory_limit_bytes=16 << 20))
    container = run_container(node, sandbox.id, request)
    wait_for(lambda: node.containers.status(container).state == EXITED, what="the OOM kill")
    status = node.containers.status(container)
    assert (status.exit_code, status.reason) == (137, "OOMKilled")
    assert status.finished_ns >= status.started_ns > 0


def test_exec_sync_output_exit_code_and_timeout(node: Node) -> None:
    sandbox = node.sandboxes.run(SandboxConfig(name="exec"))
    container = run_container(node, sandbox.id, ContainerRequest("c", command=("sleep", "3600")))
    result = node.containers.exec_sync(container, ["sh", "-c", "echo hi; echo err >&2; exit 3"],
                                       timeout=10)
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, b"hi\n",
                                                                                   b"err\n", False)
    started = time.monotonic()
    slow = node.containers.exec_sync(container, ["sleep", "300"], timeout=0.5)
    assert slow.timed_out and time.monotonic() - started < 30
    ps = node.containers.exec_sync(container, ["ps"], timeout=10).stdout.decode()
    assert "sleep 300" not in ps, "the timed-out exec process must be killed"
    assert node.containers.status(container).state == RUNNING


def test_restarted_managers_adopt_running_pods_and_record_exits(node: Node) -> None:
    sandbox = node.sandboxes.run(SandboxConfig(name="adopt"))
    long_running = run_container(node, sandbox.id, ContainerRequest(
        "svc", command=("sh", "-c", 'trap "exit 7" TERM; while :; do sleep 1 & wait $!; done')))
    short = run_container(node, sandbox.id, ContainerRequest(
        "job", command=("sh", "-c", "sleep 1; exit 3")))

    restarted = node.restart()
    node.sandboxes, node.containers = restarted.sandboxes, restarted.containers
    assert [s.id for s in node.sandboxes.list()] == [sandbox.id]
    assert node.sandboxes.status(sandbox.id).state == READY
    ids = {c.id: c for c in node.containers.list(sandbox.id)}
    assert set(ids) == {long_running, short}
    assert ids[long_running].state == RUNNING

    wait_for(lambda: node.containers.status(short).state == EXITED, what="the job's exit")
    assert node.containers.status(short).exit_code == 3
    node.containers.stop(long_running, timeout=10)
    status = node.containers.status(long_running)
    assert (status.state, status.exit_code, status.reason) == (EXITED, 7, "Error")
    assert status.finished_ns > status.started_ns


def test_a_dead_pause_process_makes_the_sandbox_not_ready(node: Node) -> None:
    sandbox = node.sandboxes.run(SandboxConfig(name="fragile"))
    os.kill(sandbox.pid, 9)
    wait_for(lambda: node.sandboxes.status(sandbox.id).state != READY, what="NOTREADY")
    node.sandboxes.stop(sandbox.id)
    node.sandboxes.stop(sandbox.id)  # idempotent
    node.sandboxes.remove(sandbox.id)
    node.sandboxes.remove(sandbox.id)
    assert node.sandboxes.list() == []


def test_logs_are_written_in_cri_format_with_partial_lines(node: Node) -> None:
    sandbox = node.sandboxes.run(SandboxConfig(name="logs"))
    script = "echo out; echo err >&2; head -c 20000 /dev/zero | tr '\\0' x; echo; printf tail"
    container = run_container(node, sandbox.id, ContainerRequest("c", command=("sh", "-c", script)))
    wait_for(lambda: node.containers.status(container).state == EXITED, what="the exit")
    path = Path(node.containers.status(container).log_path)
    lines = path.read_bytes().splitlines()
    records = [logs.parse_record(line) for line in lines]
    assert all(line[19:20] == b"." and line[29:31] == b"Z " for line in lines)  # nine fractional digits, UTC
    summary = [(r.stream, r.partial, len(r.content)) for r in records]
    assert ("stdout", False, 3) in summary and ("stderr", False, 3) in summary
    big = [s for s in summary if s[0] == "stdout" and s[2] > 100]
    assert big == [("stdout", True, 16384), ("stdout", False, 20000 - 16384)]
    assert records[-1].content == b"tail" and not records[-1].partial


CHILD_RUNTIME = """
import json, sys
from pathlib import Path
from node.network.bridge import BridgeConfig, BridgeNetwork
from node.runtime.oci import ContainerRequest, ImageConfig
from node.runtime.containers import ContainerManager
from node.runtime.sandbox import SandboxConfig, SandboxManager
root, layer, netns, cgroup_root = sys.argv[1:5]
config = BridgeConfig(pod_cidr="10.244.7.0/24", state_dir=Path(root) / "network", host_netns=netns)
sandboxes = SandboxManager(Path(root), BridgeNetwork(config), cgroup_root=cgroup_root)
containers = ContainerManager(Path(root), sandboxes)
sandbox = sandboxes.run(SandboxConfig(name="survivor"))
request = ContainerRequest("svc", command=("sh", "-c", 'trap "exit 9" TERM; echo up; '
                                           'while :; do sleep 1 & wait $!; done'))
container = containers.create(sandbox.id, request, ImageConfig(), [Path(layer)])
containers.start(container)
print(json.dumps({"sandbox": sandbox.id, "container": container}))
"""


def test_a_new_runtime_process_adopts_what_the_old_one_started(node: Node) -> None:
    """The runtime that created the pod exits; its shims and containers live on, and this
    process (a "restarted runtime") finds, stops and removes them, with the exit code."""
    import json
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.run([sys.executable, "-c", CHILD_RUNTIME, str(node.root), str(node.layer),
                            node.host_netns, node.cgroup_root], capture_output=True, text=True,
                           env=env, timeout=120)
    assert child.returncode == 0, child.stderr
    ids = json.loads(child.stdout)
    assert node.sandboxes.status(ids["sandbox"]).state == READY
    assert node.containers.status(ids["container"]).state == RUNNING
    wait_for(lambda: b"up" in Path(node.containers.status(ids["container"]).log_path).read_bytes(),
             what="the adopted container's log")
    node.containers.stop_all(ids["sandbox"], timeout=10)
    status = node.containers.status(ids["container"])
    assert (status.state, status.exit_code) == (EXITED, 9)
    node.containers.remove_all(ids["sandbox"])
    node.sandboxes.remove(ids["sandbox"])
    assert node.containers.list() == [] and node.sandboxes.list() == []


def test_cleanup_partial_removes_a_sandbox_whose_creation_crashed(node: Node) -> None:
    """A crash inside run() leaves a "partial" record (and maybe a pinned netns): startup
    cleanup removes both."""
    import json

    sandbox_id = secrets.token_hex(32)
    directory = node.root / "sandboxes" / sandbox_id
    directory.mkdir(parents=True)
    netns = node.root / "netns" / sandbox_id
    netns.touch()
    subprocess.run(["unshare", f"--net={netns}", "true"], check=True)
    (directory / "state.json").write_text(json.dumps({
        "id": sandbox_id, "netns_path": str(netns), "partial": True,
        "cgroup_parent": f"{node.cgroup_root}/pod{sandbox_id[:32]}"}))
    assert node.sandboxes.list() == []  # not a sandbox anyone can use
    assert node.sandboxes.cleanup_partial() == [sandbox_id]
    assert not directory.exists() and not netns.exists()
