"""Pure construction of OCI runtime specs (``config.json``) for pods' pause processes and containers.

Nothing here touches the file system: the caller passes the image config, the request, paths
it has decided, and (for user names) the text of the rootfs' ``/etc/passwd`` and ``/etc/group``.
The functions return a plain ``dict`` ready for ``json.dump``; runc 1.1 consumes it.

Semantics follow Kubernetes and containerd's CRI plugin:
- command/args: ``command`` replaces the image's Entrypoint, ``args`` replaces its Cmd; with only
  ``command`` set, the image's Cmd is dropped (Kubernetes' rule, not Docker's);
- env: the image's Env, then the request's (a request variable replaces the image's of the same
  name, in place); ``PATH`` gets a default when neither sets it; ``HOSTNAME`` is the pod's;
- resources: CPU shares from the request (``milli * 1024 / 1000``, at least 2), CFS quota from the
  limit (``milli * period / 1000``, at least 1 ms), memory limit with swap capped at the same
  value (no swap), a pids limit; all devices denied except runc's defaults;
- namespaces: a container joins the pod's network namespace (pinned path) and the pause process'
  IPC and UTS namespaces (and PID namespace when the pod shares it), and gets its own mount
  namespace (and PID namespace otherwise); the pause process creates IPC, UTS and PID. A
  hostNetwork pod's containers stay in the host's network and UTS namespaces instead.
- security: containerd's default capability set, masked and read-only /proc and /sys paths,
  RLIMIT_NOFILE, ``noNewPrivileges`` unless the request allows privilege escalation.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CPU_PERIOD = 100_000
MIN_CPU_SHARES = 2
MIN_CPU_QUOTA = 1_000
DEFAULT_NOFILE = 1024

# containerd's (and Docker's) default capabilities for unprivileged containers.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# The pause process: PID 1 of the pod's PID namespace. It must exit on SIGTERM (a shell as PID 1
# ignores signals it has no handler for) and reap nothing but its own sleep.
PAUSE_ARGS = ("/bin/sh", "-c", 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done')


class SpecError(ValueError):
    """The request cannot become a runnable spec (no command, unknown user name, ...)."""


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config (``config`` section) a container spec uses."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_oci(cls, config: Mapping[str, Any]) -> ImageConfig:
        """From an image config JSON's ``config`` object (keys Env, Entrypoint, Cmd, ...)."""
        return cls(tuple(config.get("Env") or ()), tuple(config.get("Entrypoint") or ()),
                   tuple(config.get("Cmd") or ()), config.get("WorkingDir") or "",
                   config.get("User") or "")


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path (a volume, an emptyDir) into the container."""

    container_path: str
    host_path: str
    readonly: bool = False


@dataclass(frozen=True)
class Resources:
    """CRI's LinuxContainerResources subset; 0 means unset."""

    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    memory_limit_bytes: int = 0
    pids_limit: int = 0
    oom_score_adj: int = 0

    @classmethod
    def from_kubernetes(cls, cpu_request_milli: int = 0, cpu_limit_milli: int = 0,
                        memory_limit_bytes: int = 0, pids_limit: int = 0) -> Resources:
        """As the kubelet converts requests/limits (a limit without a request is the request)."""
        request = cpu_request_milli or cpu_limit_milli
        return cls(cpu_shares=milli_cpu_to_shares(request),
                   cpu_quota=milli_cpu_to_quota(cpu_limit_milli),
                   cpu_period=DEFAULT_CPU_PERIOD if cpu_limit_milli else 0,
                   memory_limit_bytes=memory_limit_bytes, pids_limit=pids_limit)


def milli_cpu_to_shares(milli: int) -> int:
    return max(MIN_CPU_SHARES, milli * 1024 // 1000)


def milli_cpu_to_quota(milli: int, period: int = DEFAULT_CPU_PERIOD) -> int:
    if milli <= 0:
        return 0
    return max(MIN_CPU_QUOTA, milli * period // 1000)


@dataclass(frozen=True)
class ContainerRequest:
    """What the CRI server asks for (CreateContainer's config, flattened to plain values)."""

    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    mounts: tuple[Mount, ...] = ()
    resources: Resources = Resources()
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    readonly_rootfs: bool = False
    allow_privilege_escalation: bool = False
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodContext:
    """What a container takes from its pod sandbox: namespaces to join and /etc files."""

    sandbox_id: str
    hostname: str
    netns_path: str  # "" = the runtime's own network namespace (a hostNetwork pod without --host-netns)
    ipc_ns_path: str
    uts_ns_path: str
    pid_ns_path: str | None  # set only when the pod shares one PID namespace
    hosts_path: str
    hostname_path: str
    resolv_conf_path: str


def resolve_args(image: ImageConfig, request: ContainerRequest) -> list[str]:
    if request.command:
        argv = list(request.command) + list(request.args)
    else:
        argv = list(image.entrypoint) + list(request.args or image.cmd)
    if not argv:
        raise SpecError(f"container {request.name!r}: no command: the image has no Entrypoint or "
                        "Cmd and the request sets neither command nor args")
    return argv


def merge_env(image_env: Sequence[str], request_env: Sequence[tuple[str, str]],
              hostname: str) -> list[str]:
    merged: dict[str, str] = {}
    for entry in image_env:
        name, _, value = entry.partition("=")
        merged[name] = value
    merged.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    merged["HOSTNAME"] = hostname
    for name, value in request_env:
        merged[name] = value
    return [f"{k}={v}" for k, v in merged.items()]


def resolve_user(user: str, passwd_text: str = "", group_text: str = "") -> tuple[int, int, list[int]]:
    """``user`` as in an image config (``uid``, ``uid:gid``, ``name``, ``name:group``) to
    ``(uid, gid, additional gids)``, looking names up in the given passwd/group file texts."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    passwd = [line.split(":") for line in passwd_text.splitlines() if line.count(":") >= 3]
    groups = [line.split(":") for line in group_text.splitlines() if line.count(":") >= 3]
    entry = next((p for p in passwd if p[0] == name or (name.isdigit() and p[2] == name)), None)
    if name.isdigit():
        uid = int(name)
    elif entry is not None:
        uid = int(entry[2])
    else:
        raise SpecError(f"user {name!r} not found in the image's /etc/passwd")
    gid = int(entry[3]) if entry is not None else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            match = next((g for g in groups if g[0] == group), None)
            if match is None:
                raise SpecError(f"group {group!r} not found in the image's /etc/group")
            gid = int(match[2])
    login = entry[0] if entry is not None else None
    extra = sorted({int(g[2]) for g in groups
                    if login and login in g[3].split(",") and int(g[2]) != gid})
    return uid, gid, extra


def _base_mounts(readonly_sys: bool = True) -> list[dict[str, Any]]:
    sys_options = ["nosuid", "noexec", "nodev"] + (["ro"] if readonly_sys else [])
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def _bind(destination: str, source: str, readonly: bool) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "rprivate", "ro" if readonly else "rw"]}


def _resources(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    cpu: dict[str, int] = {}
    if resources.cpu_shares:
        cpu["shares"] = resources.cpu_shares
    if resources.cpu_quota:
        cpu["quota"] = resources.cpu_quota
        cpu["period"] = resources.cpu_period or DEFAULT_CPU_PERIOD
    if cpu:
        out["cpu"] = cpu
    if resources.memory_limit_bytes:
        limit = resources.memory_limit_bytes
        out["memory"] = {"limit": limit, "swap": limit}
    if resources.pids_limit:
        out["pids"] = {"limit": resources.pids_limit}
    return out


def _capabilities(add: Sequence[str], drop: Sequence[str]) -> dict[str, list[str]]:
    def norm(cap: str) -> str:
        cap = cap.upper()
        return cap if cap.startswith("CAP_") else "CAP_" + cap
    dropped = {norm(c) for c in drop}
    caps = [] if "CAP_ALL" in dropped else [c for c in DEFAULT_CAPABILITIES if c not in dropped]
    caps += [norm(c) for c in add if norm(c) not in caps]
    return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}


def container_spec(image: ImageConfig, request: ContainerRequest, pod: PodContext,
                   rootfs_path: str, cgroups_path: str, container_id: str,
                   passwd_text: str = "", group_text: str = "") -> dict[str, Any]:
    """The OCI spec for one container of ``pod`` (see the module docstring for the rules)."""
    # runAsUser replaces the image's User; the primary group then comes from the image's
    # /etc/passwd entry for that uid (0 when there is none), unless runAsGroup is set.
    user_spec = image.user if request.run_as_user is None else str(request.run_as_user)
    uid, gid, extra_gids = resolve_user(user_spec, passwd_text, group_text)
    if request.run_as_group is not None:
        gid = request.run_as_group
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    groups = sorted(set(extra_gids) | set(request.supplemental_groups))
    if groups:
        user["additionalGids"] = groups
    mounts = _base_mounts()
    etc_readonly = request.readonly_rootfs
    mounts += [_bind("/etc/hosts", pod.hosts_path, etc_readonly),
               _bind("/etc/hostname", pod.hostname_path, etc_readonly),
               _bind("/etc/resolv.conf", pod.resolv_conf_path, etc_readonly)]
    mounts += [_bind(m.container_path, m.host_path, m.readonly) for m in request.mounts]
    namespaces: list[dict[str, str]] = _network_namespace(pod.netns_path) + [
        {"type": "ipc", "path": pod.ipc_ns_path},
        {"type": "uts", "path": pod.uts_ns_path},
        {"type": "mount"},
        {"type": "pid", "path": pod.pid_ns_path} if pod.pid_ns_path else {"type": "pid"},
    ]
    process: dict[str, Any] = {
        "terminal": False,
        "user": user,
        "args": resolve_args(image, request),
        "env": merge_env(image.env, request.env, pod.hostname),
        "cwd": request.working_dir or image.working_dir or "/",
        "capabilities": _capabilities(request.add_capabilities, request.drop_capabilities),
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": DEFAULT_NOFILE, "soft": DEFAULT_NOFILE}],
        "noNewPrivileges": not request.allow_privilege_escalation,
    }
    if request.resources.oom_score_adj:
        process["oomScoreAdj"] = request.resources.oom_score_adj
    annotations = dict(request.annotations)
    annotations.update({"io.kubernetes.cri.container-type": "container",
                        "io.kubernetes.cri.sandbox-id": pod.sandbox_id,
                        "io.kubernetes.cri.container-name": request.name})
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs_path, "readonly": request.readonly_rootfs},
        "mounts": mounts,
        "annotations": annotations,
        "linux": _linux(namespaces, request.resources, cgroups_path),
    }


def _network_namespace(netns_path: str) -> list[dict[str, str]]:
    """Join the namespace at netns_path; with no path, stay in the runtime's (no entry: runc
    makes no new network namespace)."""
    return [{"type": "network", "path": netns_path}] if netns_path else []


def _linux(namespaces: list[dict[str, str]], resources: Resources, cgroups_path: str) -> dict[str, Any]:
    return {
        "namespaces": namespaces,
        "resources": _resources(resources),
        "cgroupsPath": cgroups_path,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }


def pause_spec(sandbox_id: str, hostname: str, netns_path: str, rootfs_path: str,
               cgroups_path: str, resources: Resources = Resources(cpu_shares=MIN_CPU_SHARES),
               host_network: bool = False) -> dict[str, Any]:
    """The OCI spec for a pod's pause process: it joins the pinned network namespace and
    creates the pod's IPC, UTS (with ``hostname``) and PID namespaces; no capabilities.
    A hostNetwork pod keeps the host's UTS namespace too (its hostname is the host's), as
    Kubernetes' runtimes do; ``netns_path`` is then the host's namespace, or "" for the runtime's."""
    uts = [] if host_network else [{"type": "uts"}]
    namespaces = _network_namespace(netns_path) + [{"type": "ipc"}] + uts + [{"type": "pid"}, {"type": "mount"}]
    no_caps: dict[str, list[str]] = {"bounding": [], "effective": [], "permitted": []}
    spec = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(PAUSE_ARGS),
            "env": [DEFAULT_PATH],
            "cwd": "/",
            "capabilities": no_caps,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": DEFAULT_NOFILE, "soft": DEFAULT_NOFILE}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs_path, "readonly": True},
        "mounts": _base_mounts()[:2] + [_base_mounts()[3]],
        "annotations": {"io.kubernetes.cri.container-type": "sandbox",
                        "io.kubernetes.cri.sandbox-id": sandbox_id},
        "linux": _linux(namespaces, resources, cgroups_path),
    }
    if not host_network:
        spec["hostname"] = hostname  # runc sets it only in a UTS namespace of the pod's own
    return spec
