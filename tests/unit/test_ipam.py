"""Pod IP allocation: the pure allocator and its JSON file store (node.network.ipam)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from node.network import ipam
from node.network.ipam import Allocations, IPAMError, IPAMStore


def test_first_pod_gets_the_second_host_address() -> None:
    state = Allocations("10.244.1.0/24")
    assert state.gateway == "10.244.1.1"
    state, a = ipam.allocate(state, "a")
    state, b = ipam.allocate(state, "b")
    assert (a, b) == ("10.244.1.2", "10.244.1.3")


def test_allocating_twice_for_one_sandbox_is_idempotent() -> None:
    state, a = ipam.allocate(Allocations("10.244.1.0/24"), "a")
    again, a2 = ipam.allocate(state, "a")
    assert a2 == a and again is state


def test_released_address_is_not_reused_at_once() -> None:
    state = Allocations("10.244.1.0/24")
    state, a = ipam.allocate(state, "a")
    state = ipam.release(state, "a")
    state, b = ipam.allocate(state, "b")
    assert b != a and b == "10.244.1.3"


@pytest.mark.parametrize("cidr, pods", [("10.0.0.0/29", ["10.0.0.2", "10.0.0.3", "10.0.0.4",
                                                         "10.0.0.5", "10.0.0.6"])])
def test_range_excludes_network_gateway_and_broadcast(cidr: str, pods: list[str]) -> None:
    state = Allocations(cidr)
    got = []
    for i in range(len(pods)):
        state, address = ipam.allocate(state, f"s{i}")
        got.append(address)
    assert got == pods
    with pytest.raises(IPAMError, match="exhausted"):
        ipam.allocate(state, "one-too-many")


def test_allocation_wraps_around_to_freed_addresses() -> None:
    state = Allocations("10.0.0.0/29")
    for i in range(5):
        state, _ = ipam.allocate(state, f"s{i}")
    state = ipam.release(state, "s1")
    state, address = ipam.allocate(state, "new")
    assert address == "10.0.0.3"


def test_too_small_cidr_and_unknown_release() -> None:
    with pytest.raises(IPAMError, match="too small"):
        ipam.allocate(Allocations("10.0.0.0/30"), "a")
    state = Allocations("10.0.0.0/24")
    assert ipam.release(state, "nobody") is state


def test_store_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    first = IPAMStore(path, "10.244.1.0/24")
    a = first.allocate("a")
    b = first.allocate("b")
    second = IPAMStore(path, "10.244.1.0/24")  # a restarted runtime
    assert second.get("a") == a and second.allocate("b") == b
    second.release("a")
    assert IPAMStore(path, "10.244.1.0/24").get("a") is None
    doc = json.loads(path.read_text())
    assert doc["allocations"] == {"b": b} and doc["version"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_store_refuses_a_different_pod_cidr(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    IPAMStore(path, "10.244.1.0/24").allocate("a")
    with pytest.raises(IPAMError, match="10.244.1.0/24"):
        IPAMStore(path, "10.244.2.0/24")


def test_corrupt_state_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_text("{not json")
    with pytest.raises(IPAMError, match="cannot read"):
        IPAMStore(path, "10.244.1.0/24")


def test_concurrent_allocations_are_unique(tmp_path: Path) -> None:
    stores = [IPAMStore(tmp_path / "ipam.json", "10.244.1.0/24") for _ in range(4)]
    results: dict[str, str] = {}
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(20):
            sandbox = f"t{n}-{i}"
            address = stores[n].allocate(sandbox)
            with lock:
                results[sandbox] = address

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 80 and len(set(results.values())) == 80
    assert IPAMStore(tmp_path / "ipam.json", "10.244.1.0/24").snapshot().by_id == results
