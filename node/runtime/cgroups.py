"""Reading container cgroups (usage, OOM kills) and removing empty pod cgroups.

runc creates and configures a container's cgroups from the spec's ``cgroupsPath`` (cgroupfs
layout: the same relative path under every hierarchy); this module only reads them and cleans
up what runc leaves behind (the pod-level parents).

Hierarchies are discovered from ``/proc/self/mountinfo``: every cgroup v1 mount (one per
controller or a co-mounted set, plus named ones such as ``name=systemd``) and the cgroup v2
mount (``unified``). On a hybrid host (v1 controllers, v2 mounted without any) statistics come
from v1; on a pure v2 host from v2's files (``memory.current``, ``memory.events``,
``cpu.stat``, ``pids.current``).

OOM: v1 counts kernel OOM kills in ``memory.oom_control`` (``oom_kill``, Linux >= 4.13) and
limit hits in ``memory.failcnt``; v2 in ``memory.events`` (``oom_kill``). A container whose
cgroup saw an OOM kill and whose init died of SIGKILL is reported as ``OOMKilled``. The counter
must be read before ``runc delete`` removes the cgroup: the shim reads it when the container exits.

Nothing here raises for a cgroup that is gone: readers return ``None`` for what they cannot read.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

UNIFIED = "unified"
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
                            "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc"})


def parse_mountinfo(text: str) -> dict[str, Path]:
    """Controller name (``memory``, ``cpu``, ``name=systemd``, ``unified``) -> mount point."""
    found: dict[str, Path] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point, fstype, super_options = Path(fields[4]), tail[0], tail[2]
        if fstype == "cgroup2":
            found.setdefault(UNIFIED, mount_point)
        elif fstype == "cgroup":
            for option in super_options.split(","):
                if option in V1_CONTROLLERS or option.startswith("name="):
                    found.setdefault(option, mount_point)
    return found


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, memory.oom_control, memory.events, cpu.stat)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class CgroupStats:
    """A snapshot of one cgroup; None = not available (cgroup gone, controller absent)."""

    memory_usage_bytes: int | None
    memory_working_set_bytes: int | None
    memory_limit_hits: int | None
    oom_kills: int | None
    cpu_usage_ns: int | None
    pids: int | None


class Cgroups:
    """cgroup access rooted at the given hierarchy mounts (default: this process' mountinfo).

    ``cgroups_path`` arguments are spec-style paths (``/skiff/pod<id>/<ctr>``), relative to each
    hierarchy's root. Tests pass ``mounts`` pointing into a temporary directory tree.
    """

    def __init__(self, mounts: dict[str, Path] | None = None) -> None:
        if mounts is None:
            mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        self.mounts = mounts
        self._v2_controllers = self._read_v2_controllers()

    def _read_v2_controllers(self) -> set[str]:
        root = self.mounts.get(UNIFIED)
        if root is None:
            return set()
        text = _read(root / "cgroup.controllers")
        return set(text.split()) if text else set()

    def _v1(self, controller: str, cgroups_path: str) -> Path | None:
        mount = self.mounts.get(controller)
        return None if mount is None else mount / cgroups_path.lstrip("/")

    def _v2(self, controller: str, cgroups_path: str) -> Path | None:
        if controller not in self._v2_controllers:
            return None
        return self.mounts[UNIFIED] / cgroups_path.lstrip("/")

    def oom_kills(self, cgroups_path: str) -> int | None:
        v1 = self._v1("memory", cgroups_path)
        if v1 is not None:
            return parse_keyed(_read(v1 / "memory.oom_control") or "").get("oom_kill")
        v2 = self._v2("memory", cgroups_path)
        if v2 is not None:
            return parse_keyed(_read(v2 / "memory.events") or "").get("oom_kill")
        return None

    def stats(self, cgroups_path: str) -> CgroupStats:
        usage = working_set = hits = cpu = pids = None
        v1_mem, v2_mem = self._v1("memory", cgroups_path), self._v2("memory", cgroups_path)
        if v1_mem is not None:
            usage = _read_int(v1_mem / "memory.usage_in_bytes")
            hits = _read_int(v1_mem / "memory.failcnt")
            inactive = parse_keyed(_read(v1_mem / "memory.stat") or "").get("total_inactive_file", 0)
        elif v2_mem is not None:
            usage = _read_int(v2_mem / "memory.current")
            hits = parse_keyed(_read(v2_mem / "memory.events") or "").get("max")
            inactive = parse_keyed(_read(v2_mem / "memory.stat") or "").get("inactive_file", 0)
        if usage is not None:
            # The kubelet's working set: usage minus page cache the kernel can drop at once.
            working_set = max(0, usage - inactive)
        v1_cpu, v2_cpu = self._v1("cpuacct", cgroups_path), self._v2("cpu", cgroups_path)
        if v1_cpu is not None:
            cpu = _read_int(v1_cpu / "cpuacct.usage")
        elif v2_cpu is not None:
            usec = parse_keyed(_read(v2_cpu / "cpu.stat") or "").get("usage_usec")
            cpu = None if usec is None else usec * 1000
        pids_dir = self._v1("pids", cgroups_path) or self._v2("pids", cgroups_path)
        if pids_dir is not None:
            pids = _read_int(pids_dir / "pids.current")
        return CgroupStats(usage, working_set, hits, self.oom_kills(cgroups_path), cpu, pids)

    def exists(self, cgroups_path: str) -> bool:
        return any((m / cgroups_path.lstrip("/")).is_dir() for m in self.mounts.values())

    def remove(self, cgroups_path: str) -> list[Path]:
        """Remove ``cgroups_path`` and its descendants in every hierarchy where they are empty.

        Returns what is left because it still holds processes (EBUSY) — the caller decides
        whether that is an error. A cgroup that does not exist is already removed.
        """
        busy: list[Path] = []
        for mount in self.mounts.values():
            top = mount / cgroups_path.lstrip("/")
            if not top.is_dir():
                continue
            # Children first: rmdir of a cgroup with child cgroups fails.
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(dirpath)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    busy.append(Path(dirpath))
        return busy

    def remove_if_empty(self, cgroups_path: str) -> bool:
        """Remove a pod cgroup once no container cgroup or process is left in it."""
        for mount in self.mounts.values():
            top = mount / cgroups_path.lstrip("/")
            if top.is_dir() and any(p.is_dir() for p in top.iterdir()):
                return False
        return not self.remove(cgroups_path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None
