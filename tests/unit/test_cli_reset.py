"""skiff reset's guards: the client config it removes, the mounts it will not walk into, and
the running `skiff up` it refuses to reset under."""
from __future__ import annotations

import socket
from pathlib import Path

from controlplane.client.config import ClientConfig, write_config
from deploy.cli import reset_cmd


def _config(path: Path, ca: Path) -> Path:
    ca.parent.mkdir(parents=True, exist_ok=True)
    ca.write_text("not read here")
    write_config(path, ClientConfig(server="127.0.0.1:6443", certificate_authority=ca, token="t"))
    return path


def test_removes_only_the_config_that_points_at_this_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ours = _config(tmp_path / "ours.conf", state / "pki" / "ca.crt")
    theirs = _config(tmp_path / "theirs.conf", tmp_path / "elsewhere" / "ca.crt")
    reset_cmd._remove_config(ours, state)
    reset_cmd._remove_config(theirs, state)
    assert not ours.exists() and theirs.exists()
    reset_cmd._remove_config(tmp_path / "missing.conf", state)  # nothing to do


def test_mounts_under_names_mount_points_inside_the_directory_only() -> None:
    assert "/proc" in reset_cmd._mounts_under(Path("/proc"))
    assert reset_cmd._mounts_under(Path("/proc/self/no-such-dir")) == []


def test_a_listening_runtime_socket_means_skiff_up_runs(tmp_path: Path) -> None:
    path = tmp_path / "runtime.sock"
    assert not reset_cmd._answers(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert not reset_cmd._answers(path)  # bound but not listening: a stale socket file
        server.listen(1)
        assert reset_cmd._answers(path)
