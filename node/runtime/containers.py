"""Containers of pod sandboxes run through runc, with all state on disk so a restarted runtime
re-adopts them.

A container lives in ``<root>/containers/<id>/``: the OCI bundle (``config.json``, the overlay
``rootfs`` with its ``upper``/``work`` dirs), ``state.json`` (what CreateContainer decided:
sandbox, name, attempt, times, log path, cgroup path, labels, annotations, and ``info``, an
opaque dict the CRI server keeps with the container: image, mounts, resources) and the shim's
files (see ``runc``). It joins its sandbox's namespaces (``sandbox.SandboxManager.pod_context``).

A container's status is derived, never cached: ``exit.json`` (written by its shim) wins, else
``runc state``; a started container runc no longer knows and whose shim wrote nothing is EXITED
with code 255 and a reason saying so.

Invariants:
- no state in memory: any number of manager objects on one root agree (a restarted runtime);
- ``stop`` and ``remove`` are idempotent; ``remove`` deletes the rootfs mount, the cgroup and
  the directory, and waits for a live shim's last write first (never deletes under it).
"""
from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node.network.ipam import atomic_write
from node.runtime import oci, rootfs
from node.runtime.cgroups import CgroupStats
from node.runtime.runc import ExecResult, RuncError, read_exit_status, reap_shims
from node.runtime.sandbox import NotFound, SandboxError, SandboxManager, wait_exit

CREATED, RUNNING, EXITED, UNKNOWN = ("CONTAINER_CREATED", "CONTAINER_RUNNING",
                                     "CONTAINER_EXITED", "CONTAINER_UNKNOWN")


@dataclass(frozen=True)
class ContainerStatus:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: str
    created_ns: int
    started_ns: int = 0
    finished_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    pid: int = 0
    log_path: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    message: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)  # the CRI server's record, opaque here


def exit_reason(exit_code: int, oom_killed: bool) -> str:
    """The kubelet's reasons for a terminated container."""
    return "OOMKilled" if oom_killed else ("Completed" if exit_code == 0 else "Error")


class ContainerManager:
    """Containers of pod sandboxes under ``root``: create, start, stop, remove, exec, status."""

    def __init__(self, root: Path, sandboxes: SandboxManager) -> None:
        self.root = root
        self.sandboxes = sandboxes
        self.runc = sandboxes.runc
        self.cgroups = sandboxes.cgroups
        (root / "containers").mkdir(parents=True, exist_ok=True)

    def _dir(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    def exists(self, container_id: str) -> bool:
        return (self._dir(container_id) / "state.json").exists()

    def _load(self, container_id: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self._dir(container_id) / "state.json").read_text())
            return doc
        except FileNotFoundError:
            raise NotFound(f"container {container_id} not found") from None

    def _save(self, container_id: str, doc: dict[str, Any]) -> None:
        atomic_write(self._dir(container_id) / "state.json", json.dumps(doc).encode())

    def create(self, sandbox_id: str, request: oci.ContainerRequest, image: oci.ImageConfig,
               layers: Sequence[Path], attempt: int = 0, log_path: Path | None = None,
               container_id: str | None = None, info: Mapping[str, Any] | None = None) -> str:
        """Mount the rootfs, write the spec, ``runc create`` under a shim; returns the id
        (``container_id`` when given: the caller may need it before, e.g. for an image lease)."""
        pod = self.sandboxes.pod_context(sandbox_id)
        container_id = container_id or secrets.token_hex(32)
        directory = self._dir(container_id)
        directory.mkdir(parents=True)
        log_path = log_path or self.root / "logs" / sandbox_id / request.name / f"{attempt}.log"
        cgroups_path = f"{self.sandboxes.status(sandbox_id).cgroup_parent}/{container_id}"
        doc = {"id": container_id, "sandbox_id": sandbox_id, "name": request.name,
               "attempt": attempt, "created_ns": time.time_ns(), "started_ns": 0,
               "log_path": str(log_path), "cgroups_path": cgroups_path,
               "labels": dict(request.labels), "annotations": dict(request.annotations),
               "info": dict(info or {})}
        self._save(container_id, doc)
        try:
            root = rootfs.mount_overlay(directory, layers)
            spec = oci.container_spec(image, request, pod, str(root), cgroups_path, container_id,
                                      _read_text(root / "etc/passwd"), _read_text(root / "etc/group"))
            (directory / "config.json").write_text(json.dumps(spec, indent=1))
            self.runc.create(container_id, directory, log_path, cgroups_path)
        except Exception:
            self.remove(container_id)
            raise
        return container_id

    def start(self, container_id: str) -> None:
        doc = self._load(container_id)
        self.runc.start(container_id)
        doc["started_ns"] = time.time_ns()
        self._save(container_id, doc)

    def status(self, container_id: str) -> ContainerStatus:
        doc = self._load(container_id)
        base = ContainerStatus(
            id=container_id, sandbox_id=doc["sandbox_id"], name=doc["name"], attempt=doc["attempt"],
            state=UNKNOWN, created_ns=doc["created_ns"], started_ns=doc["started_ns"],
            log_path=doc["log_path"], labels=doc["labels"], annotations=doc["annotations"],
            info=doc.get("info", {}))
        exited = read_exit_status(self._dir(container_id))
        if exited is not None:
            return _replace(base, state=EXITED, finished_ns=exited.finished_ns,
                            exit_code=exited.exit_code,
                            reason=exit_reason(exited.exit_code, exited.oom_killed))
        state = self.runc.state(container_id)
        if state is None or state.status == "stopped":
            return _replace(base, state=EXITED if base.started_ns else UNKNOWN, exit_code=255,
                            reason="Unknown", message="the container's shim recorded no exit status")
        return _replace(base, state=CREATED if state.status == "created" else RUNNING, pid=state.pid)

    def list(self, sandbox_id: str | None = None) -> list[ContainerStatus]:
        reap_shims()
        out = []
        for entry in sorted((self.root / "containers").iterdir()):
            try:
                status = self.status(entry.name)
            except NotFound:
                continue
            if sandbox_id is None or status.sandbox_id == sandbox_id:
                out.append(status)
        return out

    def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (CRI StopContainer); idempotent."""
        directory = self._dir(container_id)
        state = self.runc.state(container_id)
        if state is None or read_exit_status(directory) is not None:
            return
        if state.status == "created":
            # Never started: nothing to be graceful with; delete turns it into an exit below.
            self.runc.kill(container_id, signal.SIGKILL)
        else:
            self.runc.kill(container_id, signal.SIGTERM)
            if wait_exit(directory, timeout):
                return
            self.runc.kill(container_id, signal.SIGKILL, all_processes=True)
        wait_exit(directory, 10.0)

    def remove(self, container_id: str) -> None:
        """Delete the container (killing it if needed), its rootfs mount, cgroup and files."""
        directory = self._dir(container_id)
        try:
            doc = self._load(container_id)
        except NotFound:
            doc = {}
        self.runc.delete(container_id)
        # The shim writes exit.json as its last act; removing the directory under it would
        # race with that write.
        if _shim_alive(directory):
            wait_exit(directory, 5.0)
        reap_shims()
        if doc.get("cgroups_path"):
            self.cgroups.remove(doc["cgroups_path"])
        if directory.exists():
            rootfs.remove_container_dir(directory)

    def stop_all(self, sandbox_id: str, timeout: float) -> None:
        """Stop every container of a pod (StopPodSandbox does this before stopping the pause)."""
        for container in self.list(sandbox_id):
            self.stop(container.id, timeout)

    def remove_all(self, sandbox_id: str) -> None:
        """Remove every container of a pod (RemovePodSandbox does this first)."""
        for container in self.list(sandbox_id):
            self.remove(container.id)

    def exec_sync(self, container_id: str, argv: Sequence[str], timeout: float | None) -> ExecResult:
        if self.status(container_id).state != RUNNING:
            raise SandboxError(f"container {container_id} is not running: cannot exec {argv[0]!r}")
        return self.runc.exec_sync(container_id, argv, timeout, self._dir(container_id))

    def stats(self, container_id: str) -> CgroupStats:
        return self.cgroups.stats(self._load(container_id)["cgroups_path"])

    def writable_layer_bytes(self, container_id: str) -> int:
        """Bytes allocated in the container's overlay upper directory (its writes)."""
        self._load(container_id)
        return _disk_usage(self._dir(container_id) / "upper")

    def update_resources(self, container_id: str, resources: oci.Resources,
                         info: Mapping[str, Any] | None = None) -> None:
        """Change a running container's cgroup limits (``runc update``); record ``info``."""
        doc = self._load(container_id)
        limits = update_json(resources)
        argv = [self.runc.binary, "--root", str(self.runc.root), "update", "--resources", "-",
                container_id]
        result = subprocess.run(argv, input=json.dumps(limits), capture_output=True, text=True,
                                timeout=30)
        if result.returncode != 0:
            raise RuncError(f"runc update {container_id}: {result.stderr.strip()}")
        if info is not None:
            doc["info"] = dict(info)
            self._save(container_id, doc)


def update_json(resources: oci.Resources) -> dict[str, Any]:
    """The OCI LinuxResources document ``runc update --resources`` reads (only what is set)."""
    out: dict[str, Any] = {}
    cpu = {k: v for k, v in (("shares", resources.cpu_shares), ("quota", resources.cpu_quota),
                             ("period", resources.cpu_period)) if v}
    if cpu:
        out["cpu"] = cpu
    if resources.memory_limit_bytes:
        # Swap capped at the limit (no swap), as the spec at creation does.
        out["memory"] = {"limit": resources.memory_limit_bytes,
                         "swap": resources.memory_limit_bytes}
    if resources.pids_limit:
        out["pids"] = {"limit": resources.pids_limit}
    return out


def _replace(status: ContainerStatus, **changes: Any) -> ContainerStatus:
    return ContainerStatus(**{**asdict(status), **changes})


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _shim_alive(bundle: Path) -> bool:
    try:
        pid = int((bundle / "shim.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _disk_usage(top: Path) -> int:
    total = 0
    for path in [top, *top.rglob("*")] if top.exists() else []:
        try:
            total += path.lstat().st_blocks * 512
        except OSError:
            continue
    return total
