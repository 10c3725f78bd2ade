"""RuntimeClass handlers: the ways skiff's runtime runs a pod, behind one Protocol.

The CRI server (``server``) picks a handler by ``RunPodSandboxRequest.runtime_handler`` and then
routes every call about that sandbox and its containers to it. Handlers:

- ``runc`` (``RuncHandler``, here): a pinned network namespace on the node's bridge, a pause
  container, and one runc container per container (``sandbox``, ``containers``). Needs root.
- ``process`` (``process.ProcessHandler``): a plain host process per container, under a small
  shim that writes the CRI log and the exit status. As root: in the pod's own network namespace
  (on the bridge, like runc's) and chrooted into the image's overlay rootfs; without root: in
  the host's network and file system, running the host's binaries.
- ``fake`` (``fake.FakeHandler``): hollow pods for scale tests: nothing runs; state in memory
  and a JSON-lines journal.

Shared vocabulary: ``sandbox.SandboxConfig``/``sandbox.Sandbox`` for pods,
``oci.ContainerRequest``/``oci.ImageConfig`` in and ``containers.ContainerStatus`` out for
containers, ``runc.ExecResult`` for ExecSync. Errors: ``sandbox.NotFound`` for unknown ids,
``sandbox.SandboxError`` for a state that forbids the call, ``oci.SpecError`` for a request that
cannot run; anything else is a runtime failure.

Invariants every handler keeps:
- the state that survives a restart is on disk; a handler built on the same root after a
  restart lists the same sandboxes and containers with the same ids (re-adoption);
- ``stop_*`` and ``remove_*`` are idempotent; removing an unknown id is not an error;
- the caller passes the container id to ``create_container`` (the server takes the image lease
  under that id before any layer is mounted).
"""
from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from node.network.bridge import BridgeNetwork
from node.runtime import oci
from node.runtime.containers import ContainerManager, ContainerStatus
from node.runtime.runc import ExecResult, Runc
from node.runtime.sandbox import Sandbox, SandboxConfig, SandboxManager

DEFAULT_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ContainerUsage:
    """ContainerStats' numbers; None = not measured."""

    cpu_ns: int | None = None
    memory_usage_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    writable_layer_bytes: int | None = None


class RuntimeHandler(Protocol):
    """One RuntimeClass handler (see the module docstring)."""

    name: str
    blocking: bool  # calls block on I/O: the server runs them in worker threads

    def network_status(self) -> tuple[bool, str]:
        """(pods get a network, why not)."""
        ...

    def recover(self) -> builtins.list[str]:
        """At startup, before serving: clean up what a crash left half-made; what was removed."""
        ...

    def has_sandbox(self, sandbox_id: str) -> bool: ...
    def run_sandbox(self, config: SandboxConfig) -> Sandbox: ...
    def stop_sandbox(self, sandbox_id: str) -> None: ...
    def remove_sandbox(self, sandbox_id: str) -> builtins.list[str]:
        """Remove the pod and its containers; the ids of the containers removed."""
        ...
    def sandbox_status(self, sandbox_id: str) -> Sandbox: ...
    def list_sandboxes(self) -> builtins.list[Sandbox]: ...

    def has_container(self, container_id: str) -> bool: ...
    def create_container(self, container_id: str, sandbox_id: str, request: oci.ContainerRequest,
                         image: oci.ImageConfig, layers: Sequence[Path], attempt: int,
                         log_path: Path | None, info: Mapping[str, Any]) -> None: ...
    def start_container(self, container_id: str) -> None: ...
    def stop_container(self, container_id: str, timeout: float) -> None: ...
    def remove_container(self, container_id: str) -> None: ...
    def container_status(self, container_id: str) -> ContainerStatus: ...
    def list_containers(self, sandbox_id: str | None = None) -> builtins.list[ContainerStatus]: ...
    def exec_sync(self, container_id: str, argv: Sequence[str], timeout: float | None) -> ExecResult: ...
    def stats(self, container_id: str) -> ContainerUsage: ...
    def update_resources(self, container_id: str, resources: oci.Resources,
                         info: Mapping[str, Any]) -> None: ...


class RuncHandler:
    """The default handler: ``SandboxManager`` + ``ContainerManager`` on the runtime root."""

    name = "runc"
    blocking = True

    def __init__(self, root: Path, network: BridgeNetwork | None, cgroup_root: str = "/skiff",
                 stop_timeout: float = DEFAULT_STOP_TIMEOUT, runc_binary: str = "runc",
                 host_netns: str | None = None) -> None:
        self.network = network
        self.stop_timeout = stop_timeout
        self.sandboxes = SandboxManager(root, network, runc=Runc(root / "runc", runc_binary),
                                        stop_timeout=stop_timeout, cgroup_root=cgroup_root,
                                        host_netns=host_netns)
        self.containers = ContainerManager(root, self.sandboxes)

    def network_status(self) -> tuple[bool, str]:
        if self.network is None:
            return False, "no pod CIDR configured (--pod-cidr): pods get loopback only"
        return True, ""

    def recover(self) -> builtins.list[str]:
        return self.sandboxes.cleanup_partial()

    def has_sandbox(self, sandbox_id: str) -> bool:
        return (self.sandboxes.root / "sandboxes" / sandbox_id / "state.json").exists()

    def run_sandbox(self, config: SandboxConfig) -> Sandbox:
        return self.sandboxes.run(config)

    def stop_sandbox(self, sandbox_id: str) -> None:
        self.sandboxes.status(sandbox_id)  # NotFound for an unknown id
        self.containers.stop_all(sandbox_id, self.stop_timeout)
        self.sandboxes.stop(sandbox_id)

    def remove_sandbox(self, sandbox_id: str) -> builtins.list[str]:
        removed = [c.id for c in self.containers.list(sandbox_id)]
        self.containers.remove_all(sandbox_id)
        self.sandboxes.remove(sandbox_id)
        return removed

    def sandbox_status(self, sandbox_id: str) -> Sandbox:
        return self.sandboxes.status(sandbox_id)

    def list_sandboxes(self) -> builtins.list[Sandbox]:
        return self.sandboxes.list()

    def has_container(self, container_id: str) -> bool:
        return self.containers.exists(container_id)

    def create_container(self, container_id: str, sandbox_id: str, request: oci.ContainerRequest,
                         image: oci.ImageConfig, layers: Sequence[Path], attempt: int,
                         log_path: Path | None, info: Mapping[str, Any]) -> None:
        self.containers.create(sandbox_id, request, image, layers, attempt, log_path,
                               container_id=container_id, info=info)

    def start_container(self, container_id: str) -> None:
        self.containers.start(container_id)

    def stop_container(self, container_id: str, timeout: float) -> None:
        self.containers.status(container_id)  # NotFound for an unknown id
        self.containers.stop(container_id, timeout)

    def remove_container(self, container_id: str) -> None:
        self.containers.remove(container_id)

    def container_status(self, container_id: str) -> ContainerStatus:
        return self.containers.status(container_id)

    def list_containers(self, sandbox_id: str | None = None) -> builtins.list[ContainerStatus]:
        return self.containers.list(sandbox_id)

    def exec_sync(self, container_id: str, argv: Sequence[str], timeout: float | None) -> ExecResult:
        return self.containers.exec_sync(container_id, argv, timeout)

    def stats(self, container_id: str) -> ContainerUsage:
        cg = self.containers.stats(container_id)
        return ContainerUsage(cg.cpu_usage_ns, cg.memory_usage_bytes, cg.memory_working_set_bytes,
                              self.containers.writable_layer_bytes(container_id))

    def update_resources(self, container_id: str, resources: oci.Resources,
                         info: Mapping[str, Any]) -> None:
        self.containers.update_resources(container_id, resources, info)
