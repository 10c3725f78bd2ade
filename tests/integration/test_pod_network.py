"""Pod networking for real: bridge, veth, IPAM, NAT, hostname, in a host namespace of the test's own.

Needs root and runc (the pause process runs through runc); the pure parts run everywhere.
Each test builds a fresh "host" network namespace and removes it; the machine's network is not
touched.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from node.network import bridge
from node.network.bridge import BridgeConfig, BridgeNetwork
from node.runtime import rootfs
from node.runtime.cgroups import Cgroups
from node.runtime.runc import reap_shims
from node.runtime.sandbox import NOTREADY, READY, SandboxConfig, SandboxManager

ROOT_MARKS = (
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, veth, nftables"),
    pytest.mark.skipif(shutil.which("runc") is None, reason="needs runc (Debian package runc)"),
    pytest.mark.skipif(not rootfs.HOST_BUSYBOX.exists(), reason="needs /bin/busybox (busybox-static)"),
)
F = TypeVar("F", bound=Callable[..., None])


def needs_root(test: F) -> F:
    for mark in ROOT_MARKS:
        test = mark(test)
    return test


CIDR = "10.244.9.0/24"


def test_host_veth_names_fit_ifnamsiz_and_are_stable() -> None:
    name = bridge.host_veth_name("a" * 64)
    assert len(name) <= 15 and name == bridge.host_veth_name("a" * 64)
    assert name != bridge.host_veth_name("b" * 64)


def test_nat_ruleset_exempts_pod_and_cluster_cidrs(tmp_path: Path) -> None:
    config = BridgeConfig(pod_cidr=CIDR, state_dir=tmp_path, cluster_cidr="10.244.0.0/16")
    script = bridge.nat_ruleset(config)
    assert "table ip skiff_skiff0" in script and "delete table ip skiff_skiff0" in script
    assert f"ip saddr {CIDR} ip daddr != {{ {CIDR}, 10.244.0.0/16 }} masquerade" in script
    assert config.gateway == "10.244.9.1" and config.prefixlen == 24


def run(argv: list[str], netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = (["nsenter", f"--net={netns}"] if netns else []) + argv
    return subprocess.run(full, capture_output=True, text=True, check=check, timeout=30)


def make_netns(path: Path) -> str:
    path.touch()
    run(["unshare", f"--net={path}", "true"])
    return str(path)


def drop_netns(path: str) -> None:
    subprocess.run(["umount", path], capture_output=True)
    Path(path).unlink(missing_ok=True)


@dataclass
class Host:
    netns: str
    config: BridgeConfig
    sandboxes: SandboxManager
    cgroup_root: str


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    netns = make_netns(tmp_path / "hostns")
    root = tmp_path / "runtime"
    config = BridgeConfig(pod_cidr=CIDR, state_dir=root / "network", host_netns=netns)
    cgroup_root = f"/skiff-test-{secrets.token_hex(4)}"
    sandboxes = SandboxManager(root, BridgeNetwork(config), cgroup_root=cgroup_root, stop_timeout=5)
    try:
        yield Host(netns, config, sandboxes, cgroup_root)
    finally:
        for sandbox in sandboxes.list():
            sandboxes.remove(sandbox.id)
        bridge.teardown_host(config)
        drop_netns(netns)
        assert not Cgroups().remove(cgroup_root)
        assert not [p for p in rootfs.mounted_paths() if str(root) in str(p)]
        reap_shims()


def link_exists(name: str, netns: str) -> bool:
    return run(["ip", "link", "show", "dev", name], netns, check=False).returncode == 0


@needs_root
def test_pod_gets_eth0_an_address_and_reaches_the_gateway(host: Host, tmp_path: Path) -> None:
    sandbox = host.sandboxes.run(SandboxConfig(name="p1", hostname="pod-one"))
    assert sandbox.state == READY
    assert ipaddress.IPv4Address(sandbox.ip) in ipaddress.IPv4Network(CIDR)
    assert sandbox.ip != "10.244.9.1" and sandbox.gateway == "10.244.9.1"
    addr = run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"], sandbox.netns_path).stdout
    assert f"{sandbox.ip}/24" in addr
    assert "default via 10.244.9.1" in run(["ip", "route"], sandbox.netns_path).stdout
    assert "UP" in run(["ip", "link", "show", "lo"], sandbox.netns_path).stdout
    ping = run(["busybox", "ping", "-c", "1", "-W", "5", sandbox.gateway], sandbox.netns_path, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # TCP to the gateway: an HTTP server on the "host" side of the bridge.
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("from-host\n")
    server = subprocess.Popen(["nsenter", f"--net={host.netns}", "busybox", "httpd", "-f", "-p",
                               "10.244.9.1:18080", "-h", str(www)])
    try:
        deadline = time.monotonic() + 20
        while True:
            got = run(["busybox", "wget", "-q", "-O", "-", "http://10.244.9.1:18080/"],
                      sandbox.netns_path, check=False)
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got.stdout == "from-host\n", got.stderr
    finally:
        server.terminate()
        server.wait(10)
    uts = f"/proc/{sandbox.pid}/ns/uts"
    assert subprocess.run(["nsenter", f"--uts={uts}", "hostname"], capture_output=True,
                          text=True).stdout == "pod-one\n"
    veth = bridge.host_veth_name(sandbox.id)
    details = run(["ip", "-d", "link", "show", veth], host.netns).stdout
    assert "master skiff0" in details and "hairpin on" in details

    host.sandboxes.stop(sandbox.id)
    assert host.sandboxes.status(sandbox.id).state == NOTREADY
    assert not link_exists(veth, host.netns)
    assert BridgeNetwork(host.config).address_of(sandbox.id) is None
    assert not Path(sandbox.netns_path).exists()
    host.sandboxes.remove(sandbox.id)
    assert host.sandboxes.list() == []


@needs_root
def test_two_pods_reach_each_other_and_the_outside_through_nat(host: Host, tmp_path: Path) -> None:
    a = host.sandboxes.run(SandboxConfig(name="a"))
    b = host.sandboxes.run(SandboxConfig(name="b"))
    assert a.ip != b.ip
    assert run(["busybox", "ping", "-c", "1", "-W", "5", b.ip], a.netns_path, check=False).returncode == 0

    # "Outside": a namespace linked to the host by a veth, with no route to the pods. A reply
    # can only come back if the pod's address was masqueraded to the host's 10.99.0.1.
    outside = make_netns(tmp_path / "outside")
    try:
        run(["ip", "link", "add", "skt-out", "type", "veth", "peer", "name", "eth0", "netns", outside],
            host.netns)
        run(["ip", "addr", "add", "10.99.0.1/24", "dev", "skt-out"], host.netns)
        run(["ip", "link", "set", "skt-out", "up"], host.netns)
        run(["ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"], outside)
        run(["ip", "link", "set", "eth0", "up"], outside)
        assert "masquerade" in run(["nft", "list", "table", "ip", "skiff_skiff0"], host.netns).stdout
        assert run(["sysctl", "-n", "net.ipv4.ip_forward"], host.netns).stdout.strip() == "1"
        ping = run(["busybox", "ping", "-c", "1", "-W", "5", "10.99.0.2"], a.netns_path, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    finally:
        drop_netns(outside)

    bridge.teardown_host(host.config)
    assert not link_exists("skiff0", host.netns)
    assert run(["nft", "list", "table", "ip", "skiff_skiff0"], host.netns, check=False).returncode != 0
    assert run(["sysctl", "-n", "net.ipv4.ip_forward"], host.netns).stdout.strip() == "0"
