"""The lab's state file: everything a lab made, recorded before it is made.

Contract:
- `LabState.save()` writes `<dir>/state.json` atomically (write a temporary file, fsync, rename),
  so a crash leaves either the old or the new state, never half a file.
- Every kernel object (namespace, link) is appended to `resources` and saved *before* it is
  created. `lab down` walks `resources` backwards and deletes each one that still exists, so a
  lab whose `up` crashed half-way is still undone completely.
- `<dir>/lab.prefix` holds the naming prefix as plain text, written first of all. If state.json
  is missing or corrupt, `down` still knows which prefix to sweep for.
- Every process is tagged with the environment variable `SKIFF_LAB=<prefix>/<host>/<role>`, so
  leftovers can be found from /proc even when nothing else is known.

The state is plain JSON (dataclasses <-> dicts) so a person can read it when something is odd.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
PREFIX_FILE = "lab.prefix"
FAULT_LOG = "faults.jsonl"
ENV_TAG = "SKIFF_LAB"
DEFAULT_DIR = Path(os.environ.get("SKIFF_LAB_DIR", "/tmp/skiff-lab"))
DEFAULT_PREFIX = "skiff"
DEFAULT_SUBNET = "10.77.0.0/24"
# Linux interface names are at most 15 bytes; "<prefix>-n12" and "<prefix>-br" must fit.
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")


class LabError(Exception):
    """A lab operation failed in a way a user can act on (one line)."""


@dataclass
class ProcState:
    """One process a host runs. `pid`/`start_time` identify the current incarnation (0 = none);
    start_time is /proc/<pid>/stat field 22, so a recycled pid is never mistaken for ours."""

    role: str
    argv: list[str]
    log: str
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    start_time: int = 0


@dataclass
class HostState:
    """A simulated host: a network namespace with one address on the lab bridge."""

    name: str
    index: int
    ip: str
    netns: str
    veth: str  # the root-namespace end; the namespace end is always called eth0
    dir: str
    roles: list[str] = field(default_factory=list)
    procs: dict[str, ProcState] = field(default_factory=dict)
    slow: str = ""  # tbf rate in force, "" if none


@dataclass
class LabState:
    """The whole lab. `blocked` holds unordered host pairs that cannot talk (both directions)."""

    prefix: str
    dir: str
    subnet: str
    bridge: str
    bridge_ip: str
    store: str  # "skiff" or "etcd"
    replicas: list[str] = field(default_factory=list)
    hosts: list[HostState] = field(default_factory=list)
    resources: list[dict[str, str]] = field(default_factory=list)
    blocked: list[list[str]] = field(default_factory=list)
    network_fault: str = ""  # human description of the partition in force
    secret_file: str = ""

    # --- persistence -------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return Path(self.dir) / STATE_FILE

    def save(self) -> None:
        """Atomic write; called before every kernel object is created (see module doc)."""
        directory = Path(self.dir)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (STATE_FILE + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(self), fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, directory: Path) -> "LabState":
        """Read the state; LabError (one line) when there is no lab or the file is corrupt."""
        path = Path(directory) / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab in {directory} (run `skiff lab up` first)") from None
        except (OSError, ValueError) as err:
            raise LabError(f"lab state {path} is unreadable: {err}") from None
        try:
            hosts = [
                HostState(**{**h, "procs": {k: ProcState(**p) for k, p in h["procs"].items()}})
                for h in raw.pop("hosts")
            ]
            return cls(**raw, hosts=hosts)
        except (KeyError, TypeError) as err:
            raise LabError(f"lab state {path} is corrupt: {err}") from None

    def record(self, kind: str, name: str) -> None:
        """Remember a kernel object before creating it (so `down` can undo a half-made lab)."""
        entry = {"kind": kind, "name": name}
        if entry not in self.resources:
            self.resources.append(entry)
        self.save()

    # --- lookups -----------------------------------------------------------------------

    def host(self, name: str) -> HostState:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"no host {name!r} in the lab (hosts: {', '.join(h.name for h in self.hosts)})")

    def hosts_named(self, names: list[str]) -> list[HostState]:
        return [self.host(n) for n in names]

    def store_endpoints(self) -> dict[str, str]:
        """host name -> client endpoint (host:port) for every store replica."""
        return {h.name: f"{h.ip}:2379" for h in self.hosts if h.name in self.replicas}


def read_prefix(directory: Path) -> str | None:
    """The prefix recorded in `<dir>/lab.prefix`, if readable and well-formed."""
    try:
        text = (Path(directory) / PREFIX_FILE).read_text().strip()
    except OSError:
        return None
    return text if PREFIX_RE.match(text) else None


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}: 1-10 characters, a-z then a-z0-9")
    return prefix


def plan_addresses(subnet: str, count: int) -> tuple[str, list[str], int]:
    """(bridge address, host addresses, prefix length) for `count` hosts in `subnet`.

    The bridge takes the first usable address (the root namespace reaches the hosts through
    it); hosts take the next ones. Only private (RFC 1918) subnets are accepted, because the
    lab must never hijack routes to real networks.
    """
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as err:
        raise LabError(f"bad subnet {subnet!r}: {err}") from None
    if net.version != 4 or not net.is_private or net.is_loopback:
        raise LabError(f"subnet {subnet} must be a private IPv4 range (e.g. {DEFAULT_SUBNET})")
    usable = list(net.hosts())
    if len(usable) < count + 1:
        raise LabError(f"subnet {subnet} has room for {len(usable) - 1} hosts, not {count}")
    return str(usable[0]), [str(a) for a in usable[1:count + 1]], net.prefixlen


def to_jsonable(obj: Any) -> Any:
    """asdict() for the dataclasses here; kept as a function so callers need not import it."""
    return asdict(obj)
