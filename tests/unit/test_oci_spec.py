"""Table tests for the pure OCI spec builder (node.runtime.oci)."""
from __future__ import annotations

import pytest

from node.runtime import oci
from node.runtime.oci import ContainerRequest, ImageConfig, Mount, Resources

POD = oci.PodContext(
    sandbox_id="sb1", hostname="web-0", netns_path="/r/netns/sb1", ipc_ns_path="/proc/42/ns/ipc",
    uts_ns_path="/proc/42/ns/uts", pid_ns_path=None, hosts_path="/r/sb/hosts",
    hostname_path="/r/sb/hostname", resolv_conf_path="/r/sb/resolv.conf")

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:other\n"


@pytest.mark.parametrize("entrypoint, cmd, command, args, expected", [
    ((), ("sh",), (), (), ["sh"]),
    (("/entry",), ("a", "b"), (), (), ["/entry", "a", "b"]),
    (("/entry",), ("a",), ("/bin/x",), (), ["/bin/x"]),          # command drops the image's Cmd
    (("/entry",), ("a",), (), ("z",), ["/entry", "z"]),            # args replace Cmd only
    (("/entry",), ("a",), ("/bin/x",), ("y",), ["/bin/x", "y"]),
    ((), (), (), ("only-args",), ["only-args"]),
])
def test_command_and_args_follow_kubernetes(entrypoint: tuple[str, ...], cmd: tuple[str, ...],
                                            command: tuple[str, ...], args: tuple[str, ...],
                                            expected: list[str]) -> None:
    image = ImageConfig(entrypoint=entrypoint, cmd=cmd)
    assert oci.resolve_args(image, ContainerRequest("c", command=command, args=args)) == expected


def test_no_command_anywhere_is_an_error_naming_the_container() -> None:
    with pytest.raises(oci.SpecError, match="'c'"):
        oci.resolve_args(ImageConfig(), ContainerRequest("c"))


def test_env_merge_request_wins_in_place_and_defaults() -> None:
    env = oci.merge_env(["A=1", "B=2"], [("B", "x"), ("C", "3")], "host")
    assert env[:2] == ["A=1", "B=x"]
    assert "C=3" in env and "HOSTNAME=host" in env
    assert any(e.startswith("PATH=/usr/local/sbin") for e in env)
    assert "PATH=/mine" in oci.merge_env(["PATH=/mine"], [], "h")


@pytest.mark.parametrize("user, expected", [
    ("", (0, 0, [])),
    ("1000", (1000, 1001, [50])),        # numeric uid found in passwd: its group and groups
    ("2000", (2000, 0, [])),             # numeric uid not in passwd
    ("1000:7", (1000, 7, [50])),
    ("app", (1000, 1001, [50])),
    ("app:staff", (1000, 50, [])),
    ("0:0", (0, 0, [])),
])
def test_resolve_user(user: str, expected: tuple[int, int, list[int]]) -> None:
    assert oci.resolve_user(user, PASSWD, GROUP) == expected


@pytest.mark.parametrize("user", ["nobody", "app:nogroup"])
def test_unknown_user_or_group_is_an_error(user: str) -> None:
    with pytest.raises(oci.SpecError):
        oci.resolve_user(user, PASSWD, GROUP)


@pytest.mark.parametrize("milli, shares", [(0, 2), (1, 2), (100, 102), (250, 256), (1000, 1024),
                                           (2500, 2560)])
def test_cpu_shares(milli: int, shares: int) -> None:
    assert oci.milli_cpu_to_shares(milli) == shares


@pytest.mark.parametrize("milli, quota", [(0, 0), (5, 1000), (10, 1000), (500, 50000), (2000, 200000)])
def test_cpu_quota(milli: int, quota: int) -> None:
    assert oci.milli_cpu_to_quota(milli) == quota


def test_resources_from_kubernetes_limit_only_sets_request() -> None:
    r = Resources.from_kubernetes(cpu_limit_milli=500, memory_limit_bytes=1 << 24, pids_limit=64)
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period) == (512, 50000, 100000)
    assert Resources.from_kubernetes() == Resources(cpu_shares=2)


SHELL_IMAGE = ImageConfig(cmd=("sh",))


def _spec(request: ContainerRequest, image: ImageConfig = SHELL_IMAGE,
          pod: oci.PodContext = POD) -> dict:
    return oci.container_spec(image, request, pod, "/r/c1/rootfs", "/skiff/podsb1/c1", "c1",
                              PASSWD, GROUP)


def test_container_spec_namespaces_join_the_pod() -> None:
    spec = _spec(ContainerRequest("c"))
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {"network": "/r/netns/sb1", "ipc": "/proc/42/ns/ipc", "uts": "/proc/42/ns/uts",
                  "mount": None, "pid": None}
    assert "hostname" not in spec  # a joined UTS namespace: runc must not set it
    shared = _spec(ContainerRequest("c"), pod=oci.PodContext(**{**POD.__dict__,
                                                                 "pid_ns_path": "/proc/42/ns/pid"}))
    assert {"type": "pid", "path": "/proc/42/ns/pid"} in shared["linux"]["namespaces"]


def test_container_spec_mounts() -> None:
    spec = _spec(ContainerRequest("c", mounts=(Mount("/data", "/host/empty"),
                                               Mount("/cfg", "/host/cfg", readonly=True))))
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"):
        assert dest in by_dest
    assert "ro" in by_dest["/sys"]["options"]
    assert by_dest["/etc/hosts"]["source"] == "/r/sb/hosts"
    assert by_dest["/etc/hostname"]["source"] == "/r/sb/hostname"
    assert by_dest["/etc/resolv.conf"]["source"] == "/r/sb/resolv.conf"
    assert by_dest["/data"]["type"] == "bind" and "rw" in by_dest["/data"]["options"]
    assert "ro" in by_dest["/cfg"]["options"] and "rbind" in by_dest["/cfg"]["options"]


def test_container_spec_resources_and_cgroups_path() -> None:
    res = Resources.from_kubernetes(cpu_request_milli=250, cpu_limit_milli=500,
                                    memory_limit_bytes=16 << 20, pids_limit=100)
    linux = _spec(ContainerRequest("c", resources=res))["linux"]
    assert linux["cgroupsPath"] == "/skiff/podsb1/c1"
    assert linux["resources"]["cpu"] == {"shares": 256, "quota": 50000, "period": 100000}
    assert linux["resources"]["memory"] == {"limit": 16 << 20, "swap": 16 << 20}
    assert linux["resources"]["pids"] == {"limit": 100}
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert "memory" not in _spec(ContainerRequest("c"))["linux"]["resources"]


def test_container_spec_process() -> None:
    image = ImageConfig(env=("A=1",), entrypoint=("/bin/sh",), cmd=("-c", "true"),
                        working_dir="/app", user="app")
    process = _spec(ContainerRequest("c", env=(("A", "2"),)), image)["process"]
    assert process["args"] == ["/bin/sh", "-c", "true"]
    assert process["cwd"] == "/app" and "A=2" in process["env"]
    assert process["user"] == {"uid": 1000, "gid": 1001, "additionalGids": [50]}
    assert process["terminal"] is False and process["noNewPrivileges"] is True
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert process["capabilities"]["bounding"] == list(oci.DEFAULT_CAPABILITIES)
    assert "inheritable" not in process["capabilities"]


@pytest.mark.parametrize("run_as_user, run_as_group, expected", [
    (0, None, {"uid": 0, "gid": 0}),
    (1000, None, {"uid": 1000, "gid": 1001, "additionalGids": [50]}),
    (1000, 5, {"uid": 1000, "gid": 5, "additionalGids": [50]}),
    (4242, None, {"uid": 4242, "gid": 0}),
])
def test_run_as_user_overrides_image_user(run_as_user: int, run_as_group: int | None,
                                          expected: dict) -> None:
    request = ContainerRequest("c", run_as_user=run_as_user, run_as_group=run_as_group)
    assert _spec(request, ImageConfig(cmd=("sh",), user="app:staff"))["process"]["user"] == expected


def test_capabilities_add_and_drop() -> None:
    caps = _spec(ContainerRequest("c", add_capabilities=("NET_ADMIN",),
                                  drop_capabilities=("CAP_KILL", "net_raw")))["process"]["capabilities"]
    assert "CAP_NET_ADMIN" in caps["effective"]
    assert "CAP_KILL" not in caps["bounding"] and "CAP_NET_RAW" not in caps["permitted"]
    none = _spec(ContainerRequest("c", drop_capabilities=("ALL",), add_capabilities=("CHOWN",)))
    assert none["process"]["capabilities"]["effective"] == ["CAP_CHOWN"]


def test_working_dir_request_wins_and_readonly_rootfs() -> None:
    image = ImageConfig(cmd=("sh",), working_dir="/img")
    spec = _spec(ContainerRequest("c", working_dir="/req", readonly_rootfs=True), image)
    assert spec["process"]["cwd"] == "/req" and spec["root"] == {"path": "/r/c1/rootfs",
                                                                 "readonly": True}
    assert _spec(ContainerRequest("c"))["process"]["cwd"] == "/"


def test_image_config_from_oci_json() -> None:
    image = ImageConfig.from_oci({"Env": ["A=1"], "Cmd": ["sh"], "Entrypoint": None,
                                  "WorkingDir": "/w", "User": "1:2"})
    assert image == ImageConfig(env=("A=1",), cmd=("sh",), working_dir="/w", user="1:2")


def test_pause_spec() -> None:
    spec = oci.pause_spec("sb1", "web-0", "/r/netns/sb1", "/r/pause", "/skiff/podsb1/sb1")
    assert spec["hostname"] == "web-0" and spec["root"]["readonly"] is True
    ns = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert ns == {"network": "/r/netns/sb1", "ipc": None, "uts": None, "pid": None, "mount": None}
    assert spec["process"]["capabilities"]["effective"] == []
    assert spec["annotations"]["io.kubernetes.cri.container-type"] == "sandbox"


def test_host_network_pause_keeps_the_hosts_network_and_uts_namespaces() -> None:
    """A hostNetwork pod: the pause joins the host's namespace by path (a lab host's) or stays in
    the runtime's (no entry); it makes no UTS namespace, so no hostname is set (runc refuses one)."""
    in_lab = oci.pause_spec("sb1", "host-a", "/run/netns/host-a", "/r/pause", "/skiff/podsb1/sb1", host_network=True)
    ns = {n["type"]: n.get("path") for n in in_lab["linux"]["namespaces"]}
    assert ns == {"network": "/run/netns/host-a", "ipc": None, "pid": None, "mount": None}
    assert "hostname" not in in_lab
    on_host = oci.pause_spec("sb1", "host-a", "", "/r/pause", "/skiff/podsb1/sb1", host_network=True)
    assert [n["type"] for n in on_host["linux"]["namespaces"]] == ["ipc", "pid", "mount"]


def test_container_of_a_host_network_pod_makes_no_network_namespace() -> None:
    spec = _spec(ContainerRequest("c"), pod=oci.PodContext(**{**POD.__dict__, "netns_path": ""}))
    types = [n["type"] for n in spec["linux"]["namespaces"]]
    assert "network" not in types and {"type": "uts", "path": "/proc/42/ns/uts"} in spec["linux"]["namespaces"]
