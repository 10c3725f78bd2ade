"""Helpers for tests that need a lab: unique names, the store to use, a lab that always goes down.

Contract of `temporary_lab`: the lab gets a fresh prefix and a /24 of 10.77.0.0/16 that no route
in the root namespace uses, lives in the given directory, and is torn down (`down`) when the
block exits, whether the body passed, failed or was interrupted. Files stay for post-mortems.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

from deploy.lab import hosts, net, procs
from deploy.lab.state import LabState

SKIFF_STORE_MODULE = procs.REPO_ROOT / "deploy" / "cli" / "kvstore_cmd.py"


def skip_reason(store: str | None = None) -> str | None:
    """Why lab tests cannot run here (None if they can)."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, bridges, nftables); CI runs as root"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    if store == "etcd" and shutil.which("etcd") is None:
        return "etcd is not installed (apt-get install etcd-server)"
    if store == "skiff" and not SKIFF_STORE_MODULE.exists():
        return "skiff kvstore (deploy/cli/kvstore_cmd.py) does not exist yet"
    return None


def default_store() -> str:
    """$SKIFF_LAB_STORE if set; else skiff's own store once it exists; else Debian's etcd."""
    chosen = os.environ.get("SKIFF_LAB_STORE")
    if chosen:
        return chosen
    return "skiff" if SKIFF_STORE_MODULE.exists() else "etcd"


def unique_prefix() -> str:
    return "t" + "".join(random.choices("0123456789abcdef", k=6))


def free_subnet() -> str:
    """A 10.77.X.0/24 that overlaps no route of the root namespace."""
    out = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, text=True).stdout or "[]"
    used = []
    for route in json.loads(out):
        dst = route.get("dst", "default")
        if dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    candidates = [f"10.77.{x}.0/24" for x in range(1, 255)]
    random.shuffle(candidates)
    for cand in candidates:
        if not any(ipaddress.ip_network(cand).overlaps(u) for u in used):
            return cand
    raise RuntimeError("no free 10.77.X.0/24 subnet")


@contextlib.contextmanager
def temporary_lab(directory: Path, hosts_count: int = 3, replicas: int = 3, store: str | None = None,
                  wait: float = 40.0) -> Iterator[LabState]:
    """A lab that is always torn down (see module doc)."""
    prefix = unique_prefix()
    try:
        yield hosts.up(Path(directory), hosts_count, replicas, free_subnet(), prefix,
                       store or default_store(), wait)
    finally:
        hosts.down(Path(directory), prefix=prefix)


def leftovers(prefix: str) -> list[str]:
    """Everything of a lab with `prefix` still present: namespaces, links, processes, mounts."""
    found = [f"netns {n}" for n in net.list_netns() if n.startswith(prefix + "-")]
    found += [f"link {n}" for n in net.list_links() if n.startswith(prefix + "-")]
    found += [f"pid {p}" for p in procs.tagged_pids(prefix)]
    mounts = Path("/proc/self/mounts").read_text()
    found += [f"mount {line.split()[1]}" for line in mounts.splitlines() if f"/run/netns/{prefix}-" in line]
    return found


def lab_factory_fixture(directory: Path) -> Iterator[Callable[..., LabState]]:
    """Body of the pytest fixture `lab_factory` (tests/lab and tests/chaos conftest.py):
    yields make(hosts=3, replicas=3, store=None) -> LabState; skips (pytest.skip) when the lab
    cannot run here; every lab made goes down when the test ends, passed or failed."""
    import pytest

    stack: list[contextlib.AbstractContextManager[LabState]] = []

    def make(hosts: int = 3, replicas: int = 3, store: str | None = None) -> LabState:
        store = store or (default_store() if replicas else None)
        reason = skip_reason(store)
        if reason:
            pytest.skip(reason)
        cm = temporary_lab(directory / f"lab{len(stack)}", hosts, replicas, store)
        lab = cm.__enter__()
        stack.append(cm)
        return lab

    try:
        yield make
    finally:
        while stack:
            stack.pop().__exit__(None, None, None)
