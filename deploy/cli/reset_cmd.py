"""`skiff reset`: undo on this host what `skiff up` left behind, as `kubeadm reset` does.

`skiff up` stops its processes on Ctrl-C but, like a kubelet's, its pods keep running (the next
`skiff up` adopts them), and the cluster keeps its data. `skiff reset` removes all of it:

1. every pod of the local runtime, read from the runtime's root on disk (runc and process
   handlers; the fake handler's pods are only records): containers stopped (SIGTERM, then
   SIGKILL after the handler's grace), pause processes stopped, pod network namespaces, veths and
   IP leases released;
2. as root, the pods' bridge (`skiff0`), skiff's nftables table for it, and
   `net.ipv4.ip_forward` as it was before skiff set it;
3. the pods' parent cgroup (`/skiff`) when nothing else is in it;
4. the state directory (store data, PKI, logs; kept if a pod could not be removed or anything
   is still mounted under it) and the admin client config `skiff up` wrote (only when it points
   at this state directory's CA: a config for another cluster is kept).

It refuses while `skiff up` is running on that state directory (its runtime socket answers).
Each step reports what it removed; a pod that cannot be removed is reported and the rest go on.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.cli.main import CommandError
from deploy.cli.up_cmd import POD_CIDR, default_config_path, default_state_dir

if TYPE_CHECKING:
    from node.network.bridge import BridgeConfig

BRIDGE = "skiff0"
CGROUP_ROOT = "/skiff"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                   help="the state directory of `skiff up` (default ~/.skiff/state, or $SKIFF_STATE_DIR)")
    p.add_argument("--config", type=Path, default=default_config_path(),
                   help="the client config `skiff up` wrote (default ~/.skiff/config, or $SKIFF_CONFIG)")


def run(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    if _answers(state / "runtime.sock"):
        raise CommandError(f"skiff up is running on {state} (its runtime answers on {state / 'runtime.sock'}): "
                           "stop it first")
    had_any = state.exists()
    failures = _remove_pods(state / "runtime")
    if os.geteuid() == 0:
        _remove_host_network(state / "runtime")
        _remove_cgroup_root()
    _remove_config(args.config, state)
    if failures:  # their files (and maybe mounts) are still needed to remove them
        raise CommandError(f"{failures} pod(s) could not be removed (see above); the state directory is kept: "
                           "run skiff reset again")
    mounted = _mounts_under(state)
    if mounted:
        raise CommandError(f"kept the state directory {state}: {mounted[0]} is still mounted "
                           f"({len(mounted)} mount(s) under it)")
    if state.exists():
        shutil.rmtree(state)
        print(f"removed the state directory {state}")
    elif not had_any:
        print(f"nothing to reset: no state directory {state}")
    return 0


def _mounts_under(directory: Path) -> list[str]:
    """Mount points at or below directory (rmtree must never walk into one)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    top = str(directory.resolve())
    points = [line.split()[4].replace("\\040", " ") for line in lines if len(line.split()) > 4]
    return [p for p in points if p == top or p.startswith(top + "/")]


def _answers(socket_path: Path) -> bool:
    """Whether something accepts connections on the unix socket."""
    if not socket_path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(socket_path))
        except OSError:
            return False
    return True


def _bridge_config(runtime_root: Path) -> BridgeConfig:
    """The pods' network as `skiff up`'s runtime made it."""
    from node.network.bridge import BridgeConfig
    return BridgeConfig(pod_cidr=POD_CIDR, state_dir=runtime_root / "network", bridge=BRIDGE)


def _remove_pods(runtime_root: Path) -> int:
    """Remove every sandbox (and its containers) the runtime's handlers have on disk; the
    number that failed."""
    if not runtime_root.is_dir():
        return 0
    from node.runtime.server import make_handlers
    names = ["runc", "process"] if os.geteuid() == 0 and shutil.which("runc") else ["process"]
    failures = 0
    from node.network.bridge import BridgeNetwork
    network = BridgeNetwork(_bridge_config(runtime_root)) if os.geteuid() == 0 else None
    for handler in make_handlers(runtime_root, names, network, cgroup_root=CGROUP_ROOT):
        handler.recover()  # half-made sandboxes first
        for sandbox in handler.list_sandboxes():
            what = f"pod {sandbox.namespace}/{sandbox.name} ({handler.name} sandbox {sandbox.id[:12]})"
            try:
                handler.remove_sandbox(sandbox.id)
            except Exception as err:  # report and go on with the others
                failures += 1
                print(f"could not remove {what}: {err}")
            else:
                print(f"removed {what}")
    return failures


def _remove_host_network(runtime_root: Path) -> None:
    from node.network.bridge import teardown_host
    for what in teardown_host(_bridge_config(runtime_root)):
        print(f"removed {what}" if not what.startswith("net.") else f"restored {what}")


def _remove_cgroup_root() -> None:
    from node.runtime.cgroups import Cgroups
    Cgroups().remove_if_empty(CGROUP_ROOT)


def _remove_config(config: Path, state: Path) -> None:
    from controlplane.client.config import ConfigError, parse_config
    if not config.exists():
        return
    try:
        ca = parse_config(config).certificate_authority
    except ConfigError:
        return
    if ca is not None and ca.resolve().is_relative_to(state.resolve()):
        config.unlink()
        print(f"removed the client config {config}")
    else:
        print(f"kept the client config {config}: it is not this state directory's")
