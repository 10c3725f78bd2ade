"""What every benchmark shares: where data lives, and a description of the machine it ran on."""
from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any


class data_root:
    """The directory clusters keep data under: the user's (kept) or a temporary one (removed)."""

    def __init__(self, given: Path | None) -> None:
        self._given = given
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if self._given is not None:
            self._given.mkdir(parents=True, exist_ok=True)
            return self._given
        self._tmp = tempfile.TemporaryDirectory(prefix="skiff-bench-")
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def machine_info(before: tuple[float, float, float], after: tuple[float, float, float], data: Path) -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "load_average_before": [round(x, 2) for x in before],
        "load_average_after": [round(x, 2) for x in after],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "data_dir": str(data),
    }


def server_pids(cluster: Any) -> list[int]:
    """PIDs of a started cluster's server processes (EtcdCluster.pids, LocalCluster.members)."""
    if cluster is None:
        return []
    if hasattr(cluster, "pids"):
        return [pid for pid in cluster.pids if pid]
    members = getattr(cluster, "members", [])
    return [m.process.pid for m in members if getattr(m, "process", None) is not None]


def cpu_seconds(pids: list[int]) -> float | None:
    """User+system CPU seconds used so far by `pids` (from /proc), None if one is unreadable."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


async def create_if_absent(client: Any, obj: Any, namespace: str = "") -> None:
    """Create obj through an ApiClient unless it exists (benchmarks rerun against one cluster)."""
    from controlplane.client.api import AlreadyExistsError
    try:
        await client.create(obj, namespace)
    except AlreadyExistsError:
        pass


async def ensure_namespace(client: Any, name: str) -> None:
    from protos.skiff.api.v1 import core_pb2
    ns = core_pb2.Namespace()
    ns.metadata.name = name
    await create_if_absent(client, ns)
