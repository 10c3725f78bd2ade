"""Pod sandboxes, with all state on disk so a restarted runtime re-adopts them (their
containers are in ``containers``).

A sandbox is:
- a network namespace pinned at ``<root>/netns/<id>`` (a bind mount of the nsfs file, as
  ``ip netns add`` does), created first so the network is set up before anything runs in it
  and torn down even if the pause process has died;
- a pause container run through runc (like every container, under a shim; see ``runc``) that
  joins that namespace and creates the pod's IPC, UTS (hostname set) and PID namespaces. Its
  root is a read-only busybox tree built from the host's static busybox, so no pause image is
  needed. Containers join its namespaces through ``/proc/<pause pid>/ns/{ipc,uts,pid}``;
- a hostNetwork pod (CRI network NODE) has no namespace of its own: its pause process and
  containers stay in the host's network and UTS namespaces (``host_netns`` when the runtime was
  given one, else the runtime's), with the host's hostname and /etc/hosts, and no pod IP;
- ``<root>/sandboxes/<id>/``: ``state.json``, the pod's ``hostname``, ``hosts`` and
  ``resolv.conf`` (bind-mounted into every container), and the pause bundle ``pause/``.

Why runc for the pause rather than ``unshare``: one mechanism for every process of a pod (the
same cgroup tree, the same shim, the same adoption after restart), and runc sets the hostname.

Invariants:
- the manager holds no state in memory beyond a lock; every call reads the disk, so any number
  of manager objects on one root (a restarted runtime) agree;
- a sandbox is READY only while its pause process is alive and is the same process that was
  started (pid and kernel start time both match ``state.json``): a recycled pid is not adoption;
- ``stop`` and ``remove`` are idempotent; ``stop`` releases the pod IP and deletes the veth.
"""
from __future__ import annotations

import builtins
import json
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from node.network.bridge import PodNetwork
from node.network.ipam import atomic_write
from node.runtime import oci, rootfs
from node.runtime.cgroups import Cgroups
from node.runtime.runc import Runc, read_exit_status, reap_shims

READY, NOTREADY = "SANDBOX_READY", "SANDBOX_NOTREADY"


class SandboxError(Exception):
    """A sandbox or container operation failed; the message names the object and the cause."""


class NotFound(SandboxError):
    pass


class PodNetworkPlugin(Protocol):
    def setup(self, netns_path: str, sandbox_id: str) -> PodNetwork: ...
    def teardown(self, sandbox_id: str) -> None: ...


@dataclass(frozen=True)
class SandboxConfig:
    """RunPodSandbox's config, flattened."""

    name: str
    namespace: str = "default"
    uid: str = ""
    attempt: int = 0
    hostname: str = ""
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    share_process_namespace: bool = False
    host_network: bool = False  # CRI's namespace_options.network NODE
    cgroup_parent: str = ""  # default: <manager's cgroup_root>/pod<sandbox id>
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sandbox:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    hostname: str
    created_ns: int
    pid: int
    pid_start_time: int
    netns_path: str
    cgroup_parent: str
    share_process_namespace: bool
    ip: str = ""  # "" for a hostNetwork pod: its address is the node's
    gateway: str = ""
    host_network: bool = False
    stopped: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    state: str = NOTREADY  # derived on read, not stored


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def hosts_file(hostname: str, ip: str) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if ip:
        lines.append(f"{ip}\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(config: SandboxConfig, host_resolv: str) -> str:
    if not (config.dns_servers or config.dns_searches or config.dns_options):
        return host_resolv
    lines = [f"nameserver {s}" for s in config.dns_servers]
    if config.dns_searches:
        lines.append("search " + " ".join(config.dns_searches))
    if config.dns_options:
        lines.append("options " + " ".join(config.dns_options))
    return "\n".join(lines) + "\n"


class SandboxManager:
    """Pod sandboxes under ``root`` (``network`` None = a namespace with loopback only).
    ``host_netns``: the path of the host's network namespace when it is not the runtime's own
    (a lab host's); hostNetwork pods join it (None: they stay in the runtime's)."""

    def __init__(self, root: Path, network: PodNetworkPlugin | None, runc: Runc | None = None,
                 cgroups: Cgroups | None = None, stop_timeout: float = 10.0,
                 cgroup_root: str = "/skiff", host_netns: str | None = None) -> None:
        self.root = root
        self.host_netns = host_netns
        self.cgroup_root = cgroup_root
        self.network = network
        self.runc = runc or Runc(root / "runc")
        self.cgroups = cgroups or Cgroups()
        self.stop_timeout = stop_timeout
        self._lock = threading.RLock()
        for d in ("sandboxes", "netns"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def _dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id

    def run(self, config: SandboxConfig) -> Sandbox:
        sandbox_id = secrets.token_hex(32)
        directory = self._dir(sandbox_id)
        directory.mkdir(parents=True)
        netns_path = self.root / "netns" / sandbox_id
        # Recorded before anything is made, so that a failure (or a crash) anywhere after this
        # leaves a record that remove() can clean up from. A hostNetwork pod owns no namespace.
        cgroup_parent = config.cgroup_parent or f"{self.cgroup_root}/pod{sandbox_id[:32]}"
        self._save(directory, {"id": sandbox_id, "netns_path": "" if config.host_network else str(netns_path),
                               "partial": True, "cgroup_parent": cgroup_parent,
                               "host_network": config.host_network})
        try:
            return self._run(sandbox_id, directory, netns_path, cgroup_parent, config)
        except Exception:
            self.remove(sandbox_id)
            raise

    def _run(self, sandbox_id: str, directory: Path, netns_path: Path, cgroup_parent: str,
             config: SandboxConfig) -> Sandbox:
        hostname = pod_hostname(config)
        net: PodNetwork | None = None
        if config.host_network:
            netns = self.host_netns or ""
        else:
            netns = str(netns_path)
            netns_path.touch()
            check_run(["unshare", f"--net={netns_path}", "true"], "pin the pod network namespace")
            net = self.network.setup(netns, sandbox_id) if self.network else None
        ip = net.ip if net else ""
        write_etc_files(directory, config, hostname, ip)
        bundle = directory / "pause"
        bundle.mkdir()
        pause_root = rootfs.make_busybox_rootfs(self.root / "pause-rootfs", applets=("sh", "sleep"))
        spec = oci.pause_spec(sandbox_id, hostname, netns, str(pause_root),
                              f"{cgroup_parent}/{sandbox_id}", host_network=config.host_network)
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        pid = self.runc.create(sandbox_id, bundle, directory / "pause.log",
                               f"{cgroup_parent}/{sandbox_id}")
        self.runc.start(sandbox_id)
        sandbox = Sandbox(
            id=sandbox_id, name=config.name, namespace=config.namespace, uid=config.uid,
            attempt=config.attempt, hostname=hostname, created_ns=time.time_ns(), pid=pid,
            pid_start_time=process_start_time(pid) or 0, netns_path=netns,
            cgroup_parent=cgroup_parent, share_process_namespace=config.share_process_namespace,
            ip=ip, gateway=net.gateway if net else "", host_network=config.host_network, labels=dict(config.labels),
            annotations=dict(config.annotations))
        self._save(directory, _sandbox_doc(sandbox))
        return self.status(sandbox_id)

    def _save(self, directory: Path, doc: dict[str, Any]) -> None:
        atomic_write(directory / "state.json", json.dumps(doc, indent=1).encode())

    def _load(self, sandbox_id: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self._dir(sandbox_id) / "state.json").read_text())
            return doc
        except FileNotFoundError:
            raise NotFound(f"pod sandbox {sandbox_id} not found") from None

    def status(self, sandbox_id: str) -> Sandbox:
        doc = self._load(sandbox_id)
        if doc.get("partial"):
            raise NotFound(f"pod sandbox {sandbox_id} is being created or failed to be")
        fields = {k: v for k, v in doc.items() if k in Sandbox.__dataclass_fields__}
        alive = (not doc["stopped"]
                 and process_start_time(doc["pid"]) == doc["pid_start_time"]
                 and read_exit_status(self._dir(sandbox_id) / "pause") is None)
        fields["state"] = READY if alive else NOTREADY
        return Sandbox(**fields)

    def list(self) -> list[Sandbox]:
        reap_shims()
        out = []
        for entry in sorted((self.root / "sandboxes").iterdir()):
            try:
                out.append(self.status(entry.name))
            except NotFound:
                continue
        return out

    def cleanup_partial(self) -> builtins.list[str]:
        """Remove sandboxes whose creation never finished (a runtime crashed inside ``run``).
        Call at startup, before serving: a ``run`` in progress also looks partial."""
        removed: builtins.list[str] = []
        for entry in sorted((self.root / "sandboxes").iterdir()):
            try:
                partial = self._load(entry.name).get("partial", False)
            except (NotFound, ValueError):
                partial = False
            if partial:
                self.remove(entry.name)
                removed.append(entry.name)
        return removed

    def stop(self, sandbox_id: str) -> None:
        """Stop the pause process, delete the pod's network and release its IP (idempotent).
        The pod's containers must be stopped first (``containers.ContainerManager.stop_all``)."""
        with self._lock:
            doc = self._load(sandbox_id)
            self._stop_pause(sandbox_id)
            if not doc.get("host_network"):  # never touch the host's namespace
                if self.network is not None:
                    self.network.teardown(sandbox_id)
                netns_path = Path(doc["netns_path"])
                subprocess.run(["umount", str(netns_path)], capture_output=True)
                netns_path.unlink(missing_ok=True)
            if not doc.get("partial"):
                doc["stopped"] = True
                self._save(self._dir(sandbox_id), doc)

    def _stop_pause(self, sandbox_id: str) -> None:
        bundle = self._dir(sandbox_id) / "pause"
        if self.runc.state(sandbox_id) is None:
            return
        self.runc.kill(sandbox_id, signal.SIGTERM)
        if not wait_exit(bundle, self.stop_timeout):
            self.runc.kill(sandbox_id, signal.SIGKILL)
            wait_exit(bundle, 5.0)
        self.runc.delete(sandbox_id)
        reap_shims()

    def remove(self, sandbox_id: str) -> None:
        """Stop if needed, then delete every trace of the sandbox (idempotent). Its containers
        must be removed first (``containers.ContainerManager.remove_all``)."""
        with self._lock:
            try:
                doc = self._load(sandbox_id)
            except NotFound:
                return
            self.stop(sandbox_id)
            if doc.get("cgroup_parent"):
                self.cgroups.remove(f"{doc['cgroup_parent']}/{sandbox_id}")
                self.cgroups.remove_if_empty(doc["cgroup_parent"])
            rootfs.remove_container_dir(self._dir(sandbox_id))

    def pod_context(self, sandbox_id: str) -> oci.PodContext:
        sandbox = self.status(sandbox_id)
        if sandbox.state != READY:
            raise SandboxError(f"pod sandbox {sandbox_id} ({sandbox.namespace}/{sandbox.name}) "
                               "is not ready: its pause process is not running")
        d, proc = self._dir(sandbox_id), f"/proc/{sandbox.pid}/ns"
        return oci.PodContext(
            sandbox_id=sandbox_id, hostname=sandbox.hostname, netns_path=sandbox.netns_path,
            ipc_ns_path=f"{proc}/ipc", uts_ns_path=f"{proc}/uts",
            pid_ns_path=f"{proc}/pid" if sandbox.share_process_namespace else None,
            hosts_path=str(d / "hosts"), hostname_path=str(d / "hostname"),
            resolv_conf_path=str(d / "resolv.conf"))


def _sandbox_doc(sandbox: Sandbox) -> dict[str, Any]:
    doc = asdict(sandbox)
    doc.pop("state")
    return doc


def read_text_or_empty(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def pod_hostname(config: SandboxConfig) -> str:
    """The pod's hostname: the host's for a hostNetwork pod (it keeps the host's UTS namespace)."""
    return socket.gethostname() if config.host_network else config.hostname or config.name


def write_etc_files(directory: Path, config: SandboxConfig, hostname: str, ip: str) -> None:
    """``hosts``, ``hostname`` and ``resolv.conf`` for the pod's containers, in ``directory``.
    A hostNetwork pod gets the host's /etc/hosts, as the kubelet gives it."""
    hosts = read_text_or_empty("/etc/hosts") if config.host_network else ""
    (directory / "hosts").write_text(hosts or hosts_file(hostname, ip))
    (directory / "hostname").write_text(hostname + "\n")
    (directory / "resolv.conf").write_text(resolv_conf(config, read_text_or_empty("/etc/resolv.conf")))


def check_run(argv: Sequence[str], what: str) -> None:
    """Run a helper command; a failure is a SandboxError naming what could not be done."""
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"cannot {what}: {' '.join(argv)}: {result.stderr.strip()}")


def wait_exit(bundle: Path, timeout: float) -> bool:
    """Wait until the shim of ``bundle`` has written ``exit.json``; whether it has."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if read_exit_status(bundle) is not None:
            return True
        time.sleep(0.05)
    return read_exit_status(bundle) is not None
