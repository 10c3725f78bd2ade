"""`skiff up` as root with a real runc pod, stopped with the pod still running (as a kubelet's
pods do), then `skiff reset` removes the pod's processes, the pods' bridge and nftables table,
the state directory and the client config."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_up import _ports_free, skiff, skiff_up
from tests.imagebuild import LocalRegistry, build_busybox_oci

IS_ROOT = os.geteuid() == 0
MARK = "31337042"  # the pod's `sleep` argument, to find its process on the host

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="runc pods and the pods' bridge need root"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)"),
    pytest.mark.skipif(not LocalRegistry.available(), reason="needs docker-registry (Debian package docker-registry)"),
]

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: sleeper}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: "{image}"
    command: [sleep, "{mark}"]
"""


def _pod_processes() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", MARK.encode()]:
                pids.append(int(entry.name))
    return pids


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def _nft_table_exists() -> bool:
    return subprocess.run(["nft", "list", "table", "ip", "skiff_skiff0"], capture_output=True,
                          check=False).returncode == 0


def _wait(what: str, check, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_reset_removes_running_pods_the_bridge_and_the_state(tmp_path: Path) -> None:
    if not _ports_free():
        pytest.skip("skiff up's fixed ports (2379-2580, 6443) are in use on this machine")
    if _link_exists("skiff0"):
        pytest.skip("this host already has a skiff0 bridge (another skiff up?)")
    env = dict(os.environ, SKIFF_STATE_DIR=str(tmp_path / "state"), SKIFF_CONFIG=str(tmp_path / "config"))
    with LocalRegistry(tmp_path / "registry") as registry:
        registry.push(build_busybox_oci(tmp_path / "layout", "1.0"), "1.0", "library/busybox", "1.0")
        (tmp_path / "pod.yaml").write_text(POD.format(image=f"{registry.host}/library/busybox:1.0", mark=MARK))
        with skiff_up(tmp_path, env):
            assert skiff(env, "apply", "-f", str(tmp_path / "pod.yaml")).returncode == 0
            _wait("the pod Running", lambda: " Running " in skiff(env, "get", "pod", "sleeper", "--no-headers").stdout)
            assert _pod_processes() and _link_exists("skiff0") and _nft_table_exists()
            refused = skiff(env, "reset")
            assert refused.returncode == 1 and "stop it first" in refused.stderr, refused
    try:
        assert _pod_processes(), "the pod should outlive skiff up, as a kubelet's do"
        reset = skiff(env, "reset")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        assert "removed pod default/sleeper" in reset.stdout, reset.stdout
        assert not _pod_processes()
        assert not _link_exists("skiff0") and not _nft_table_exists()
        assert not (tmp_path / "state").exists() and not (tmp_path / "config").exists()
    finally:
        if (tmp_path / "state").exists():  # leave nothing on the host whatever failed above
            skiff(env, "reset")
