"""Pure helpers of the runtime: cgroup parsing over a fake tree, overlay options, exit codes,
sandbox /etc files, process start times."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from node.runtime import cgroups, rootfs, runc, sandbox
from node.runtime.cgroups import Cgroups

MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 25 0:27 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
35 25 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
37 25 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
"""


def test_parse_mountinfo_finds_v1_controllers_and_v2() -> None:
    found = cgroups.parse_mountinfo(MOUNTINFO)
    assert found == {
        "unified": Path("/sys/fs/cgroup/unified"), "name=systemd": Path("/sys/fs/cgroup/systemd"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"), "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "pids": Path("/sys/fs/cgroup/pids")}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v1_stats_and_oom_from_a_fake_tree(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("memory", "cpuacct", "pids")}
    ctr = "skiff/pod1/c1"
    _write(mounts["memory"] / ctr / "memory.usage_in_bytes", "1000\n")
    _write(mounts["memory"] / ctr / "memory.failcnt", "4\n")
    _write(mounts["memory"] / ctr / "memory.stat", "cache 10\ntotal_inactive_file 300\n")
    _write(mounts["memory"] / ctr / "memory.oom_control",
           "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    _write(mounts["cpuacct"] / ctr / "cpuacct.usage", "123456\n")
    _write(mounts["pids"] / ctr / "pids.current", "3\n")
    stats = Cgroups(mounts).stats("/" + ctr)
    assert stats == cgroups.CgroupStats(1000, 700, 4, 1, 123456, 3)
    assert Cgroups(mounts).stats("/gone") == cgroups.CgroupStats(None, None, None, None, None, None)


def test_v2_is_used_only_when_it_has_the_controllers(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    _write(unified / "cgroup.controllers", "cpu memory pids\n")
    _write(unified / "pod" / "c" / "memory.current", "2048\n")
    _write(unified / "pod" / "c" / "memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n")
    _write(unified / "pod" / "c" / "memory.stat", "inactive_file 48\n")
    _write(unified / "pod" / "c" / "cpu.stat", "usage_usec 5\nuser_usec 3\n")
    _write(unified / "pod" / "c" / "pids.current", "1\n")
    stats = Cgroups({"unified": unified}).stats("/pod/c")
    assert stats == cgroups.CgroupStats(2048, 2000, 2, 1, 5000, 1)
    _write(unified / "cgroup.controllers", "\n")  # hybrid host: v2 mounted, no controllers
    assert Cgroups({"unified": unified}).oom_kills("/pod/c") is None


def test_remove_takes_children_first_and_only_empty_parents(tmp_path: Path) -> None:
    mounts = {"memory": tmp_path / "memory", "pids": tmp_path / "pids"}
    for m in mounts.values():
        (m / "skiff" / "pod1" / "c1").mkdir(parents=True)
        (m / "skiff" / "pod2").mkdir(parents=True)
    fake = Cgroups(mounts)
    assert not fake.remove_if_empty("/skiff/pod1")  # still has a container cgroup
    assert fake.remove("/skiff/pod1/c1") == []
    assert fake.remove_if_empty("/skiff/pod1")
    assert not fake.exists("/skiff/pod1") and fake.exists("/skiff/pod2")


def test_overlay_options_put_the_top_layer_first() -> None:
    opts = rootfs.overlay_options([Path("/l/base"), Path("/l/top")], Path("/c/upper"), Path("/c/work"))
    assert opts == "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work"
    with pytest.raises(rootfs.RootfsError):
        rootfs.overlay_options([], Path("/u"), Path("/w"))
    with pytest.raises(rootfs.RootfsError, match="':'"):
        rootfs.overlay_options([Path("/l/a:b")], Path("/u"), Path("/w"))


def test_mounted_paths_unescapes_mountinfo() -> None:
    info = "40 25 0:50 / /tmp/with\\040space rw - tmpfs tmpfs rw\n"
    assert rootfs.mounted_paths(info) == {Path("/tmp/with space")}


@pytest.mark.parametrize("status, expected", [
    (0, (0, None)), (3 << 8, (3, None)), (signal.SIGKILL, (137, 9)), (signal.SIGTERM, (143, 15)),
])
def test_exit_codes_follow_the_shell(status: int, expected: tuple[int, int | None]) -> None:
    assert runc.exit_code_of(status) == expected


def test_sandbox_etc_files() -> None:
    hosts = sandbox.hosts_file("web-0", "10.244.1.2")
    assert hosts.splitlines()[0] == "127.0.0.1\tlocalhost" and "10.244.1.2\tweb-0" in hosts
    host = "nameserver 9.9.9.9\n"
    assert sandbox.resolv_conf(sandbox.SandboxConfig("p"), host) == host
    custom = sandbox.SandboxConfig("p", dns_servers=("10.96.0.10",), dns_searches=("ns.svc", "svc"),
                                   dns_options=("ndots:5",))
    assert sandbox.resolv_conf(custom, host) == ("nameserver 10.96.0.10\nsearch ns.svc svc\n"
                                                 "options ndots:5\n")


def test_process_start_time_identifies_a_process() -> None:
    mine = sandbox.process_start_time(os.getpid())
    assert mine is not None and mine == sandbox.process_start_time(os.getpid())
    assert sandbox.process_start_time(2**22 + 7) is None
