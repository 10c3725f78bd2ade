"""The fault log: one JSON object per line in `<lab dir>/faults.jsonl`.

Each entry: {"wall": ISO-8601 UTC, "wall_s": float epoch seconds, "mono_ns": int
CLOCK_MONOTONIC ns, "fault": str, "hosts": [str], "detail": str}. `mono_ns` is taken *after* the
fault took effect (for heal: after it was lifted), on the same clock the chaos histories use
(`time.monotonic_ns()` is CLOCK_MONOTONIC, shared by every process on the machine), so a
history lines up against the faults exactly.

Fault names: partition, isolate, bridge, ring, heal (network); kill, start, pause, resume;
slow, slow-off. A history window [a, b] is "under a network fault" from a partition-like entry
until the next heal.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deploy.lab.state import FAULT_LOG


def log_fault(lab_dir: str | Path, fault: str, hosts: list[str], detail: str = "") -> dict[str, Any]:
    """Append an entry (see module doc) and return it."""
    mono = time.monotonic_ns()
    wall = time.time()
    entry = {
        "wall": datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds"),
        "wall_s": wall,
        "mono_ns": mono,
        "fault": fault,
        "hosts": list(hosts),
        "detail": detail,
    }
    with open(Path(lab_dir) / FAULT_LOG, "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    return entry


def read_faults(lab_dir: str | Path, since_ns: int = 0) -> list[dict[str, Any]]:
    """Entries with mono_ns >= since_ns, in file order; unreadable lines are skipped."""
    out = []
    try:
        lines = (Path(lab_dir) / FAULT_LOG).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("mono_ns", 0) >= since_ns:
            out.append(entry)
    return out
