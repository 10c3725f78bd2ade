"""Pure parts of the lab: which host pairs a fault cuts, address planning, the root check."""
from __future__ import annotations

import pytest

from deploy.lab import faults
from deploy.lab.net import nft_ruleset
from deploy.lab.state import LabError, plan_addresses


def test_partition_cuts_every_pair_across_groups() -> None:
    groups = faults.parse_groups("n1,n2/n3,n4,n5")
    assert groups == [["n1", "n2"], ["n3", "n4", "n5"]]
    pairs = faults.pairs_between_groups(groups)
    assert len(pairs) == 6 and ("n1", "n3") in pairs and ("n1", "n2") not in pairs


@pytest.mark.parametrize("spec", ["n1", "n1/n1,n2", "n1//n2"])
def test_bad_partitions_are_refused(spec: str) -> None:
    with pytest.raises(LabError):
        faults.pairs_between_groups(faults.parse_groups(spec))


def test_bridge_shares_the_middle_host() -> None:
    hosts = ["n1", "n2", "n3", "n4", "n5"]
    assert faults.bridge_groups(hosts) == [["n1", "n2", "n3"], ["n3", "n4", "n5"]]
    pairs = faults.pairs_bridge(hosts)
    assert ("n1", "n4") in pairs and not any("n3" in p for p in pairs)


def test_ring_leaves_each_host_its_two_neighbours() -> None:
    hosts = ["n1", "n2", "n3", "n4", "n5"]
    cut = faults.pairs_ring(hosts)
    for i, h in enumerate(hosts):
        reachable = {x for x in hosts if x != h and tuple(sorted((h, x))) not in cut}
        assert reachable == {hosts[i - 1], hosts[(i + 1) % 5]}
    assert faults.pairs_ring(["n1", "n2", "n3"]) == set()


def test_address_plan_uses_private_subnets_only() -> None:
    bridge, addrs, plen = plan_addresses("10.77.0.0/24", 3)
    assert (bridge, addrs, plen) == ("10.77.0.1", ["10.77.0.2", "10.77.0.3", "10.77.0.4"], 24)
    with pytest.raises(LabError):
        plan_addresses("8.8.8.0/24", 3)
    with pytest.raises(LabError):
        plan_addresses("10.77.0.0/30", 3)


def test_nft_ruleset_drops_both_directions() -> None:
    text = nft_ruleset(["10.77.0.3", "10.77.0.2"])
    assert "ip saddr { 10.77.0.2, 10.77.0.3 } drop" in text
    assert "ip daddr { 10.77.0.2, 10.77.0.3 } drop" in text
    assert "chain" not in nft_ruleset([])


def test_without_root_the_lab_says_so_in_one_line(monkeypatch, capsys) -> None:
    from deploy.cli.main import main

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for argv in (["lab", "status"], ["lab"], ["lab", "partition", "n1/n2,n3"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert "needs root" in err and "\n" not in err
