"""Kernel plumbing for the lab: namespaces, the bridge, veth pairs, firewall rules, tbf.

Everything here is a thin wrapper over `ip`, `nft` and `tc` (iproute2 and nftables), so what
the lab does can be replayed by hand. Design:

- Each host is a network namespace `<prefix>-<host>` with one veth end renamed `eth0` and an
  address on the lab subnet; the other end `<prefix>-<host>` is a port of the bridge
  `<prefix>-br` in the root namespace. The bridge has the subnet's first address so tools in the
  root namespace (clients, status) reach every host directly. Hosts get no default route and the
  root namespace's forwarding setting is never touched, so nothing of the subnet leaves the box.
- Network faults are nftables rules *inside the host namespaces* (table `inet skifflab`): each
  host drops packets from and to the hosts it is cut from, in both its input and output hooks,
  so a cut holds both ways even if one side's rules were missed. Deleting a namespace deletes its
  rules, so `down` cannot leave a rule behind. Clients in the root namespace are never cut:
  they observe how each side of a partition behaves (Jepsen's clients do the same).
- Slowness is `tbf` on both ends of a host's veth. `netem` does not exist on this kernel, so
  there is no delay or loss emulation.

All functions raise LabError with one line on failure; `*_if_exists` variants are idempotent.
"""
from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from typing import Iterable, Sequence

from deploy.lab.state import LabError

NFT_TABLE = "skifflab"


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise LabError naming the command and its first error line."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} not found (install iproute2 and nftables)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LabError(f"{' '.join(argv)}: {detail[0] if detail else f'exit {proc.returncode}'}")
    return proc


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def check_tools() -> None:
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found (install iproute2 and nftables)")


# --- discovery ---------------------------------------------------------------------------

def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links() -> list[str]:
    out = run(["ip", "-j", "link", "show"], check=False).stdout or "[]"
    return [link["ifname"] for link in json.loads(out)]


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def check_subnet_free(subnet: str, bridge: str) -> None:
    """Refuse a subnet that overlaps a route the root namespace already has (except ours)."""
    wanted = ipaddress.ip_network(subnet)
    out = run(["ip", "-j", "-4", "route", "show"], check=False).stdout or "[]"
    for route in json.loads(out):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == bridge:
            continue
        try:
            if ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False).overlaps(wanted):
                raise LabError(f"subnet {subnet} overlaps the existing route {dst} dev {route.get('dev')}; pick another --subnet")
        except ValueError:
            continue


# --- creation ----------------------------------------------------------------------------

def create_bridge(name: str, address: str, prefixlen: int) -> None:
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "addr", "replace", f"{address}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def create_netns(name: str) -> None:
    if name not in list_netns():
        run(["ip", "netns", "add", name])
    run(in_netns(name, ["ip", "link", "set", "lo", "up"]))


def create_veth(root_end: str, netns: str, bridge: str, address: str, prefixlen: int) -> None:
    """A veth pair: `root_end` on the bridge, the peer moved into `netns` as eth0 with `address`."""
    if not link_exists(root_end):
        # Create the peer directly inside the namespace: no moment where a stray name exists
        # in the root namespace that `down` would have to guess about.
        run(["ip", "link", "add", root_end, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", root_end, "master", bridge])
    run(["ip", "link", "set", root_end, "up"])
    run(in_netns(netns, ["ip", "addr", "replace", f"{address}/{prefixlen}", "dev", "eth0"]))
    run(in_netns(netns, ["ip", "link", "set", "eth0", "up"]))


# --- removal -----------------------------------------------------------------------------

def delete_netns_if_exists(name: str) -> None:
    if name in list_netns():
        run(["ip", "netns", "delete", name], check=False)


def delete_link_if_exists(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "delete", name], check=False)


def netns_pids(netns: str) -> list[int]:
    """Pids of every process whose network namespace is `netns` (empty if it is gone)."""
    if netns not in list_netns():
        return []
    out = run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


# --- firewall faults ---------------------------------------------------------------------

def nft_ruleset(blocked_ips: Iterable[str]) -> str:
    """The nft script that replaces table inet skifflab with drops to/from `blocked_ips`."""
    ips = sorted(set(blocked_ips), key=ipaddress.ip_address)
    # "add table" then "delete table" makes the replacement work whether or not it existed;
    # nft applies a script as one transaction, so the host is never briefly unprotected.
    lines = [f"add table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}"]
    if ips:
        elements = ", ".join(ips)
        lines += [
            f"table inet {NFT_TABLE} {{",
            "  chain input { type filter hook input priority -10; policy accept;",
            f"    ip saddr {{ {elements} }} drop",
            "  }",
            "  chain output { type filter hook output priority -10; policy accept;",
            f"    ip daddr {{ {elements} }} drop",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def apply_blocks(netns: str, blocked_ips: Iterable[str]) -> None:
    run(in_netns(netns, ["nft", "-f", "-"]), input=nft_ruleset(blocked_ips))


def clear_blocks(netns: str) -> None:
    if netns in list_netns():
        run(in_netns(netns, ["nft", "-f", "-"]), input=nft_ruleset([]))


def list_blocks(netns: str) -> str:
    """The lab table as nft prints it ('' when there is none)."""
    proc = run(in_netns(netns, ["nft", "list", "table", "inet", NFT_TABLE]), check=False)
    return proc.stdout if proc.returncode == 0 else ""


# --- bandwidth ---------------------------------------------------------------------------

def tbf_args(rate: str) -> list[str]:
    # burst must hold at least one MTU-sized packet per timer tick; 32 kbit is ample for
    # rates from 100kbit up. latency bounds the queue, so excess traffic is dropped, not held.
    return ["tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"]


def set_slow(netns: str, root_end: str, rate: str) -> None:
    """Limit a host's traffic to `rate` (tc syntax, e.g. 1mbit) in both directions."""
    run(in_netns(netns, ["tc", "qdisc", "replace", "dev", "eth0", "root", *tbf_args(rate)]))
    run(["tc", "qdisc", "replace", "dev", root_end, "root", *tbf_args(rate)])


def clear_slow(netns: str, root_end: str) -> None:
    if netns in list_netns():
        run(in_netns(netns, ["tc", "qdisc", "del", "dev", "eth0", "root"]), check=False)
    if link_exists(root_end):
        run(["tc", "qdisc", "del", "dev", root_end, "root"], check=False)
