"""Pod IP address management for one node: a pure allocator and a JSON file store.

The node's podCIDR (e.g. ``10.244.1.0/24``) is split as: the network address and the broadcast
address are never handed out, the first host address (``.1``) is the bridge's gateway, and pods
get addresses from the second host address on. Allocation is round-robin from the last address
handed out (as CNI's host-local plugin does), so an address just released is not reused at once:
a stale packet or conntrack entry for a dead pod does not reach its successor.

Invariants:
- an address belongs to at most one sandbox id; allocating again for the same id returns the
  address it already has (retries after a crash are idempotent);
- the state on disk is always a complete JSON document: writes go to a temporary file that is
  fsynced and renamed over the old one; a process lock (``flock``) plus a thread lock serialise
  read-modify-write cycles, so two runtimes on one root (a restart overlapping the old one) do
  not hand out one address twice.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

SCHEMA_VERSION = 1


class IPAMError(Exception):
    """Allocation failed (exhausted range, corrupt state file, conflicting podCIDR)."""


@dataclass(frozen=True)
class Allocations:
    """The pure state: the range, who holds which address, and the last address handed out."""

    cidr: str
    by_id: dict[str, str] = field(default_factory=dict)
    last: str | None = None

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr, strict=True)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)


def usable_range(network: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """Pod addresses of ``network``: every host address except the gateway (the first one)."""
    if network.prefixlen > 29:
        raise IPAMError(f"podCIDR {network} is too small: need at least a /29 (gateway + pods)")
    hosts = list(network.hosts())
    return hosts[1:]


def allocate(state: Allocations, sandbox_id: str) -> tuple[Allocations, str]:
    """The address for ``sandbox_id``: the one it holds, or the next free one after ``last``."""
    if sandbox_id in state.by_id:
        return state, state.by_id[sandbox_id]
    candidates = usable_range(state.network)
    taken = set(state.by_id.values())
    start = 0
    if state.last is not None:
        last = ipaddress.IPv4Address(state.last)
        if last in state.network:
            start = next((i + 1 for i, a in enumerate(candidates) if a == last), 0)
    for offset in range(len(candidates)):
        address = str(candidates[(start + offset) % len(candidates)])
        if address not in taken:
            by_id = dict(state.by_id)
            by_id[sandbox_id] = address
            return replace(state, by_id=by_id, last=address), address
    raise IPAMError(f"podCIDR {state.cidr} is exhausted: all {len(candidates)} pod addresses are in use")


def release(state: Allocations, sandbox_id: str) -> Allocations:
    """Free the address of ``sandbox_id``; releasing an unknown id is a no-op."""
    if sandbox_id not in state.by_id:
        return state
    by_id = {k: v for k, v in state.by_id.items() if k != sandbox_id}
    return replace(state, by_id=by_id)


class IPAMStore:
    """The allocator persisted at ``path`` (e.g. ``<runtime root>/ipam.json``) for ``cidr``.

    A store created for a different podCIDR than the file holds refuses to start (a node's
    podCIDR does not change under running pods); remove the file only when no pod runs.
    """

    def __init__(self, path: Path, cidr: str) -> None:
        self.path = path
        self.cidr = str(ipaddress.IPv4Network(cidr, strict=True))
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as state:
            if state.cidr != self.cidr:
                raise IPAMError(
                    f"{path} holds allocations for podCIDR {state.cidr}, not {self.cidr}; "
                    "stop every pod and remove the file to change the node's podCIDR")

    @property
    def gateway(self) -> str:
        return Allocations(self.cidr).gateway

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.cidr).prefixlen

    def allocate(self, sandbox_id: str) -> str:
        with self._locked() as state:
            new_state, address = allocate(state, sandbox_id)
            if new_state is not state:
                self._save(new_state)
            return address

    def release(self, sandbox_id: str) -> None:
        with self._locked() as state:
            new_state = release(state, sandbox_id)
            if new_state is not state:
                self._save(new_state)

    def get(self, sandbox_id: str) -> str | None:
        with self._locked() as state:
            return state.by_id.get(sandbox_id)

    def snapshot(self) -> Allocations:
        with self._locked() as state:
            return state

    @contextmanager
    def _locked(self) -> Iterator[Allocations]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock, open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield self._load()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _load(self) -> Allocations:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Allocations(self.cidr)
        except (OSError, ValueError) as exc:
            raise IPAMError(f"cannot read IPAM state {self.path}: {exc}") from exc
        if raw.get("version") != SCHEMA_VERSION:
            raise IPAMError(f"{self.path}: unknown IPAM state version {raw.get('version')!r}")
        return Allocations(raw["cidr"], dict(raw.get("allocations", {})), raw.get("last"))

    def _save(self, state: Allocations) -> None:
        doc = {"version": SCHEMA_VERSION, "cidr": state.cidr, "last": state.last,
               "allocations": state.by_id}
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
