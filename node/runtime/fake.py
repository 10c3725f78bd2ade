"""The ``fake`` RuntimeClass handler: hollow pods for scale tests and benchmarks.

Nothing runs. A sandbox is READY from RunPodSandbox until StopPodSandbox and gets an address
from ``pod_cidr`` (round robin, unique among live sandboxes); a container is CREATED, RUNNING
from StartContainer, and EXITED with code 0 (reason ``Completed``) when stopped. Two optional
container annotations make it end by itself, for restart-policy tests on hollow nodes:
``skiff.io/fake-exit-after-seconds`` (a float) and ``skiff.io/fake-exit-code`` (an int, default 0).
ExecSync answers exit code 0 with empty output; stats are zero. If the server passes a log
path, an empty log file is created there (readers expect one).

State: dicts in memory; every change is one JSON line appended to ``<root>/fake/journal.jsonl``
(no fsync: a hollow pod is not worth one), replayed and compacted when a handler starts on the
same root. So a restarted runtime lists the same hollow pods with the same ids.

Cost per operation: a dict update, one short ``write``; no process, no thread, no lock held
across I/O other than the append. Never blocking, so the server calls it on its event loop.
"""
from __future__ import annotations

import builtins
import dataclasses
import ipaddress
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.runtime import oci
from node.runtime.containers import CREATED, EXITED, RUNNING, ContainerStatus, exit_reason
from node.runtime.handlers import ContainerUsage
from node.runtime.runc import ExecResult
from node.runtime.sandbox import NOTREADY, READY, NotFound, Sandbox, SandboxConfig, SandboxError

EXIT_AFTER = "skiff.io/fake-exit-after-seconds"
EXIT_CODE = "skiff.io/fake-exit-code"
DEFAULT_POD_CIDR = "10.255.0.0/16"


class FakeHandler:
    """Hollow sandboxes and containers (see the module docstring)."""

    name = "fake"
    blocking = False

    def __init__(self, root: Path, pod_cidr: str | None = None) -> None:
        self.root = root / "fake"
        self.root.mkdir(parents=True, exist_ok=True)
        self.journal = self.root / "journal.jsonl"
        self._network = ipaddress.IPv4Network(pod_cidr or DEFAULT_POD_CIDR)
        self._sandboxes: dict[str, dict[str, Any]] = {}
        self._containers: dict[str, dict[str, Any]] = {}
        self._next_ip = 2  # .1 is the gateway
        self._ips: set[str] = set()  # held by sandboxes not stopped
        self._lock = threading.Lock()
        self._replay()
        self._compact()
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    # --- the journal ------------------------------------------------------------------------

    def _replay(self) -> None:
        try:
            lines = self.journal.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError):
                continue  # a torn last line from a crash: the change it held is lost

    def _apply(self, op: dict[str, Any]) -> None:
        kind = op["op"]
        doc: dict[str, Any] = op.get("doc") or {}
        if kind == "sandbox":
            self._sandboxes[doc["id"]] = doc
            if doc["stopped"]:
                self._ips.discard(doc["ip"])
            else:
                self._ips.add(doc["ip"])
        elif kind == "container":
            self._containers[doc["id"]] = doc
        elif kind == "rm-sandbox":
            gone = self._sandboxes.pop(op["id"], None)
            if gone is not None:
                self._ips.discard(gone["ip"])
        elif kind == "rm-container":
            self._containers.pop(op["id"], None)
        elif kind == "next-ip":
            self._next_ip = op["value"]

    def _compact(self) -> None:
        ops = [{"op": "next-ip", "value": self._next_ip}]
        ops += [{"op": "sandbox", "doc": d} for d in self._sandboxes.values()]
        ops += [{"op": "container", "doc": d} for d in self._containers.values()]
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        tmp.write_text("".join(json.dumps(op) + "\n" for op in ops))
        os.replace(tmp, self.journal)

    def _record(self, op: dict[str, Any]) -> None:
        self._apply(op)
        os.write(self._fd, (json.dumps(op, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)

    # --- sandboxes --------------------------------------------------------------------------

    def network_status(self) -> tuple[bool, str]:
        return True, ""

    def recover(self) -> builtins.list[str]:
        return []

    def has_sandbox(self, sandbox_id: str) -> bool:
        return sandbox_id in self._sandboxes

    def _allocate_ip(self) -> str:
        size = self._network.num_addresses
        for _ in range(size):
            candidate = self._next_ip % size
            self._next_ip = candidate + 1
            address = str(self._network.network_address + candidate)
            if candidate >= 2 and candidate != size - 1 and address not in self._ips:
                return address
        raise SandboxError(f"fake pod CIDR {self._network} is exhausted")

    def run_sandbox(self, config: SandboxConfig) -> Sandbox:
        with self._lock:
            sandbox = Sandbox(
                id=secrets.token_hex(32), name=config.name, namespace=config.namespace,
                uid=config.uid, attempt=config.attempt, hostname=config.hostname or config.name,
                created_ns=time.time_ns(), pid=0, pid_start_time=0, netns_path="",
                cgroup_parent=config.cgroup_parent,
                share_process_namespace=config.share_process_namespace,
                ip="" if config.host_network else self._allocate_ip(), host_network=config.host_network,
                gateway=str(self._network.network_address + 1), labels=dict(config.labels),
                annotations=dict(config.annotations))
            doc = dataclasses.asdict(sandbox)
            del doc["state"]
            self._record({"op": "next-ip", "value": self._next_ip})
            self._record({"op": "sandbox", "doc": doc})
        return self.sandbox_status(sandbox.id)

    def _sandbox_doc(self, sandbox_id: str) -> dict[str, Any]:
        try:
            return self._sandboxes[sandbox_id]
        except KeyError:
            raise NotFound(f"pod sandbox {sandbox_id} not found") from None

    def sandbox_status(self, sandbox_id: str) -> Sandbox:
        doc = self._sandbox_doc(sandbox_id)
        return Sandbox(**doc, state=NOTREADY if doc["stopped"] else READY)

    def list_sandboxes(self) -> builtins.list[Sandbox]:
        return [self.sandbox_status(i) for i in list(self._sandboxes)]

    def stop_sandbox(self, sandbox_id: str) -> None:
        doc = self._sandbox_doc(sandbox_id)
        for container in self.list_containers(sandbox_id):
            self.stop_container(container.id, 0)
        if not doc["stopped"]:
            with self._lock:
                self._record({"op": "sandbox", "doc": {**doc, "stopped": True}})

    def remove_sandbox(self, sandbox_id: str) -> builtins.list[str]:
        if sandbox_id not in self._sandboxes:
            return []
        removed = [c["id"] for c in list(self._containers.values()) if c["sandbox_id"] == sandbox_id]
        with self._lock:
            for container_id in removed:
                self._record({"op": "rm-container", "id": container_id})
            self._record({"op": "rm-sandbox", "id": sandbox_id})
        return removed

    # --- containers -------------------------------------------------------------------------

    def has_container(self, container_id: str) -> bool:
        return container_id in self._containers

    def _doc(self, container_id: str) -> dict[str, Any]:
        try:
            return self._containers[container_id]
        except KeyError:
            raise NotFound(f"container {container_id} not found") from None

    def create_container(self, container_id: str, sandbox_id: str, request: oci.ContainerRequest,
                         image: oci.ImageConfig, layers: Sequence[Path], attempt: int,
                         log_path: Path | None, info: Mapping[str, Any]) -> None:
        if self._sandbox_doc(sandbox_id)["stopped"]:
            raise SandboxError(f"pod sandbox {sandbox_id} is stopped: cannot create containers in it")
        oci.resolve_args(image, request)  # the same "no command" error a real handler gives
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.touch()
        doc = {"id": container_id, "sandbox_id": sandbox_id, "name": request.name,
               "attempt": attempt, "created_ns": time.time_ns(), "started_ns": 0,
               "finished_ns": 0, "exit_code": 0, "log_path": str(log_path or ""),
               "labels": dict(request.labels), "annotations": dict(request.annotations),
               "info": dict(info)}
        with self._lock:
            self._record({"op": "container", "doc": doc})

    def _update(self, container_id: str, **changes: Any) -> None:
        with self._lock:
            self._record({"op": "container", "doc": {**self._doc(container_id), **changes}})

    def start_container(self, container_id: str) -> None:
        if self._doc(container_id)["started_ns"]:
            raise SandboxError(f"container {container_id} was already started")
        self._update(container_id, started_ns=time.time_ns())

    def container_status(self, container_id: str) -> ContainerStatus:
        doc = self._doc(container_id)
        base = {k: doc[k] for k in ("sandbox_id", "name", "attempt", "created_ns", "started_ns",
                                    "log_path", "labels", "annotations", "info")}
        finished, code = doc["finished_ns"], doc["exit_code"]
        after = doc["annotations"].get(EXIT_AFTER)
        if not finished and doc["started_ns"] and after is not None:
            ends = doc["started_ns"] + int(float(after) * 1e9)
            if time.time_ns() >= ends:
                finished, code = ends, int(doc["annotations"].get(EXIT_CODE, "0"))
        if finished:
            return ContainerStatus(id=container_id, state=EXITED, finished_ns=finished,
                                   exit_code=code, reason=exit_reason(code, False), **base)
        state = RUNNING if doc["started_ns"] else CREATED
        return ContainerStatus(id=container_id, state=state, **base)

    def list_containers(self, sandbox_id: str | None = None) -> builtins.list[ContainerStatus]:
        return [self.container_status(c["id"]) for c in list(self._containers.values())
                if sandbox_id is None or c["sandbox_id"] == sandbox_id]

    def stop_container(self, container_id: str, timeout: float) -> None:
        status = self.container_status(container_id)
        if status.state == RUNNING:
            self._update(container_id, finished_ns=time.time_ns(), exit_code=0)
        elif status.state == EXITED and not self._doc(container_id)["finished_ns"]:
            self._update(container_id, finished_ns=status.finished_ns, exit_code=status.exit_code)

    def remove_container(self, container_id: str) -> None:
        if container_id in self._containers:
            with self._lock:
                self._record({"op": "rm-container", "id": container_id})

    def exec_sync(self, container_id: str, argv: Sequence[str], timeout: float | None) -> ExecResult:
        if self.container_status(container_id).state != RUNNING:
            raise SandboxError(f"container {container_id} is not running: cannot exec {argv[0]!r}")
        return ExecResult(0, b"", b"")

    def stats(self, container_id: str) -> ContainerUsage:
        self._doc(container_id)
        return ContainerUsage(0, 0, 0, 0)

    def update_resources(self, container_id: str, resources: oci.Resources,
                         info: Mapping[str, Any]) -> None:
        self._update(container_id, info=dict(info))
