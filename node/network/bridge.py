"""Pod networking on one node: a Linux bridge, a veth pair per pod, egress NAT.

Layout (the "host" is whatever network namespace the runtime runs in — the machine's, or a lab
host's namespace; ``BridgeConfig.host_netns`` names another one by path)::

    host netns:  skiff0 (bridge, gateway = first address of the podCIDR, e.g. 10.244.1.1/24)
                   |-- veth<hash(sandbox id)>  (hairpin on)
    pod netns:   eth0 = <pod IP>/<prefix>, lo up, default route via the gateway

Host-level changes, all made idempotently by ``ensure_host`` and undone by ``teardown_host``:
- the bridge ``skiff0`` with the gateway address;
- ``net.ipv4.ip_forward=1`` in the host namespace (needed to route pod traffic off the node);
  its previous value is saved in ``<state_dir>/host-network.json`` and restored on teardown;
- with ``masquerade`` on, one nftables table of skiff's own (``ip skiff_<bridge>``) holding one
  rule: traffic from the podCIDR to anywhere outside the podCIDR and the cluster CIDR is
  masqueraded. Other tables (a FORWARD drop policy from Docker, say) are not touched.

Per-pod changes are the veth pair only (deleting the host end deletes both) and the IPAM entry.
``setup_pod_network`` is safe to retry (a half-made veth is deleted and made again, the address
is the one IPAM already gave the sandbox); ``teardown_pod_network`` is idempotent.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node.network.ipam import IPAMStore, atomic_write

POD_IFNAME = "eth0"


class NetworkError(Exception):
    """A network command failed; the message holds the command and its error output."""


@dataclass(frozen=True)
class BridgeConfig:
    pod_cidr: str
    state_dir: Path
    bridge: str = "skiff0"
    cluster_cidr: str | None = None  # other nodes' pods: reached without NAT
    masquerade: bool = True
    host_netns: str | None = None  # path of the namespace to build the bridge in; None = ours
    mtu: int | None = None
    extra_nat_exceptions: Sequence[str] = field(default_factory=tuple)

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.pod_cidr).network_address + 1)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.pod_cidr).prefixlen

    @property
    def nft_table(self) -> str:
        return "skiff_" + self.bridge.replace("-", "_")


@dataclass(frozen=True)
class PodNetwork:
    ip: str
    prefixlen: int
    gateway: str
    ifname: str
    host_veth: str


def host_veth_name(sandbox_id: str) -> str:
    """Deterministic (so teardown needs no state) and within IFNAMSIZ (15 characters)."""
    return "veth" + hashlib.sha256(sandbox_id.encode()).hexdigest()[:11]


def _run(argv: Sequence[str], netns: str | None = None, check: bool = True,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = (["nsenter", f"--net={netns}"] if netns else []) + list(argv)
    result = subprocess.run(full, capture_output=True, text=True, input=stdin)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(full)}: {result.stderr.strip() or result.returncode}")
    return result


def _link_exists(name: str, netns: str | None) -> bool:
    return _run(["ip", "link", "show", "dev", name], netns, check=False).returncode == 0


def nat_ruleset(config: BridgeConfig) -> str:
    """The nftables script for skiff's NAT table (pure; replaces the table's contents)."""
    exceptions = [config.pod_cidr] + ([config.cluster_cidr] if config.cluster_cidr else [])
    exceptions += list(config.extra_nat_exceptions)
    excluded = ", ".join(str(ipaddress.IPv4Network(c)) for c in exceptions)
    table = config.nft_table
    return (
        f"table ip {table} {{}}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        f"  chain postrouting {{\n"
        f"    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {config.pod_cidr} ip daddr != {{ {excluded} }} masquerade\n"
        f"  }}\n"
        f"}}\n"
    )


def ensure_host(config: BridgeConfig) -> None:
    """Create the bridge, its address, forwarding and the NAT table (idempotent)."""
    ns = config.host_netns
    if not _link_exists(config.bridge, ns):
        _run(["ip", "link", "add", config.bridge, "type", "bridge"], ns)
    address = f"{config.gateway}/{config.prefixlen}"
    addrs = _run(["ip", "-j", "addr", "show", "dev", config.bridge], ns).stdout
    if address not in {f"{a['local']}/{a['prefixlen']}" for i in json.loads(addrs)
                       for a in i.get("addr_info", [])}:
        _run(["ip", "addr", "add", address, "dev", config.bridge], ns)
    if config.mtu:
        _run(["ip", "link", "set", config.bridge, "mtu", str(config.mtu)], ns)
    _run(["ip", "link", "set", config.bridge, "up"], ns)
    if config.masquerade:
        _enable_forwarding(config)
        _run(["nft", "-f", "-"], ns, stdin=nat_ruleset(config))


def _enable_forwarding(config: BridgeConfig) -> None:
    saved = config.state_dir / "host-network.json"
    current = _run(["sysctl", "-n", "net.ipv4.ip_forward"], config.host_netns).stdout.strip()
    if current == "1":
        return
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        atomic_write(saved, json.dumps({"ip_forward": current}).encode())
    _run(["sysctl", "-w", "net.ipv4.ip_forward=1"], config.host_netns)


def teardown_host(config: BridgeConfig) -> list[str]:
    """Undo ``ensure_host``: the NAT table, the bridge, and ``ip_forward`` if skiff set it.
    Returns what it undid, in words (nothing when there was nothing to undo)."""
    ns = config.host_netns
    undone = []
    if _run(["nft", "delete", "table", "ip", config.nft_table], ns, check=False).returncode == 0:
        undone.append(f"nftables table {config.nft_table}")
    if _link_exists(config.bridge, ns):
        _run(["ip", "link", "del", config.bridge], ns)
        undone.append(f"bridge {config.bridge}")
    saved = config.state_dir / "host-network.json"
    if saved.exists():
        previous = json.loads(saved.read_text()).get("ip_forward", "0")
        _run(["sysctl", "-w", f"net.ipv4.ip_forward={previous}"], ns)
        saved.unlink()
        undone.append(f"net.ipv4.ip_forward={previous}")
    return undone


def setup_pod_network(netns_path: str, sandbox_id: str, ipam: IPAMStore,
                      config: BridgeConfig) -> PodNetwork:
    """Give the pod namespace at ``netns_path`` an ``eth0`` on the bridge with an IPAM address."""
    ensure_host(config)
    ns = config.host_netns
    host_veth = host_veth_name(sandbox_id)
    ip = ipam.allocate(sandbox_id)
    try:
        if _link_exists(host_veth, ns):
            _run(["ip", "link", "del", host_veth], ns)  # a half-made pair from a crashed attempt
        mtu = ["mtu", str(config.mtu)] if config.mtu else []
        _run(["ip", "link", "add", host_veth, *mtu, "type", "veth",
              "peer", "name", POD_IFNAME, *mtu, "netns", netns_path], ns)
        _run(["ip", "link", "set", host_veth, "master", config.bridge], ns)
        # Hairpin: a pod reaching itself through a service IP comes back out of its own port.
        _run(["ip", "link", "set", host_veth, "type", "bridge_slave", "hairpin", "on"], ns)
        _run(["ip", "link", "set", host_veth, "up"], ns)
        _run(["ip", "link", "set", "lo", "up"], netns_path)
        _run(["ip", "addr", "add", f"{ip}/{config.prefixlen}", "dev", POD_IFNAME], netns_path)
        _run(["ip", "link", "set", POD_IFNAME, "up"], netns_path)
        _run(["ip", "route", "replace", "default", "via", config.gateway, "dev", POD_IFNAME],
             netns_path)
    except NetworkError:
        teardown_pod_network(sandbox_id, ipam, config)
        raise
    return PodNetwork(ip, config.prefixlen, config.gateway, POD_IFNAME, host_veth)


def teardown_pod_network(sandbox_id: str, ipam: IPAMStore, config: BridgeConfig) -> None:
    """Delete the pod's veth pair and release its address; safe to call again."""
    host_veth = host_veth_name(sandbox_id)
    if _link_exists(host_veth, config.host_netns):
        _run(["ip", "link", "del", host_veth], config.host_netns)
    ipam.release(sandbox_id)


class BridgeNetwork:
    """The bridge plugin bound to one node's config and IPAM store (what SandboxManager uses)."""

    def __init__(self, config: BridgeConfig, ipam: IPAMStore | None = None) -> None:
        self.config = config
        self.ipam = ipam or IPAMStore(config.state_dir / "ipam.json", config.pod_cidr)

    def setup(self, netns_path: str, sandbox_id: str) -> PodNetwork:
        return setup_pod_network(netns_path, sandbox_id, self.ipam, self.config)

    def teardown(self, sandbox_id: str) -> None:
        teardown_pod_network(sandbox_id, self.ipam, self.config)

    def address_of(self, sandbox_id: str) -> str | None:
        return self.ipam.get(sandbox_id)
