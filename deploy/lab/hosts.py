"""Lab lifecycle: bring simulated hosts up, tear them down, run commands inside them.

Contracts:
- `up()` creates the bridge, one namespace + veth per host, the cluster secret, and starts each
  host's processes (see profiles.py). Each kernel object is recorded in the state file before it
  is made. If anything fails, what was made is torn down again (logs are kept) and LabError is
  raised with one line.
- `down()` removes every process, namespace, link and mount of the lab. It works from the state
  file when there is one and *also* sweeps by naming prefix (`<prefix>-*` namespaces and links,
  processes tagged SKIFF_LAB=<prefix>/...), so it cleans up after a crash and when state.json is
  missing or corrupt. Running it twice is harmless. Files (logs, data, fault log) are kept
  unless purge=True, so a failed run can be examined afterwards.
- `transaction(dir)` serialises every state change across processes with an flock, so a
  `skiff lab kill` typed by hand during a chaos run does not lose the runner's updates.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

from deploy.lab import net, procs, profiles
from deploy.lab.state import (
    DEFAULT_PREFIX, DEFAULT_SUBNET, ENV_TAG, PREFIX_FILE, STATE_FILE, HostState, LabError, LabState,
    check_prefix, plan_addresses, read_prefix,
)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges and firewall rules); run it as root")


@contextlib.contextmanager
def lab_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def transaction(directory: Path) -> Iterator[LabState]:
    """Lock the lab, load its state, yield it, save it (also when the body raised part-way)."""
    with lab_lock(Path(directory)):
        lab = LabState.load(Path(directory))
        try:
            yield lab
        finally:
            lab.save()


def load(directory: Path) -> LabState:
    return LabState.load(Path(directory))


def tag(lab: LabState, host: HostState, role: str) -> str:
    return f"{lab.prefix}/{host.name}/{role}"


# --- up ----------------------------------------------------------------------------------

def up(directory: Path, hosts: int, replicas: int = 3, subnet: str = DEFAULT_SUBNET,
       prefix: str = DEFAULT_PREFIX, store: str = "skiff", wait: float = 30.0) -> LabState:
    """Create a lab of `hosts` hosts with a `replicas`-replica store (see module doc)."""
    require_root()
    net.check_tools()
    check_prefix(prefix)
    if hosts < 1 or hosts > 50:
        raise LabError("--hosts must be between 1 and 50")
    # 0 replicas: a lab with no store at all (network tests, later profiles); 1 is for tinkering.
    if replicas not in (0, 1, 3, 5) or replicas > hosts:
        raise LabError(f"--store-replicas must be 1, 3 or 5 and at most --hosts ({hosts})")
    if store not in profiles.STORES:
        raise LabError(f"unknown --store {store!r} (choose from {', '.join(profiles.STORES)})")
    directory = Path(directory).resolve()
    if (directory / STATE_FILE).exists():
        raise LabError(f"a lab is already recorded in {directory}; run `skiff lab down --dir {directory}` first")
    bridge_ip, host_ips, plen = plan_addresses(subnet, hosts)
    leftovers = [n for n in net.list_netns() if n.startswith(prefix + "-")]
    if leftovers or net.link_exists(f"{prefix}-br"):
        raise LabError(f"leftovers of a lab with prefix {prefix!r} exist ({', '.join(leftovers) or prefix + '-br'}); run `skiff lab down --prefix {prefix}`")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PREFIX_FILE).write_text(prefix + "\n")
    lab = LabState(prefix=prefix, dir=str(directory), subnet=subnet, bridge=f"{prefix}-br",
                   bridge_ip=bridge_ip, store=store)
    lab.save()
    try:
        _make(lab, host_ips, plen, replicas)
        if wait > 0 and lab.replicas:
            wait_store_ready(lab, wait)
    except BaseException as err:
        # Undo the half-made lab; keep the files so the logs can tell what went wrong.
        try:
            down(directory, prefix=prefix)
        except LabError:
            pass
        if isinstance(err, LabError):
            raise
        raise LabError(f"lab up failed: {type(err).__name__}: {err}") from err
    return lab


def _make(lab: LabState, host_ips: list[str], plen: int, replicas: int) -> None:
    net.check_subnet_free(lab.subnet, lab.bridge)
    lab.record("link", lab.bridge)
    net.create_bridge(lab.bridge, lab.bridge_ip, plen)
    roles = profiles.assign_roles(len(host_ips), replicas)
    for i, ip in enumerate(host_ips):
        name = f"n{i + 1}"
        hdir = Path(lab.dir) / "hosts" / name
        if hdir.exists():
            shutil.rmtree(hdir)  # a new lab starts from empty data directories
        hdir.mkdir(parents=True)
        host = HostState(name=name, index=i, ip=ip, netns=f"{lab.prefix}-{name}",
                         veth=f"{lab.prefix}-{name}", dir=str(hdir), roles=roles[i])
        lab.hosts.append(host)
        if "store" in host.roles:
            lab.replicas.append(name)
        lab.record("netns", host.netns)
        net.create_netns(host.netns)
        lab.record("link", host.veth)
        net.create_veth(host.veth, host.netns, lab.bridge, ip, plen)
    secret = Path(lab.dir) / "secret"
    secret.write_text(secrets.token_hex(16) + "\n")
    secret.chmod(0o600)
    lab.secret_file = str(secret)
    for host in lab.hosts:
        for role in host.roles:
            host.procs[role] = profiles.build(lab, host, role)
    lab.save()
    for host in lab.hosts:
        for role, proc in host.procs.items():
            procs.start(host.netns, proc, tag(lab, host, role))
            lab.save()


def wait_store_ready(lab: LabState, timeout: float) -> None:
    """Wait until every replica's process is alive and some replica reports a leader."""
    from deploy.lab.status import replica_status  # late: pulls in grpc

    deadline = time.monotonic() + timeout
    last = "no replica answered"
    while time.monotonic() < deadline:
        for host in lab.hosts:
            for role, proc in host.procs.items():
                if procs.state_of(proc) == "stopped":
                    raise LabError(f"{role} on {host.name} exited at start; see {proc.log}")
        infos = replica_status(lab, timeout=0.5)
        leaders = {i.leader for i in infos.values() if i.leader}
        if len(infos) == len(lab.replicas) and all(i.error == "" for i in infos.values()) and len(leaders) == 1:
            return
        last = "; ".join(f"{n}: {i.error or ('leader ' + hex(i.leader) if i.leader else 'no leader')}" for n, i in infos.items())
        time.sleep(0.2)
    raise LabError(f"the store did not elect a leader within {timeout:.0f}s ({last}); logs in {lab.dir}/hosts/*/store.log")


# --- down --------------------------------------------------------------------------------

def down(directory: Path, prefix: str | None = None, purge: bool = False) -> list[str]:
    """Remove everything of the lab in `directory` (see module doc). Returns what was removed."""
    require_root()
    directory = Path(directory).resolve()
    removed: list[str] = []
    lab: LabState | None
    try:
        lab = LabState.load(directory)
    except LabError:
        lab = None
    prefix = (lab.prefix if lab else None) or read_prefix(directory) or prefix or DEFAULT_PREFIX
    check_prefix(prefix)
    namespaces = [n for n in net.list_netns() if n.startswith(prefix + "-")]
    # Processes first: a namespace whose last mount is gone lives on while a process is in it.
    pids = set(procs.tagged_pids(prefix))
    for ns in namespaces:
        pids.update(net.netns_pids(ns))
    if lab:
        for host in lab.hosts:
            for proc in host.procs.values():
                if procs.state_of(proc) != "stopped":
                    pids.add(proc.pid)
    pids.discard(os.getpid())
    problems: list[str] = []
    if pids:
        try:
            procs.kill_all(sorted(pids))
        except LabError as err:  # go on removing the rest; report at the end
            problems.append(str(err))
        removed.append(f"{len(pids)} processes")
    recorded = list(reversed(lab.resources)) if lab else []
    for ns in [r["name"] for r in recorded if r["kind"] == "netns"] + namespaces:
        if ns in net.list_netns():
            net.delete_netns_if_exists(ns)
            removed.append(f"netns {ns}")
    for link in [r["name"] for r in recorded if r["kind"] == "link"] + _prefixed_links(prefix):
        if net.link_exists(link):
            net.delete_link_if_exists(link)
            removed.append(f"link {link}")
    # A veth goes away with its namespace, but the kernel does that asynchronously: wait for it,
    # so "down returned" means "nothing is left".
    deadline = time.monotonic() + 5
    while (left := _prefixed_links(prefix)) and time.monotonic() < deadline:
        for link in left:
            net.delete_link_if_exists(link)
        time.sleep(0.05)
    if left:
        problems.append(f"links {', '.join(left)} would not go away")
    removed += _unmount_leftovers(prefix, directory)
    for name in (STATE_FILE, PREFIX_FILE, "secret"):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    if purge and directory.exists():
        shutil.rmtree(directory)
    if problems:
        raise LabError("; ".join(problems) + f" (removed: {', '.join(removed)})")
    return removed


def _prefixed_links(prefix: str) -> list[str]:
    # Bridge and root-side veth ends are all "<prefix>-..."; a veth "name@peer" shows as name.
    return [name for name in net.list_links() if name.startswith(prefix + "-")]


def _unmount_leftovers(prefix: str, directory: Path) -> list[str]:
    """Unmount anything still mounted for this lab: netns bind mounts, mounts under its dir."""
    removed: list[str] = []
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return removed
    for point in reversed(mounts):
        point = point.replace("\\040", " ")
        if point.startswith(f"/run/netns/{prefix}-") or point.startswith(str(directory) + "/"):
            subprocess.run(["umount", "-l", point], capture_output=True)
            removed.append(f"mount {point}")
    for entry in Path("/run/netns").glob(f"{prefix}-*") if Path("/run/netns").exists() else []:
        with contextlib.suppress(OSError):
            entry.unlink()
    return removed


# --- exec --------------------------------------------------------------------------------

def exec_in(lab: LabState, host_name: str, argv: list[str]) -> int:
    """Run `argv` inside a host with the terminal attached; returns its exit status.

    ETCDCTL_API=3 and ETCDCTL_ENDPOINTS point at the host's own replica (or the first replica),
    so `skiff lab exec n1 -- etcdctl get foo` just works.
    """
    if not argv:
        raise LabError("nothing to run: skiff lab exec HOST -- COMMAND [ARGS...]")
    host = lab.host(host_name)
    env = dict(os.environ)
    endpoints = lab.store_endpoints()
    if endpoints:
        env.setdefault("ETCDCTL_API", "3")
        env.setdefault("ETCDCTL_ENDPOINTS", endpoints.get(host.name) or next(iter(endpoints.values())))
    env[ENV_TAG] = tag(lab, host, "exec")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(procs.REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.run(net.in_netns(host.netns, argv), env=env).returncode
    except FileNotFoundError:
        raise LabError("ip not found (install iproute2)") from None
