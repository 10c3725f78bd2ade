"""`skiff up` as a user runs it: the whole local cluster in the foreground, then the kubectl-like
commands against it with the client config it wrote, then Ctrl-C stops everything it started."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.cli.up_cmd import API_PORT, CLIENT_PORTS, PEER_PORTS
from tests.manifests import HERE as MANIFESTS

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
"""


def _ports_free() -> bool:
    for port in (*CLIENT_PORTS, *PEER_PORTS, API_PORT):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def skiff(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@contextlib.contextmanager
def skiff_up(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`skiff up ARGS` running (its output in tmp_path/up.log) until the block ends, then Ctrl-C."""
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "deploy.cli.main", "up", *args], env=env, stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "skiff is up" not in (tmp_path / "up.log").read_text():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, "skiff up did not come up in 90 s"
            time.sleep(0.2)
        yield up
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        log.close()


def test_up_apply_get_all_and_stop(tmp_path: Path) -> None:
    if not _ports_free():
        pytest.skip("skiff up's fixed ports (2379-2580, 6443) are in use on this machine")
    env = dict(os.environ, SKIFF_STATE_DIR=str(tmp_path / "state"), SKIFF_CONFIG=str(tmp_path / "config"))
    # The fake handler: the whole pipeline runs (scheduler, agent, runtime) without touching the
    # host's network or fetching images; the runc path has its own tests (and test_up_reset).
    with skiff_up(tmp_path, env, "--runtime-handlers", "fake"):
        (tmp_path / "svc.yaml").write_text(SERVICE)
        applied = skiff(env, "apply", "-f", str(MANIFESTS / "nginx-deployment.yaml"), "-f", str(tmp_path / "svc.yaml"))
        assert applied.returncode == 0, applied.stderr
        assert "deployment.apps/nginx-deployment created" in applied.stdout
        assert "service/my-service created" in applied.stdout
        listed = skiff(env, "get", "all")
        assert listed.returncode == 0, listed.stderr
        assert "deployment.apps/nginx-deployment" in listed.stdout and "service/my-service" in listed.stdout
        deadline = time.monotonic() + 90  # controller manager -> scheduler -> agent -> runtime
        while True:
            pods = skiff(env, "get", "pods", "-l", "app=nginx", "--no-headers")
            if pods.returncode == 0 and pods.stdout.count(" Running ") == 3:
                break
            assert time.monotonic() < deadline, f"no 3 running nginx pods: {pods.stdout} {pods.stderr}"
            time.sleep(0.5)
        nodes = skiff(env, "get", "nodes")
        assert " Ready " in nodes.stdout, nodes.stdout
        assert "replicaset.apps/nginx-deployment-" in skiff(env, "get", "rs", "-o", "name").stdout
        whoami_free = skiff(dict(env, SKIFF_CONFIG=str(tmp_path / "missing")), "get", "pods")
        assert whoami_free.returncode == 1 and len(whoami_free.stderr.strip().splitlines()) == 1
    assert "stopping..." in (tmp_path / "up.log").read_text()
    assert _ports_free(), "skiff up left a process listening"
    reset = skiff(env, "reset")
    assert reset.returncode == 0, reset.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "config").exists(), reset.stdout
