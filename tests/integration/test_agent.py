"""The node agent end to end: `skiff apiserver` (ApiEnv) + a real `skiff runtime` process + a
real `skiff agent` process, driven through the API and the `skiff logs`/`skiff exec` commands.

As root the runtime has the runc handler (the default), plus process and fake, with its pod
bridge in a network namespace the test makes (`--host-netns`) and cgroups under a test-only
root; images come from a local docker-registry. Without root the runtime runs `process,fake`
(host processes) and the runc-only scenarios (two containers over localhost sharing an emptyDir,
OOMKilled) skip, saying why.

Every process is stopped by the PID the test started; sandboxes left behind are removed through
the runtime's own handlers, the bridge namespace unmounted, the test cgroup removed.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from controlplane.client import codec
from controlplane.client.api import ApiClient, NotFoundError
from kvstore.localcluster import free_ports
from node.runtime import rootfs
from node.runtime.client import CRIClient
from protos.cri.runtime.v1 import api_pb2 as cri
from tests.apiutil import ApiEnv
from tests.imagebuild import LocalRegistry, build_busybox_oci
from tests.procs import Proc

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
T = TypeVar("T")

pytestmark = [
    pytest.mark.skipif(not LocalRegistry.available(), reason="needs docker-registry (Debian package docker-registry)"),
    pytest.mark.skipif(not rootfs.HOST_BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
]
needs_root = pytest.mark.skipif(not IS_ROOT, reason="runc pods need root (namespaces, overlay mounts, cgroups)")


@dataclass
class Cluster:
    env: ApiEnv
    runtime: Proc
    agent: Proc
    socket: Path
    root: Path
    node: str
    image: str
    pod_cidr: str
    node_port: int

    def api(self, body: Callable[[ApiClient], Any]) -> Any:
        return self.env.run(body)

    def cri(self, body: Callable[[CRIClient], Any]) -> Any:
        async def main() -> Any:
            async with CRIClient.connect(f"unix://{self.socket}") as client:
                return await body(client)
        return asyncio.run(main())

    def skiff(self, module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(self.root))  # no client config: --server only
        env.pop("SKIFF_CONFIG", None)
        return subprocess.run([sys.executable, "-m", module, "--server", self.env.address, *args],
                              capture_output=True, text=True, env=env, cwd=str(REPO), timeout=timeout)


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2) -> T:
    """Poll until check() returns something truthy; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (NotFoundError, AssertionError) as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        time.sleep(interval)


def manifest(text: str) -> Any:
    return codec.decode_object(yaml.safe_load(text))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A busybox image in a local registry, as HOST:PORT/library/busybox:1.0."""
    base = tmp_path_factory.mktemp("registry")
    layout = build_busybox_oci(base / "layout", "1.0")
    with LocalRegistry(base / "registry") as registry:
        registry.push(layout, "1.0", "library/busybox", "1.0")
        yield f"{registry.host}/library/busybox:1.0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Cluster]:
    """One runtime and agent; as root, pod networking lives in a namespace of its own ("hostns")
    so the tests never touch this machine's network."""
    yield from _cluster(tmp_path_factory.mktemp("agent"), image, "10.244.77.0/24", "skiffag0", own_host_netns=True)


@pytest.fixture(scope="module")
def host_network_cluster(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[Cluster]:
    """As `skiff up` runs it: the pods' bridge in this machine's network namespace, where the agent
    runs, so the agent reaches pod IPs (probes). Root only; the bridge, its nftables table and
    ip_forward are put back by the teardown."""
    if not IS_ROOT:
        pytest.skip("pod networking in the host's namespace needs root")
    yield from _cluster(tmp_path_factory.mktemp("agent-hostnet"), image, "10.244.78.0/24", "skiffpr0",
                        own_host_netns=False)


def _cluster(base: Path, image: str, pod_cidr: str, bridge: str, own_host_netns: bool) -> Iterator[Cluster]:
    sock_dir = Path(tempfile.mkdtemp(prefix="skiff-ag-", dir="/tmp"))
    socket_path = sock_dir / "runtime.sock"
    root = base / "root"
    env = ApiEnv(base, "skiff").start()
    netns = base / "hostns" if own_host_netns else None
    cgroup_root = f"/skiff-agent-test-{secrets.token_hex(4)}"
    args = ["--socket", str(socket_path), "--root", str(root / "runtime")]
    if IS_ROOT:
        args += ["--handlers", "runc,process,fake", "--pod-cidr", pod_cidr, "--bridge", bridge,
                 "--cgroup-root", cgroup_root]
        if netns is not None:
            netns.touch()
            subprocess.run(["unshare", f"--net={netns}", "true"], check=True)
            args += ["--host-netns", str(netns)]
    else:
        args += ["--handlers", "process,fake"]
    runtime = Proc("deploy.cli.runtime_cmd", args, base / "runtime.log")
    node_port = free_ports(1)[0]
    agent = Proc("deploy.cli.agent_cmd", [
        "--node-name", "agent-test-node", "--server", env.address, "--runtime-endpoint", f"unix://{socket_path}",
        "--root", str(root / "agent"), "--node-ip", "127.0.0.1", "--pod-cidr", pod_cidr,
        "--lease-interval", "1", "--status-interval", "1", "--sync-interval", "0.5",
        "--listen-node-service", f"127.0.0.1:{node_port}", "--system-reserved", "cpu=100m,memory=64Mi", "-v",
    ], base / "agent.log")
    c = Cluster(env, runtime, agent, socket_path, root, "agent-test-node", image, pod_cidr, node_port)
    try:
        runtime.start()
        agent.start()

        async def runtime_classes(client: ApiClient) -> None:
            for handler in ("fake", "process"):
                await client.create(manifest(f"apiVersion: node.k8s.io/v1\nkind: RuntimeClass\n"
                                             f"metadata: {{name: {handler}}}\nhandler: {handler}\n"))
        c.api(runtime_classes)
        yield c
    finally:
        agent.stop()
        print("--- agent log ---\n" + agent.tail(80))
        _remove_everything(c)
        runtime.stop()
        print("--- runtime log ---\n" + runtime.tail(30))
        env.stop()
        if IS_ROOT:
            _teardown_root(root / "runtime", pod_cidr, netns, cgroup_root, bridge)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _remove_everything(c: Cluster) -> None:
    async def remove(client: CRIClient) -> None:
        for sandbox in (await client.runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=30)).items:
            await client.runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
            await client.runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox.id), timeout=60)
    try:
        c.cri(remove)
    except Exception as err:  # the runtime may be gone: the handlers below clean up from disk
        print(f"cleanup through CRI failed: {err}")


def _teardown_root(runtime_root: Path, pod_cidr: str, netns: Path | None, cgroup_root: str, bridge: str) -> None:
    from node.network.bridge import BridgeConfig, BridgeNetwork, teardown_host
    from node.runtime.cgroups import Cgroups
    from node.runtime.handlers import RuncHandler

    config = BridgeConfig(pod_cidr=pod_cidr, state_dir=runtime_root / "network",
                          host_netns=str(netns) if netns is not None else None, bridge=bridge)
    leftover = RuncHandler(runtime_root, BridgeNetwork(config), cgroup_root=cgroup_root)
    for sandbox in leftover.list_sandboxes():
        leftover.remove_sandbox(sandbox.id)
    teardown_host(config)
    Cgroups().remove(cgroup_root)
    if netns is not None:
        subprocess.run(["umount", str(netns)], check=False)


# --- helpers on pods ----------------------------------------------------------------------------


def create(c: Cluster, text: str) -> Any:
    async def body(client: ApiClient) -> Any:
        return await client.create(manifest(text))
    return c.api(body)


def get_pod(c: Cluster, name: str) -> Any:
    async def body(client: ApiClient) -> Any:
        return await client.get("pods", name, "default")
    return c.api(body)


def container_status(pod: Any, name: str) -> Any:
    return next(s for s in pod.status.container_statuses if s.name == name)


def _status_of(pod: Any, name: str) -> Any:
    """The container's status; AssertionError (which wait_for retries) until it has one."""
    found = [s for s in pod.status.container_statuses if s.name == name]
    assert found, f"no status for container {name} yet"
    return found[0]


def condition(pod: Any, ctype: str) -> str:
    return next((x.status for x in pod.status.conditions if x.type == ctype), "")


def pod_if(pod: Any, test: Callable[[Any], bool]) -> Any:
    return pod if test(pod) else None


def phase_is(c: Cluster, name: str, phase: str) -> Any:
    return pod_if(get_pod(c, name), lambda p: p.status.phase == phase)


def running(c: Cluster, name: str, timeout: float = 90) -> Any:
    def check() -> Any:
        pod = get_pod(c, name)
        return pod if pod.status.phase == "Running" and all(s.state.HasField("running") for s in pod.status.container_statuses) else None
    try:
        return wait_for(f"pod {name} Running", check, timeout)
    except AssertionError:
        print(c.agent.tail(60))
        raise


def delete_pod(c: Cluster, name: str, grace: int | None = None) -> None:
    async def body(client: ApiClient) -> None:
        await client.delete("pods", name, "default", grace_period_seconds=grace)
    c.api(body)


def gone(c: Cluster, name: str, timeout: float = 60) -> None:
    def check() -> bool:
        try:
            get_pod(c, name)
        except NotFoundError:
            return True
        return False
    wait_for(f"pod {name} gone", check, timeout)


# --- scenarios ------------------------------------------------------------------------------------


def test_node_registers_with_capacity_and_ready_and_renews_its_lease(cluster: Cluster) -> None:
    def node() -> Any:
        async def body(client: ApiClient) -> Any:
            return await client.get("nodes", cluster.node)
        n = cluster.api(body)
        return n if condition_of(n, "Ready") == "True" else None

    def condition_of(n: Any, ctype: str) -> str:
        return next((x.status for x in n.status.conditions if x.type == ctype), "")

    n = wait_for("node Ready", node, 60)
    assert n.status.capacity["pods"] == "110" and int(n.status.capacity["cpu"]) == os.cpu_count()
    assert n.status.capacity["memory"].endswith("Ki")
    assert int(n.status.allocatable["memory"][:-2]) == int(n.status.capacity["memory"][:-2]) - 64 * 1024
    assert n.metadata.labels["kubernetes.io/hostname"] == cluster.node
    assert n.metadata.labels["kubernetes.io/os"] == "linux" and n.metadata.labels["kubernetes.io/arch"]
    assert {(a.type, a.address) for a in n.status.addresses} == {("InternalIP", "127.0.0.1"), ("Hostname", cluster.node)}
    assert n.status.daemon_endpoints.kubelet_endpoint.port == cluster.node_port
    info = n.status.node_info
    assert info.kubelet_version == "skiff/0.1.0" and info.container_runtime_version.startswith("skiff://")
    assert info.kernel_version == os.uname().release and info.operating_system == "linux"
    assert n.spec.pod_cidr == cluster.pod_cidr

    async def lease(client: ApiClient) -> Any:
        return await client.get("leases", cluster.node, "kube-node-lease")
    first = wait_for("node lease", lambda: cluster.api(lease), 30)
    assert first.spec.holder_identity == cluster.node and first.spec.lease_duration_seconds == 40
    wait_for("lease renewed", lambda: cluster.api(lease).spec.renew_time != first.spec.renew_time, 30)


def test_a_pod_past_its_active_deadline_is_killed_and_fails(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: deadline}}
spec:
  nodeName: {cluster.node}
  runtimeClassName: fake
  activeDeadlineSeconds: 2
  containers: [{{name: app, image: "{cluster.image}"}}]
""")  # (no wait for Running: a slow start may take the pod past its 2 s from Pending to Failed)
    pod = wait_for("Failed", lambda: pod_if(get_pod(cluster, "deadline"), lambda p: p.status.phase == "Failed"), 60)
    assert (pod.status.reason, pod.status.message) == (
        "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
    assert _status_of(pod, "app").state.HasField("terminated"), pod.status
    delete_pod(cluster, "deadline")
    gone(cluster, "deadline")


def test_crashing_container_backs_off(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata:
  name: crasher
  annotations: {{skiff.io/fake-exit-after-seconds: "0.3", skiff.io/fake-exit-code: "2"}}
spec:
  nodeName: {cluster.node}
  runtimeClassName: fake
  containers: [{{name: app, image: "{cluster.image}"}}]
""")

    def backing_off() -> Any:
        pod = get_pod(cluster, "crasher")
        app = container_status(pod, "app") if pod.status.container_statuses else None
        return pod if app is not None and app.state.waiting.reason == "CrashLoopBackOff" else None

    pod = wait_for("CrashLoopBackOff", backing_off, 60)
    app = container_status(pod, "app")
    assert app.restart_count >= 1 and app.last_state.terminated.exit_code == 2
    assert app.last_state.terminated.reason == "Error" and "back-off 10s" in app.state.waiting.message
    assert pod.status.phase == "Running" and condition(pod, "Ready") == "False"
    # Backing off: the restart count stays put for the 10 s the backoff lasts (a hang guard apart).
    time.sleep(3)
    assert container_status(get_pod(cluster, "crasher"), "app").restart_count == app.restart_count
    delete_pod(cluster, "crasher")
    gone(cluster, "crasher")


@needs_root
def test_two_busybox_containers_talk_over_localhost_and_share_an_emptydir(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: duo}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 5
  volumes: [{{name: shared, emptyDir: {{}}}}]
  containers:
  - name: server
    image: "{cluster.image}"
    command: [sh, -c, "echo hello-from-the-volume > /shared/index.html; exec httpd -f -p 8080 -h /shared"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: client
    image: "{cluster.image}"
    command: [sh, -c, "until wget -q -O - http://127.0.0.1:8080/; do sleep 0.2; done; echo fetched; exec sleep 100000"]
    volumeMounts: [{{name: shared, mountPath: /data, readOnly: true}}]
""")
    pod = running(cluster, "duo")
    assert pod.status.pod_ip.startswith("10.244.77.") and [p.ip for p in pod.status.pod_ips] == [pod.status.pod_ip]
    assert pod.status.host_ip == "127.0.0.1" and pod.status.start_time
    server = container_status(pod, "server")
    assert server.container_id.startswith("skiff://") and server.ready and server.started
    assert server.image == cluster.image and server.image_id
    assert {condition(pod, t) for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")} == {"True"}

    def client_log() -> str | None:
        done = cluster.skiff("deploy.cli.kubectl.logs_cmd", "duo", "-c", "client")
        assert "fetched" in done.stdout, (done.returncode, done.stdout, done.stderr)
        return done.stdout

    logs = wait_for("the client's log", client_log, 60)
    assert logs.splitlines() == ["hello-from-the-volume", "fetched"]
    tail = cluster.skiff("deploy.cli.kubectl.logs_cmd", "duo", "-c", "client", "--tail", "1")
    assert tail.stdout == "fetched\n"
    got = cluster.skiff("deploy.cli.kubectl.exec_cmd", "duo", "-c", "client", "--", "cat", "/data/index.html")
    assert (got.returncode, got.stdout) == (0, "hello-from-the-volume\n"), got.stderr
    failed = cluster.skiff("deploy.cli.kubectl.exec_cmd", "duo", "-c", "server", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert (failed.returncode, failed.stderr) == (3, "oops\n")
    no_name = cluster.skiff("deploy.cli.kubectl.exec_cmd", "duo", "--", "true")
    assert no_name.returncode == 1 and "choose one of: [server client]" in no_name.stderr


@needs_root
def test_memory_limit_ends_in_oomkilled(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  nodeName: {cluster.node}
  restartPolicy: Never
  containers:
  - name: hog
    image: "{cluster.image}"
    command: [dd, if=/dev/zero, of=/dev/null, bs=64M, count=1]   # a 64 MiB buffer, 16 MiB allowed
    resources: {{limits: {{memory: 16Mi}}}}
""")
    def finished() -> Any:
        pod = get_pod(cluster, "hog")
        assert pod.status.phase in ("Succeeded", "Failed"), pod.status
        return pod

    pod = wait_for("pod hog finished", finished, 90)
    assert pod.status.phase == "Failed", pod.status
    term = container_status(pod, "hog").state.terminated
    assert term.reason == "OOMKilled" and term.exit_code == 137, term
    delete_pod(cluster, "hog")
    gone(cluster, "hog")


def test_failing_readiness_probe_flips_ready_and_recovers(cluster: Cluster) -> None:
    marker = f"/tmp/skiff-ready-{secrets.token_hex(4)}"  # the container's /tmp (the host's with process pods)
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: "{cluster.image}"
    command: [sh, -c, "touch {marker}; exec sleep 100000"]
    readinessProbe: {{exec: {{command: [test, -f, "{marker}"]}}, periodSeconds: 1, failureThreshold: 1}}
""")
    running(cluster, "probed")
    wait_for("Ready", lambda: condition(get_pod(cluster, "probed"), "Ready") == "True", 60)
    assert cluster.skiff("deploy.cli.kubectl.exec_cmd", "probed", "--", "rm", marker).returncode == 0
    pod = wait_for("not Ready", lambda: pod_if(get_pod(cluster, "probed"), lambda p: condition(p, "Ready") == "False"), 60)
    assert not container_status(pod, "app").ready and pod.status.phase == "Running"
    assert cluster.skiff("deploy.cli.kubectl.exec_cmd", "probed", "--", "touch", marker).returncode == 0
    wait_for("Ready again", lambda: condition(get_pod(cluster, "probed"), "Ready") == "True", 60)
    delete_pod(cluster, "probed")
    gone(cluster, "probed")


@needs_root
def test_post_start_and_pre_stop_hooks_run_and_a_failed_post_start_stops_the_container(
        cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "hooks"
    out.mkdir()
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 20
  volumes: [{{name: out, hostPath: {{path: "{out}"}}}}]
  containers:
  - name: app
    image: "{cluster.image}"
    command: [sh, -c, "trap 'echo got-term >> /out/log; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: out, mountPath: /out}}]
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo post-start >> /out/log"]}}}}
      preStop: {{exec: {{command: [sh, -c, "echo pre-stop >> /out/log"]}}}}
""")
    running(cluster, "hooked")
    assert (out / "log").read_text() == "post-start\n"
    delete_pod(cluster, "hooked")
    gone(cluster, "hooked")
    assert (out / "log").read_text() == "post-start\npre-stop\ngot-term\n"  # preStop, then SIGTERM

    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: bad-hook}}
spec:
  nodeName: {cluster.node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: "{cluster.image}"
    command: [sleep, "100000"]
    lifecycle: {{postStart: {{exec: {{command: [sh, -c, "exit 3"]}}}}}}
""")
    pod = wait_for("bad-hook Failed", lambda: pod_if(get_pod(cluster, "bad-hook"), lambda p: p.status.phase == "Failed"), 60)
    assert _status_of(pod, "app").state.HasField("terminated"), pod.status
    delete_pod(cluster, "bad-hook")
    gone(cluster, "bad-hook")


@needs_root
def test_host_network_pod_runs_in_the_hosts_network_namespace(cluster: Cluster) -> None:
    """A hostNetwork pod runs in the host's network namespace (here the lab-style one the runtime
    was given), reports the node's address as its IP, and leaves that namespace intact when it goes."""
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: on-host}}
spec:
  nodeName: {cluster.node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: "{cluster.image}"
    command: [sleep, "100000"]
    ports: [{{containerPort: 9376}}]
""")
    pod = running(cluster, "on-host")
    assert pod.status.pod_ip == pod.status.host_ip == "127.0.0.1"
    assert pod.spec.containers[0].ports[0].host_port == 9376  # defaulted for hostNetwork pods
    host_netns = cluster.root.parent / "hostns"
    seen = cluster.skiff("deploy.cli.kubectl.exec_cmd", "on-host", "--", "readlink", "/proc/self/ns/net")
    assert seen.stdout.strip() == f"net:[{host_netns.stat().st_ino}]", seen  # the host's namespace itself
    delete_pod(cluster, "on-host")
    gone(cluster, "on-host")
    still = subprocess.run(["nsenter", f"--net={host_netns}", "true"], capture_output=True, text=True, check=False)
    assert still.returncode == 0, f"the host's namespace was unmounted: {still.stderr}"


def test_http_and_tcp_probes_reach_the_pod_from_the_host(host_network_cluster: Cluster) -> None:
    """The agent probes the pod's IP from the host's network namespace: httpGet (a named port)
    decides Ready and a 404 is a failure; a tcpSocket liveness probe on a port nothing listens on
    restarts the container, one on the served port does not."""
    cluster = host_network_cluster
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: web-probed}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: "{cluster.image}"
    command: [sh, -c, "mkdir -p /www; echo ok > /www/healthz; exec httpd -f -p 8080 -h /www"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1, failureThreshold: 1}}
    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1, failureThreshold: 2}}
  - name: deaf
    image: "{cluster.image}"
    command: [sleep, "100000"]
    livenessProbe: {{tcpSocket: {{port: 9099}}, periodSeconds: 1, failureThreshold: 2}}
""")

    def status(name: str) -> Any:
        return _status_of(get_pod(cluster, "web-probed"), name)

    def exec_web(*command: str) -> None:
        done = cluster.skiff("deploy.cli.kubectl.exec_cmd", "web-probed", "-c", "web", "--", *command)
        assert done.returncode == 0, done.stderr

    wait_for("web Ready", lambda: status("web").ready, 60)
    assert get_pod(cluster, "web-probed").status.pod_ip.startswith("10.244.78.")
    exec_web("rm", "/www/healthz")
    wait_for("web not Ready after a 404", lambda: not status("web").ready, 60)
    exec_web("sh", "-c", "echo ok > /www/healthz")
    wait_for("web Ready again", lambda: status("web").ready, 60)
    wait_for("deaf restarted by its liveness probe", lambda: status("deaf").restart_count >= 1, 90)
    assert status("web").restart_count == 0
    delete_pod(cluster, "web-probed")
    gone(cluster, "web-probed")


def _container_ids(c: Cluster, name: str) -> dict[str, tuple[str, int]]:
    pod = get_pod(c, name)
    return {s.name: (s.container_id, s.restart_count) for s in pod.status.container_statuses}


def test_restarted_agent_adopts_running_pods(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: steady}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 2
  containers: [{{name: app, image: "{cluster.image}", command: [sleep, "100000"]}}]
""")
    running(cluster, "steady")
    before = _container_ids(cluster, "steady")
    cluster.agent.stop()
    cluster.agent.start()
    time.sleep(4)  # several sync passes of the new agent

    async def listed(client: CRIClient) -> list[str]:
        found = await client.runtime.ListContainers(cri.ListContainersRequest(), timeout=30)
        return [x.id for x in found.containers if x.metadata.name == "app" and x.labels.get("io.kubernetes.pod.name") == "steady"]

    assert [f"skiff://{i}" for i in cluster.cri(listed)] == [before["app"][0]]
    assert _container_ids(cluster, "steady") == before
    assert get_pod(cluster, "steady").status.phase == "Running"
    assert "started container app" not in cluster.agent.tail(200).split("skiff agent: node")[-1]


def test_pods_keep_running_while_the_api_server_is_down(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: job}}
spec:
  nodeName: {cluster.node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers: [{{name: work, image: "{cluster.image}", command: [sh, -c, "sleep 5; echo done"]}}]
""")
    running(cluster, "job")
    steady = _container_ids(cluster, "steady")
    api = cluster.env.servers[0]
    api.stop()
    try:
        async def states(client: CRIClient) -> dict[str, int]:
            found = await client.runtime.ListContainers(cri.ListContainersRequest(), timeout=30)
            return {x.labels.get("io.kubernetes.pod.name", ""): x.state for x in found.containers}
        # The job finishes and the other pod runs on while nobody can tell the API.
        wait_for("the job's exit", lambda: cluster.cri(states).get("job") == cri.CONTAINER_EXITED, 60)
        assert cluster.cri(states)["steady"] == cri.CONTAINER_RUNNING
    finally:
        api.start(timeout=60)
    pod = wait_for("status caught up", lambda: phase_is(cluster, "job", "Succeeded"), 60)
    assert container_status(pod, "work").state.terminated.reason == "Completed"
    assert _container_ids(cluster, "steady") == steady
    delete_pod(cluster, "job")
    gone(cluster, "job")


def test_deletion_sends_sigterm_waits_then_removes_and_deletes(cluster: Cluster) -> None:
    pod = create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: polite}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: "{cluster.image}"
    command: [sh, -c, "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done"]
""")
    running(cluster, "polite")
    uid = pod.metadata.uid
    started = time.monotonic()
    delete_pod(cluster, "polite")
    assert get_pod(cluster, "polite").metadata.deletion_timestamp  # waits for the agent
    gone(cluster, "polite", 60)
    assert time.monotonic() - started < 25, "the container handled SIGTERM: no need to wait out the grace period"

    async def left(client: CRIClient) -> list[str]:
        found = await client.runtime.ListPodSandbox(cri.ListPodSandboxRequest(
            filter=cri.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": uid})), timeout=30)
        return [s.id for s in found.items]
    assert cluster.cri(left) == []
    log = next((cluster.root / "agent" / "logs").glob(f"default_polite_{uid}/app/0.log"))
    assert b"got-term" in log.read_bytes()
    assert not (cluster.root / "agent" / "pods" / uid).exists()


def test_sandboxes_no_pod_asks_for_are_removed(cluster: Cluster) -> None:
    async def stray(client: CRIClient) -> str:
        config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="stray", namespace="default", uid="no-such-uid"),
                                      labels={"io.kubernetes.pod.uid": "no-such-uid"})
        return (await client.runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config, runtime_handler="fake"),
                                                   timeout=60)).pod_sandbox_id
    sandbox = cluster.cri(stray)

    async def exists(client: CRIClient) -> bool:
        found = await client.runtime.ListPodSandbox(cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(id=sandbox)))
        return bool(found.items)
    wait_for("the stray sandbox removed", lambda: not cluster.cri(exists), 30)


def test_node_service_serves_administrators_only_on_an_authenticating_cluster(
        tmp_path: Path, image: str) -> None:
    """TLS API with tokens; the agent runs as system:node:<n> and serves its node service over TLS
    with a certificate from the cluster CA. Only system:masters may read logs and exec."""
    from controlplane.apiserver.auth import authn, certs
    from controlplane.client.config import ClientConfig, write_config

    node = "secure-node"
    pki = certs.init_pki(tmp_path / "pki", "test", ["127.0.0.1"], nodes=[node])
    tokens = {e.user: e.token for e in authn.TokenFile.load(pki.tokens).entries}
    tls = ("--tls-cert-file", str(pki.apiserver_cert), "--tls-private-key-file", str(pki.apiserver_key))
    env = ApiEnv(tmp_path, "skiff", server_args=(*tls, "--token-auth-file", str(pki.tokens)))
    env.credentials = grpc_ssl(pki.ca_cert)
    env.token = tokens["admin"]
    cert, key = certs.issue(pki.ca_cert.read_bytes(), pki.ca_key.read_bytes(), f"system:node:{node}",
                            dns_names=[node], ip_addresses=["127.0.0.1"], server=True)
    (tmp_path / "node.crt").write_bytes(cert)
    (tmp_path / "node.key").write_bytes(key)
    sock_dir = Path(tempfile.mkdtemp(prefix="skiff-as-", dir="/tmp"))
    runtime = Proc("deploy.cli.runtime_cmd", ["--socket", str(sock_dir / "rt.sock"), "--root", str(tmp_path / "rt"),
                                              "--handlers", "fake"], tmp_path / "runtime.log")
    port = free_ports(1)[0]
    agent = Proc("deploy.cli.agent_cmd", [], tmp_path / "agent.log")
    try:
        env.start()
        agent.args = [
            "--node-name", node, "--config", str(pki.identities[f"system:node:{node}"].config), "--server", env.address,
            "--runtime-endpoint", f"unix://{sock_dir / 'rt.sock'}", "--root", str(tmp_path / "agent"),
            "--node-ip", "127.0.0.1", "--listen-node-service", f"127.0.0.1:{port}", "--status-interval", "1",
            "--node-service-cert", str(tmp_path / "node.crt"), "--node-service-key", str(tmp_path / "node.key"), "-v"]
        runtime.start()
        agent.start()
        c = Cluster(env, runtime, agent, sock_dir / "rt.sock", tmp_path, node, image, "", port)
        create(c, f"""
apiVersion: v1
kind: Pod
metadata: {{name: guarded}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: app, image: "{image}"}}]
""")
        running(c, "guarded")
        configs = {}
        for who, token in (("admin", tokens["admin"]), ("scheduler", tokens["system:kube-scheduler"]),
                           ("bogus", "not-a-token")):
            configs[who] = tmp_path / f"{who}.conf"
            write_config(configs[who], ClientConfig(server=env.address, certificate_authority=pki.ca_cert, token=token))

        def as_user(who: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
            run_env = dict(os.environ, PYTHONPATH=str(REPO), SKIFF_CONFIG=str(configs[who]))
            return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                                  env=run_env, cwd=str(REPO), timeout=60)

        allowed = as_user("admin", "deploy.cli.kubectl.exec_cmd", "guarded", "--", "true")
        assert allowed.returncode == 0, allowed.stderr
        assert as_user("admin", "deploy.cli.kubectl.logs_cmd", "guarded").returncode == 0
        denied = as_user("scheduler", "deploy.cli.kubectl.exec_cmd", "guarded", "--", "true")
        assert denied.returncode == 1 and 'User "system:kube-scheduler" cannot use the node service' in denied.stderr
        refused = as_user("bogus", "deploy.cli.kubectl.logs_cmd", "guarded")
        assert refused.returncode == 1 and "Unauthorized" in refused.stderr, refused.stderr
    finally:
        agent.stop()
        print("--- agent log ---\n" + agent.tail(40))
        runtime.stop()
        env.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def grpc_ssl(ca: Path) -> Any:
    import grpc
    return grpc.ssl_channel_credentials(ca.read_bytes())


@needs_root
def test_init_container_and_logs_of_the_previous_instance(cluster: Cluster) -> None:
    marker = "/state/once"  # in an emptyDir: it outlives the container's own writable layer
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: chatty}}
spec:
  nodeName: {cluster.node}
  terminationGracePeriodSeconds: 2
  volumes: [{{name: state, emptyDir: {{}}}}]
  initContainers:
  - {{name: setup, image: "{cluster.image}", command: [sh, -c, "echo setting-up"]}}
  containers:
  - name: app
    image: "{cluster.image}"
    volumeMounts: [{{name: state, mountPath: /state}}]
    # The first run fails at once; the second one talks for a while, then stays.
    command: [sh, -c, "if [ ! -e {marker} ]; then touch {marker}; echo first-run; exit 1; fi;
                       for i in 1 2 3; do echo line$i; sleep 0.5; done; exec sleep 100000"]
""")
    pod = running(cluster, "chatty")
    init = pod.status.init_container_statuses[0]
    assert init.state.terminated.exit_code == 0 and init.state.terminated.reason == "Completed"
    assert condition(pod, "Initialized") == "True"
    previous = cluster.skiff("deploy.cli.kubectl.logs_cmd", "chatty", "--previous")
    assert previous.stdout == "first-run\n", previous.stderr
    assert container_status(get_pod(cluster, "chatty"), "app").restart_count == 1
    setup = cluster.skiff("deploy.cli.kubectl.logs_cmd", "chatty", "-c", "setup")
    assert setup.stdout == "setting-up\n"
    wait_for("three lines", lambda: "line3" in cluster.skiff("deploy.cli.kubectl.logs_cmd", "chatty").stdout, 30)
    stamped = cluster.skiff("deploy.cli.kubectl.logs_cmd", "chatty", "--timestamps", "--tail", "1").stdout
    assert stamped.endswith(" line3\n") and stamped[:4].isdigit()
    delete_pod(cluster, "chatty")
    gone(cluster, "chatty")


def test_logs_follow_ends_when_the_container_does(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  nodeName: {cluster.node}
  restartPolicy: Never
  containers:
  - {{name: app, image: "{cluster.image}", command: [sh, -c, "for i in 1 2 3 4; do echo tick$i; sleep 0.5; done"]}}
""")
    running(cluster, "talker")
    followed = cluster.skiff("deploy.cli.kubectl.logs_cmd", "talker", "-f", timeout=60)
    assert followed.returncode == 0 and followed.stdout == "tick1\ntick2\ntick3\ntick4\n", followed
    delete_pod(cluster, "talker")
    gone(cluster, "talker")


def test_unpullable_image_waits_with_image_pull_backoff(cluster: Cluster) -> None:
    create(cluster, f"""
apiVersion: v1
kind: Pod
metadata: {{name: nopull}}
spec:
  nodeName: {cluster.node}
  runtimeClassName: fake
  terminationGracePeriodSeconds: 1
  containers: [{{name: app, image: "127.0.0.1:1/library/nothing:1.0"}}]
""")

    def waiting() -> Any:
        pod = get_pod(cluster, "nopull")
        statuses = pod.status.container_statuses
        return pod if statuses and statuses[0].state.waiting.reason in ("ErrImagePull", "ImagePullBackOff") else None

    pod = wait_for("an image pull failure", waiting, 60)
    assert pod.status.phase == "Pending" and "127.0.0.1:1" in pod.status.container_statuses[0].state.waiting.message
    wait_for("ImagePullBackOff", lambda: container_status(get_pod(cluster, "nopull"), "app").state.waiting.reason
             == "ImagePullBackOff", 30)
    delete_pod(cluster, "nopull")
    gone(cluster, "nopull")
