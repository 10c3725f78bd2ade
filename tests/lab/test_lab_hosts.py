"""The lab on a real kernel: up/down leaves nothing, partitions cut both ways, process faults.

Needs root (skips otherwise). Each test has its own lab directory, prefix and subnet.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.lab import faults, hosts, net, procs, testing
from deploy.lab.faultlog import read_faults
from deploy.lab.state import LabState

pytestmark = pytest.mark.root

LISTEN = "import socket,time; s=socket.socket(); s.bind(('{ip}', 7000)); s.listen(64); time.sleep(600)"
CONNECT = ("import socket,sys\ntry:\n socket.create_connection(('{ip}', 7000), timeout={t}).close()\n"
           "except OSError:\n sys.exit(1)")


def can_connect(lab: LabState, src: str, dst: str, timeout: float = 0.7) -> bool:
    cmd = net.in_netns(lab.host(src).netns, [sys.executable, "-c", CONNECT.format(ip=lab.host(dst).ip, t=timeout)])
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


def start_listeners(lab: LabState) -> None:
    """A TCP listener on port 7000 in every host; the kernel completes handshakes from the backlog.
    Tagged like lab processes, so `down` removes them with the rest."""
    env = dict(os.environ)
    for host in lab.hosts:
        env["SKIFF_LAB"] = f"{lab.prefix}/{host.name}/test-listener"
        subprocess.Popen(net.in_netns(host.netns, [sys.executable, "-c", LISTEN.format(ip=host.ip)]), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Wait until every listener answers from the root namespace (a host's python may start slowly).
    deadline = time.monotonic() + 15
    for host in lab.hosts:
        probe = [sys.executable, "-c", CONNECT.format(ip=host.ip, t=0.5)]
        while subprocess.run(probe).returncode != 0:
            assert time.monotonic() < deadline, f"listener on {host.name} never came up"
            time.sleep(0.1)


def test_up_down_leaves_nothing(tmp_path: Path, lab_store: str) -> None:
    store = lab_store
    lab_dir = tmp_path / "lab"
    prefix = testing.unique_prefix()
    try:
        lab = hosts.up(lab_dir, 3, 3, testing.free_subnet(), prefix, store, wait=40)
        start_listeners(lab)
        faults.partition(lab_dir, [["n1"], ["n2", "n3"]])
        faults.slow(lab_dir, "n2", "1mbit")
        faults.pause(lab_dir, ["n3"])
        assert testing.leftovers(prefix), "the lab should exist while up"
    finally:
        hosts.down(lab_dir, prefix=prefix)
    assert testing.leftovers(prefix) == []
    assert not (lab_dir / "state.json").exists()
    # Safe twice.
    hosts.down(lab_dir, prefix=prefix)
    assert testing.leftovers(prefix) == []


CRASHING_UP = """
import os, signal, sys
from pathlib import Path
from deploy.lab import hosts, procs
real_start = procs.start
def start_then_die(*args, **kwargs):
    real_start(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the lab CLI dies half-way: no rollback runs
procs.start = start_then_die
hosts.up(Path(sys.argv[1]), 3, 3, sys.argv[2], sys.argv[3], sys.argv[4], wait=0)
"""


def test_down_after_up_crashed_half_way(tmp_path: Path, lab_store: str) -> None:
    store = lab_store
    lab_dir = tmp_path / "lab"
    prefix = testing.unique_prefix()
    try:
        proc = subprocess.run([sys.executable, "-c", CRASHING_UP, str(lab_dir), testing.free_subnet(), prefix, store],
                              cwd=procs.REPO_ROOT, env={**os.environ, "PYTHONPATH": str(procs.REPO_ROOT)}, timeout=60)
        assert proc.returncode == -9
        left = testing.leftovers(prefix)
        assert any(x.startswith("netns") for x in left) and any(x.startswith("pid") for x in left)
        hosts.down(lab_dir)  # the prefix comes from <dir>/lab.prefix
        assert testing.leftovers(prefix) == []
    finally:
        hosts.down(lab_dir, prefix=prefix)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_down_without_a_usable_state_file(tmp_path: Path, damage: str, lab_store: str) -> None:
    store = lab_store
    lab_dir = tmp_path / "lab"
    prefix = testing.unique_prefix()
    try:
        hosts.up(lab_dir, 3, 3, testing.free_subnet(), prefix, store, wait=0)
        if damage == "corrupt":
            (lab_dir / "state.json").write_text("{ not json")
        else:
            (lab_dir / "state.json").unlink()
            (lab_dir / "lab.prefix").unlink()
        # The state is unusable; only the prefix (recorded, or given) leads down to the leftovers.
        hosts.down(lab_dir, prefix=prefix)
        assert testing.leftovers(prefix) == []
    finally:
        hosts.down(lab_dir, prefix=prefix)


def test_partition_cuts_both_ways_and_heal_restores(lab_factory) -> None:
    lab = lab_factory(hosts=3, replicas=0)
    start_listeners(lab)
    assert can_connect(lab, "n1", "n2") and can_connect(lab, "n2", "n1")
    faults.partition(Path(lab.dir), [["n1"], ["n2", "n3"]])
    assert not can_connect(lab, "n1", "n2")
    assert not can_connect(lab, "n2", "n1")
    assert not can_connect(lab, "n3", "n1")
    assert can_connect(lab, "n2", "n3") and can_connect(lab, "n3", "n2")
    # The root namespace (where chaos clients run) still reaches every host.
    assert subprocess.run([sys.executable, "-c", CONNECT.format(ip=lab.host("n1").ip, t=0.7)]).returncode == 0
    state = LabState.load(Path(lab.dir))
    assert state.blocked == [["n1", "n2"], ["n1", "n3"]]
    faults.heal(Path(lab.dir))
    assert can_connect(lab, "n1", "n2") and can_connect(lab, "n2", "n1") and can_connect(lab, "n3", "n1")
    assert LabState.load(Path(lab.dir)).blocked == []
    kinds = [f["fault"] for f in read_faults(lab.dir)]
    assert kinds == ["partition", "heal"]


def test_bridge_and_isolate(lab_factory) -> None:
    lab = lab_factory(hosts=5, replicas=0)
    start_listeners(lab)
    faults.bridge(Path(lab.dir))  # n1,n2,n3 | n3,n4,n5
    assert can_connect(lab, "n1", "n3") and can_connect(lab, "n5", "n3")
    assert not can_connect(lab, "n1", "n5") and not can_connect(lab, "n4", "n2")
    faults.isolate(Path(lab.dir), "n3")  # replaces the bridge
    assert not can_connect(lab, "n3", "n1") and not can_connect(lab, "n4", "n3")
    assert can_connect(lab, "n1", "n5")
    faults.heal(Path(lab.dir))
    assert can_connect(lab, "n3", "n1")


def test_process_faults_and_slow(lab_factory) -> None:
    lab = lab_factory(hosts=3, replicas=3)
    lab_dir = Path(lab.dir)

    def state(host: str) -> str:
        return procs.state_of(LabState.load(lab_dir).host(host).procs["store"])

    assert state("n1") == "alive"
    faults.pause(lab_dir, ["n1"])
    assert state("n1") == "paused"
    faults.resume(lab_dir, ["n1"])
    assert state("n1") == "alive"
    old_pid = LabState.load(lab_dir).host("n2").procs["store"].pid
    faults.kill(lab_dir, ["n2"])
    assert state("n2") == "stopped"
    faults.start(lab_dir, ["n2"])
    assert state("n2") == "alive"
    assert LabState.load(lab_dir).host("n2").procs["store"].pid != old_pid
    hosts.wait_store_ready(LabState.load(lab_dir), 30)  # restarted with its data, rejoins
    faults.slow(lab_dir, "n3", "2mbit")
    qdisc = subprocess.run(net.in_netns(lab.host("n3").netns, ["tc", "qdisc", "show", "dev", "eth0"]),
                           capture_output=True, text=True).stdout
    assert "tbf" in qdisc
    faults.heal(lab_dir)
    qdisc = subprocess.run(net.in_netns(lab.host("n3").netns, ["tc", "qdisc", "show", "dev", "eth0"]),
                           capture_output=True, text=True).stdout
    assert "tbf" not in qdisc
    log = read_faults(lab_dir)
    assert [f["fault"] for f in log] == ["pause", "resume", "kill", "start", "slow", "heal"]
    assert all(a["mono_ns"] <= b["mono_ns"] for a, b in zip(log, log[1:]))
    assert json.loads((lab_dir / "faults.jsonl").read_text().splitlines()[0])["wall"]


def test_cli_status_and_exec(lab_factory, capsys) -> None:
    from deploy.cli.main import main

    lab = lab_factory(hosts=3, replicas=3)
    assert main(["lab", "status", "--dir", lab.dir]) == 0
    out = capsys.readouterr().out
    assert "leader" in out and "store:alive" in out and lab.host("n1").ip in out
    assert main(["lab", "partition", "--dir", lab.dir, "n1/n2,n3"]) == 0
    assert main(["lab", "status", "--dir", lab.dir]) == 0
    assert "n1 | n2,n3" in capsys.readouterr().out
    assert main(["lab", "exec", "--dir", lab.dir, "n2", "--", "true"]) == 0
    assert main(["lab", "exec", "--dir", lab.dir, "n2", "--", "false"]) == 1
    assert main(["lab", "heal", "--dir", lab.dir]) == 0
