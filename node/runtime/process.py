"""The ``process`` RuntimeClass handler: each container is a plain host process under a shim.

For development machines without root, and for light pods with root. Two modes:

- ``isolated`` (default when root): a pod gets a pinned network namespace on the node's bridge,
  as runc's pods do (``<root>/process/netns/<id>``), but no pause process. A container's root is
  the image's overlay rootfs (mounted at CreateContainer, like runc's); its shim enters the pod's
  network namespace and a private mount namespace, bind-mounts the pod's /etc files, the CRI
  mounts, /proc and /dev into the rootfs, and runs the command chrooted there with the image's
  user. No PID, IPC or UTS namespace and no cgroup limits: isolation is the network and the
  file system only.
- not isolated (without root): the host's network (the pod's IP is the node's, ``host_ip``) and
  file system: the command runs from the host's PATH with the image's and request's env, in the
  working dir if it exists on the host (else the container's directory). Image layers unused.

State on disk (so a restarted runtime re-adopts): ``<root>/process/sandboxes/<id>.json`` and
``<root>/process/containers/<id>/`` with ``state.json``, ``spec.json`` (what the shim runs),
``shim.pid``, ``shim.log``, ``exit.json``. The shim (``python -m node.runtime.process shim DIR``,
in its own session, so it outlives the runtime) starts the command in a new process group,
reports ``ok <pid> <start time>``, copies its stdout/stderr into the CRI log, and writes
``exit.json`` once the command exited and its output was drained (2 s grace for orphans holding
the pipes). A container is RUNNING while its pid is alive with the recorded start time (a
recycled pid is not the container); exit codes follow the shell (128 + signal).
"""
from __future__ import annotations

import builtins
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from node.network.bridge import BridgeNetwork
from node.network.ipam import atomic_write
from node.runtime import logs, oci, rootfs
from node.runtime.containers import CREATED, EXITED, RUNNING, ContainerStatus, exit_reason
from node.runtime.handlers import DEFAULT_STOP_TIMEOUT, ContainerUsage
from node.runtime.runc import ExecResult, exit_code_of, read_exit_status
from node.runtime.sandbox import (
    NOTREADY, READY, NotFound, Sandbox, SandboxConfig, SandboxError, check_run, pod_hostname,
    process_start_time, read_text_or_empty, wait_exit, write_etc_files,
)

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
DRAIN_GRACE = 2.0
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SHIMS: dict[int, subprocess.Popen[bytes]] = {}  # reaped by _reap (we are their parent)
_SHIMS_LOCK = threading.Lock()


class ProcessHandler:
    """See the module docstring. ``network`` is used only when ``isolated``."""

    name = "process"
    blocking = True

    def __init__(self, root: Path, network: BridgeNetwork | None, isolated: bool | None = None,
                 host_ip: str = "127.0.0.1", stop_timeout: float = DEFAULT_STOP_TIMEOUT,
                 host_netns: str | None = None) -> None:
        self.root = root / "process"
        self.network = network
        self.host_netns = host_netns  # where hostNetwork pods run when isolated (None: ours)
        self.isolated = os.geteuid() == 0 if isolated is None else isolated
        self.host_ip = host_ip
        self.stop_timeout = stop_timeout
        self._lock = threading.RLock()
        for d in ("sandboxes", "containers", "netns"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    def network_status(self) -> tuple[bool, str]:
        if self.isolated and self.network is None:
            return False, "no pod CIDR configured (--pod-cidr): process pods get loopback only"
        return True, ""

    def recover(self) -> builtins.list[str]:
        removed = []
        for path in sorted((self.root / "sandboxes").glob("*.json")):
            if json.loads(path.read_text()).get("partial"):
                self.remove_sandbox(path.stem)
                removed.append(path.stem)
        return removed

    # --- sandboxes -------------------------------------------------------------------------

    def _sandbox_file(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / f"{sandbox_id}.json"

    def _load_sandbox(self, sandbox_id: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self._sandbox_file(sandbox_id).read_text())
        except FileNotFoundError:
            raise NotFound(f"pod sandbox {sandbox_id} not found") from None
        return doc

    def has_sandbox(self, sandbox_id: str) -> bool:
        return self._sandbox_file(sandbox_id).exists()

    def run_sandbox(self, config: SandboxConfig) -> Sandbox:
        sandbox_id = secrets.token_hex(32)
        files = self.root / "sandboxes" / sandbox_id
        own_netns = self.isolated and not config.host_network
        netns = self.root / "netns" / sandbox_id if own_netns else None
        doc: dict[str, Any] = {"id": sandbox_id, "partial": True, "netns_path": str(netns or "")}
        atomic_write(self._sandbox_file(sandbox_id), json.dumps(doc).encode())
        try:
            ip, gateway = ("", "") if config.host_network else (self.host_ip, "")
            if netns is not None:
                netns.touch()
                check_run(["unshare", f"--net={netns}", "true"], "pin the pod network namespace")
                check_run(["nsenter", f"--net={netns}", "ip", "link", "set", "lo", "up"], "set lo up")
                net = self.network.setup(str(netns), sandbox_id) if self.network else None
                ip, gateway = (net.ip, net.gateway) if net else ("", "")
            hostname = pod_hostname(config)
            files.mkdir(parents=True, exist_ok=True)
            write_etc_files(files, config, hostname, ip)
            sandbox = Sandbox(
                id=sandbox_id, name=config.name, namespace=config.namespace, uid=config.uid,
                attempt=config.attempt, hostname=hostname, created_ns=time.time_ns(), pid=0,
                pid_start_time=0, netns_path=str(netns or ""), cgroup_parent="",
                share_process_namespace=config.share_process_namespace, ip=ip, gateway=gateway,
                host_network=config.host_network or not self.isolated,
                labels=dict(config.labels), annotations=dict(config.annotations))
            doc = {k: v for k, v in vars(sandbox).items() if k != "state"}
            atomic_write(self._sandbox_file(sandbox_id), json.dumps(doc).encode())
        except Exception:
            self.remove_sandbox(sandbox_id)
            raise
        return self.sandbox_status(sandbox_id)

    def sandbox_status(self, sandbox_id: str) -> Sandbox:
        doc = self._load_sandbox(sandbox_id)
        if doc.get("partial"):
            raise NotFound(f"pod sandbox {sandbox_id} is being created or failed to be")
        fields = {k: v for k, v in doc.items() if k in Sandbox.__dataclass_fields__}
        fields["state"] = NOTREADY if doc["stopped"] else READY
        return Sandbox(**fields)

    def list_sandboxes(self) -> builtins.list[Sandbox]:
        out = []
        for path in sorted((self.root / "sandboxes").glob("*.json")):
            try:
                out.append(self.sandbox_status(path.stem))
            except (NotFound, ValueError):
                continue
        return out

    def stop_sandbox(self, sandbox_id: str) -> None:
        with self._lock:
            doc = self._load_sandbox(sandbox_id)
            for container in self.list_containers(sandbox_id):
                self.stop_container(container.id, self.stop_timeout)
            if doc.get("netns_path"):
                if self.network is not None:
                    self.network.teardown(sandbox_id)
                subprocess.run(["umount", doc["netns_path"]], capture_output=True)
                Path(doc["netns_path"]).unlink(missing_ok=True)
            if not doc.get("partial"):
                doc["stopped"] = True
                atomic_write(self._sandbox_file(sandbox_id), json.dumps(doc).encode())

    def remove_sandbox(self, sandbox_id: str) -> builtins.list[str]:
        with self._lock:
            if not self.has_sandbox(sandbox_id):
                return []
            self.stop_sandbox(sandbox_id)
            removed = [c.id for c in self.list_containers(sandbox_id)]
            for container_id in removed:
                self.remove_container(container_id)
            rootfs.remove_container_dir(self.root / "sandboxes" / sandbox_id)
            self._sandbox_file(sandbox_id).unlink(missing_ok=True)
            return removed

    # --- containers ------------------------------------------------------------------------

    def _dir(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    def _load(self, container_id: str) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self._dir(container_id) / "state.json").read_text())
        except FileNotFoundError:
            raise NotFound(f"container {container_id} not found") from None
        return doc

    def _save(self, container_id: str, doc: dict[str, Any]) -> None:
        atomic_write(self._dir(container_id) / "state.json", json.dumps(doc).encode())

    def has_container(self, container_id: str) -> bool:
        return (self._dir(container_id) / "state.json").exists()

    def create_container(self, container_id: str, sandbox_id: str, request: oci.ContainerRequest,
                         image: oci.ImageConfig, layers: Sequence[Path], attempt: int,
                         log_path: Path | None, info: Mapping[str, Any]) -> None:
        sandbox = self.sandbox_status(sandbox_id)
        if sandbox.state != READY:
            raise SandboxError(f"pod sandbox {sandbox_id} ({sandbox.namespace}/{sandbox.name}) "
                               "is stopped: cannot create containers in it")
        directory = self._dir(container_id)
        directory.mkdir(parents=True)
        log_path = log_path or directory / "container.log"
        doc = {"id": container_id, "sandbox_id": sandbox_id, "name": request.name,
               "attempt": attempt, "created_ns": time.time_ns(), "started_ns": 0, "pid": 0,
               "pid_start_time": 0, "log_path": str(log_path), "labels": dict(request.labels),
               "annotations": dict(request.annotations), "info": dict(info)}
        self._save(container_id, doc)
        try:
            spec = self._spec(directory, sandbox, request, image, layers, log_path)
            (directory / "spec.json").write_text(json.dumps(spec))
        except Exception:
            self.remove_container(container_id)
            raise

    def _spec(self, directory: Path, sandbox: Sandbox, request: oci.ContainerRequest,
              image: oci.ImageConfig, layers: Sequence[Path], log_path: Path) -> dict[str, Any]:
        """What the shim runs (pure apart from mounting the rootfs when isolated)."""
        spec: dict[str, Any] = {
            "argv": oci.resolve_args(image, request), "log_path": str(log_path),
            "env": oci.merge_env(image.env, request.env, sandbox.hostname),
            "cwd": request.working_dir or image.working_dir or "/", "rootfs": None,
            "netns": sandbox.netns_path or (self.host_netns if self.isolated else None), "mounts": [], "uid": None, "gid": None}
        if not self.isolated:
            if not Path(spec["cwd"]).is_dir() or spec["cwd"] == "/":
                spec["cwd"] = str(directory)
            return spec
        root = rootfs.mount_overlay(directory, layers)
        user = image.user if request.run_as_user is None else str(request.run_as_user)
        uid, gid, _ = oci.resolve_user(user, read_text_or_empty(root / "etc/passwd"),
                                       read_text_or_empty(root / "etc/group"))
        files = self.root / "sandboxes" / sandbox.id
        mounts = [(str(files / name), f"/etc/{name}", False)
                  for name in ("hosts", "hostname", "resolv.conf")]
        mounts += [(m.host_path, m.container_path, m.readonly) for m in request.mounts]
        spec.update(rootfs=str(root), mounts=mounts, uid=uid,
                    gid=request.run_as_group if request.run_as_group is not None else gid)
        return spec

    def start_container(self, container_id: str) -> None:
        doc = self._load(container_id)
        if doc["started_ns"]:
            raise SandboxError(f"container {container_id} was already started")
        directory = self._dir(container_id)
        pid, start_time = _spawn_shim(directory)
        doc.update(started_ns=time.time_ns(), pid=pid, pid_start_time=start_time)
        self._save(container_id, doc)

    def container_status(self, container_id: str) -> ContainerStatus:
        doc = self._load(container_id)
        _reap()
        base = {k: doc[k] for k in ("sandbox_id", "name", "attempt", "created_ns", "started_ns",
                                    "log_path", "labels", "annotations", "info")}
        exited = read_exit_status(self._dir(container_id))
        if exited is not None:
            return ContainerStatus(id=container_id, state=EXITED, finished_ns=exited.finished_ns,
                                   exit_code=exited.exit_code,
                                   reason=exit_reason(exited.exit_code, False), **base)
        if not doc["started_ns"]:
            return ContainerStatus(id=container_id, state=CREATED, **base)
        if process_start_time(doc["pid"]) == doc["pid_start_time"]:
            return ContainerStatus(id=container_id, state=RUNNING, pid=doc["pid"], **base)
        if _shim_alive(self._dir(container_id)):
            # Exited a moment ago; the shim is draining its output and about to write exit.json.
            return ContainerStatus(id=container_id, state=RUNNING, pid=doc["pid"], **base)
        return ContainerStatus(id=container_id, state=EXITED, exit_code=255, reason="Unknown",
                               message="the container's shim recorded no exit status", **base)

    def list_containers(self, sandbox_id: str | None = None) -> builtins.list[ContainerStatus]:
        out = []
        for entry in sorted((self.root / "containers").iterdir()):
            try:
                status = self.container_status(entry.name)
            except (NotFound, ValueError):
                continue
            if sandbox_id is None or status.sandbox_id == sandbox_id:
                out.append(status)
        return out

    def stop_container(self, container_id: str, timeout: float) -> None:
        status = self.container_status(container_id)
        if status.state != RUNNING:
            return
        directory = self._dir(container_id)
        _signal(status.pid, signal.SIGTERM, group=False)
        if wait_exit(directory, timeout):
            return
        _signal(status.pid, signal.SIGKILL, group=True)
        wait_exit(directory, 10.0)

    def remove_container(self, container_id: str) -> None:
        directory = self._dir(container_id)
        if not directory.exists():
            return
        try:
            self.stop_container(container_id, 0)
        except (NotFound, ValueError):
            pass  # a half-made container: nothing runs
        if _shim_alive(directory):
            wait_exit(directory, 5.0)
        rootfs.remove_container_dir(directory)

    def exec_sync(self, container_id: str, argv: Sequence[str], timeout: float | None) -> ExecResult:
        status = self.container_status(container_id)
        if status.state != RUNNING:
            raise SandboxError(f"container {container_id} is not running: cannot exec {argv[0]!r}")
        spec = json.loads((self._dir(container_id) / "spec.json").read_text())
        env = dict(e.partition("=")[::2] for e in spec["env"])
        if spec["rootfs"]:
            # The container's network and mount namespaces, root and working directory.
            full = ["nsenter", "-t", str(status.pid), "-n", "-m", "-r", "-w", "--", *argv]
            return _run_captured(full, env, None, timeout)
        return _run_captured(list(argv), env, spec["cwd"], timeout)

    def stats(self, container_id: str) -> ContainerUsage:
        status = self.container_status(container_id)
        if status.state != RUNNING:
            return ContainerUsage()
        try:
            fields = Path(f"/proc/{status.pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss_pages = int(Path(f"/proc/{status.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return ContainerUsage()
        cpu_ns = (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _CLK_TCK
        rss = rss_pages * os.sysconf("SC_PAGE_SIZE")
        return ContainerUsage(cpu_ns, rss, rss, None)

    def update_resources(self, container_id: str, resources: oci.Resources,
                         info: Mapping[str, Any]) -> None:
        """Recorded only: process containers have no cgroup limits."""
        doc = self._load(container_id)
        doc["info"] = dict(info)
        self._save(container_id, doc)


def _reap() -> None:
    with _SHIMS_LOCK:
        for pid, proc in list(_SHIMS.items()):
            if proc.poll() is not None:
                del _SHIMS[pid]


def _shim_alive(directory: Path) -> bool:
    try:
        pid = int((directory / "shim.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)  # the shim made the command a process group leader
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _run_captured(argv: list[str], env: dict[str, str], cwd: str | None,
                  timeout: float | None) -> ExecResult:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    except OSError as failure:
        code = 127 if isinstance(failure, FileNotFoundError) else 126
        return ExecResult(code, b"", str(failure).encode())
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal(proc.pid, signal.SIGKILL, group=True)
        out, err = proc.communicate()
        return ExecResult(137, out, err, timed_out=True)
    code = proc.returncode
    return ExecResult(code if code >= 0 else 128 - code, out, err)


def _spawn_shim(directory: Path) -> tuple[int, int]:
    """Start the shim for the container in ``directory``; (command pid, its start time)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
    with open(directory / "shim.log", "ab") as shim_log:
        proc = subprocess.Popen([sys.executable, "-m", "node.runtime.process", "shim", str(directory)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=shim_log,
                                start_new_session=True, close_fds=True, cwd="/", env=env)
    with _SHIMS_LOCK:
        _SHIMS[proc.pid] = proc
    assert proc.stdout is not None
    report = proc.stdout.readline().decode(errors="replace").strip()
    proc.stdout.close()
    if report.startswith("ok "):
        _, pid, start_time = report.split()
        return int(pid), int(start_time)
    reason = report.removeprefix("error ") or read_text_or_empty(directory / "shim.log").strip()[-2000:]
    raise SandboxError(f"cannot start container {directory.name}: {reason or 'the shim said nothing'}")


# --- the shim (``python -m node.runtime.process shim DIR``) ----------------------------------


def _enter(spec: dict[str, Any]) -> None:
    """In the shim: join the pod's network namespace; set up the container's mounts in a
    private mount namespace (vanishes with the shim and the command: nothing to clean up)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if spec["netns"]:
        fd = os.open(spec["netns"], os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {spec['netns']}")
        os.close(fd)
    if not spec["rootfs"]:
        return
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    root = Path(spec["rootfs"])
    _mount(["--make-rprivate", "/"])
    for source, target, readonly in spec["mounts"]:
        dest = root / target.lstrip("/")
        if Path(source).is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.touch(exist_ok=True)
        _mount(["--bind", source, str(dest)])
        if readonly:
            _mount(["-o", "remount,bind,ro", str(dest)])
    (root / "proc").mkdir(exist_ok=True)
    _mount(["-t", "proc", "proc", str(root / "proc")])
    (root / "dev").mkdir(exist_ok=True)
    _mount(["--rbind", "/dev", str(root / "dev")])


def _mount(args: list[str]) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {result.stderr.strip()}")


def _shim(directory: Path) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    (directory / "shim.pid").write_text(str(os.getpid()))
    spec = json.loads((directory / "spec.json").read_text())
    report = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)  # nothing we start may hold the runtime's pipe
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        _enter(spec)
        proc = subprocess.Popen(spec["argv"], stdin=devnull, stdout=out_w, stderr=err_w,
                                env=dict(e.partition("=")[::2] for e in spec["env"]),
                                cwd=None if spec["rootfs"] else spec["cwd"], start_new_session=True,
                                preexec_fn=_chroot_fn(spec) if spec["rootfs"] else None)
    except (OSError, subprocess.SubprocessError) as err:
        os.write(report, f"error {spec['argv'][0]}: {err}\n".encode())
        return 1
    finally:
        os.close(out_w)
        os.close(err_w)
    os.write(report, f"ok {proc.pid} {process_start_time(proc.pid) or 0}\n".encode())
    os.close(report)
    writer = logs.LogWriter(Path(spec["log_path"]))
    pipes = {out_r: logs.STDOUT, err_r: logs.STDERR}
    pump = threading.Thread(target=logs.pump, args=(pipes, writer), daemon=True)
    pump.start()
    _, status = os.waitpid(proc.pid, 0)
    finished_ns = time.time_ns()
    pump.join(DRAIN_GRACE)
    code, sig = exit_code_of(status)
    doc = {"exit_code": code, "signal": sig, "finished_ns": finished_ns, "oom_killed": False}
    atomic_write(directory / "exit.json", json.dumps(doc).encode())
    return 0


def _chroot_fn(spec: dict[str, Any]) -> Any:
    root, cwd, uid, gid = spec["rootfs"], spec["cwd"], spec["uid"], spec["gid"]

    def enter_root() -> None:  # runs in the child between fork and exec
        os.chroot(root)
        os.chdir(cwd if os.path.isdir(cwd) else "/")
        os.setgroups([])
        os.setgid(gid or 0)
        os.setuid(uid or 0)
    return enter_root


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "shim":
        print("usage: python -m node.runtime.process shim CONTAINER_DIR", file=sys.stderr)
        return 2
    return _shim(Path(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
