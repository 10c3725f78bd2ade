"""The compatibility proof: skiff's CRI client drives Debian's containerd 1.6 through a pod's life.

containerd runs with a temporary config (root, state, sockets and runc root under one temporary
directory; the CRI plugin with the overlayfs snapshotter; a sandbox image imported from a local
archive; CNI's bridge plugin from Debian's containernetworking-plugins) inside a network
namespace the test creates, so its CNI bridge never touches the machine's network. Images are
imported into its ``k8s.io`` namespace with ``ctr images import`` from an OCI archive built
offline. containerd is stopped by PID; mounts, cgroups and directories are cleaned up.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.runtime import rootfs
from node.runtime.cgroups import Cgroups
from node.runtime.client import CRIClient
from protos.cri.runtime.v1 import api_pb2 as pb
from tests.imagebuild import OCILayout, busybox_layer, oci_archive

CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
CNI_DIR = Path("/usr/lib/cni")
BUSYBOX = "docker.io/library/busybox:1.0"
PAUSE = "docker.io/skiff/pause:1.0"
PAUSE_CMD = ["/bin/sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done']

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: containerd, namespaces, mounts"),
    pytest.mark.skipif(not (CONTAINERD.exists() and CTR.exists()),
                       reason="containerd is not installed (apt-get install containerd)"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)"),
    pytest.mark.skipif(not rootfs.HOST_BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
]


def containerd_config(base: Path, cni_conf_dir: Path) -> str:
    use_cni = (CNI_DIR / "bridge").exists()
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{base}/containerd.sock"
[ttrpc]
  address = "{base}/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{base}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE}"
    netns_mounts_under_state_dir = true
    # This machine forbids lowering oom_score_adj (containerd asks -998 for the pause):
    # never go below containerd's own score.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "{base}/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_DIR if use_cni else base / 'no-cni'}"
      conf_dir = "{cni_conf_dir}"
"""


def cni_config(base: Path) -> dict[str, object]:
    return {"cniVersion": "0.4.0", "name": "skiff-containerd-test", "plugins": [
        {"type": "bridge", "bridge": "ctdtest0", "isGateway": True, "ipMasq": False,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.77.0/24"}]],
                  "dataDir": str(base / "cni-ipam")}}]}


def build_archive(base: Path) -> Path:
    layout = OCILayout(base / "layout")
    layer = busybox_layer()
    layout.add_image([layer], ref_name="busybox", full_name=BUSYBOX)
    layout.add_image([layer], config={"Env": ["PATH=/bin"], "Cmd": PAUSE_CMD}, ref_name="pause", full_name=PAUSE)
    return oci_archive(base / "layout", base / "images.tar")


@dataclass
class Containerd:
    base: Path
    netns: Path
    proc: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    def ctr(self, *args: str) -> str:
        result = subprocess.run([str(CTR), "--address", str(self.socket), "-n", "k8s.io", *args],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
        return result.stdout


def _our_pids(base: Path) -> list[int]:
    """Processes whose command line names our directory (containerd's shims for our pods)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(base) in cmdline:
                pids.append(int(entry.name))
    return pids


def _cleanup(base: Path, netns: Path) -> None:
    for pid in _our_pids(base):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for mount in sorted((p for p in rootfs.mounted_paths() if str(base) in str(p)), key=lambda p: -len(str(p))):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    base = Path(tempfile.mkdtemp(prefix="skiff-ctd-", dir="/tmp"))  # unix socket paths are short
    run_containerd_existed = Path("/run/containerd").exists()
    netns = base / "netns"
    netns.touch()
    subprocess.run(["unshare", f"--net={netns}", "true"], check=True)
    subprocess.run(["nsenter", f"--net={netns}", "ip", "link", "set", "lo", "up"], check=True)
    cni_dir = base / "cni"
    cni_dir.mkdir()
    (cni_dir / "10-skiff-test.conflist").write_text(json.dumps(cni_config(base)))
    (base / "config.toml").write_text(containerd_config(base, cni_dir))
    log = open(base / "containerd.log", "wb")
    proc = subprocess.Popen(["nsenter", f"--net={netns}", str(CONTAINERD), "--config", str(base / "config.toml")],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    daemon = Containerd(base, netns, proc)
    try:
        deadline = time.monotonic() + 30
        while not daemon.socket.exists():
            assert proc.poll() is None, (base / "containerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "containerd did not create its socket"
            time.sleep(0.1)
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nsenter execs containerd: this is containerd's pid
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print((base / "containerd.log").read_text(errors="replace")[-2000:])
        _cleanup(base, netns)
        if not run_containerd_existed:
            shutil.rmtree("/run/containerd", ignore_errors=True)


def test_skiffs_cri_client_runs_a_pod_through_containerd(containerd: Containerd, tmp_path: Path) -> None:
    archive = build_archive(tmp_path)
    containerd.ctr("images", "import", str(archive))
    assert BUSYBOX in containerd.ctr("images", "ls", "-q").split()
    cgroup_parent = f"/skiff-ctd-{secrets.token_hex(4)}"
    try:
        asyncio.run(_pod_life(containerd, tmp_path, cgroup_parent))
    finally:
        Cgroups().remove(cgroup_parent)
    assert not Cgroups().exists(cgroup_parent)


async def _pod_life(containerd: Containerd, tmp_path: Path, cgroup_parent: str) -> None:
    async with CRIClient.connect(f"unix://{containerd.socket}") as cri:
        version = await cri.wait_ready(timeout=30)
        assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
        image = (await cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=BUSYBOX)))).image
        assert image.id.startswith("sha256:") and BUSYBOX in image.repo_tags
        pod = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="compat", namespace="default", uid="uid-compat"),
            hostname="compat", log_directory=str(tmp_path / "pods"), labels={"app": "compat"},
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent, security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD))))
        sid = (await cri.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod), timeout=120)).pod_sandbox_id
        sandbox = (await cri.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid))).status
        assert sandbox.state == pb.SANDBOX_READY and sandbox.metadata.name == "compat"
        assert sandbox.network.ip.startswith("10.88.77."), sandbox
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image=BUSYBOX),
                                    command=["sh", "-c", "echo up; exec sleep 300"], log_path="app/0.log",
                                    labels={"c": "app"})
        cid = (await cri.runtime.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=pod), timeout=60)).container_id
        await cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        status = (await cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid))).status
        assert status.state == pb.CONTAINER_RUNNING and status.started_at > 0 and status.metadata.name == "app"
        assert status.log_path == str(tmp_path / "pods" / "app" / "0.log")
        listed = (await cri.runtime.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=sid)))).containers
        assert [c.id for c in listed] == [cid]
        result = await cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["hostname"], timeout=10))
        assert (result.exit_code, result.stdout) == (0, b"compat\n")
        await cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=60)
        stopped = (await cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid))).status
        assert stopped.state == pb.CONTAINER_EXITED and stopped.finished_at >= stopped.started_at
        await cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
        await cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        await cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)
        assert not (await cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest())).items
