"""Pod volumes on disk: emptyDir, hostPath types, configMap/secret projection, mounts, cleanup."""
from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from google.protobuf.message import Message

from node.agent.volumes import VolumeError, VolumeManager, container_mounts, projected_files
from protos.skiff.api.v1 import core_pb2


def pod_with(*volumes: core_pb2.Volume) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "web", "default", "uid-9"
    p.spec.volumes.extend(volumes)
    return p


class Objects:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], Message] = {}

    async def lookup(self, resource: str, namespace: str, name: str) -> Message | None:
        return self.items.get((resource, namespace, name))


def setup(manager: VolumeManager, pod: core_pb2.Pod, objects: Objects) -> dict[str, str]:
    return asyncio.run(manager.setup(pod, objects.lookup))


def test_projected_files_pure() -> None:
    data = {"a": b"1", "b": b"2"}
    assert projected_files(data, [], 0o644, "w", False) == {"a": (b"1", 0o644), "b": (b"2", 0o644)}
    items = [core_pb2.KeyToPath(key="a", path="sub/x", mode=0o600)]
    assert projected_files(data, items, 0o644, "w", False) == {"sub/x": (b"1", 0o600)}
    with pytest.raises(VolumeError, match="key 'zzz' not found"):
        projected_files(data, [core_pb2.KeyToPath(key="zzz", path="z")], 0o644, "w", False)
    assert projected_files(data, [core_pb2.KeyToPath(key="zzz", path="z")], 0o644, "w", True) == {}


def test_empty_dir_and_host_path(tmp_path: Path) -> None:
    manager = VolumeManager(tmp_path / "agent", tmpfs=False)
    host_dir = tmp_path / "host" / "made"
    pod = pod_with(core_pb2.Volume(name="scratch", empty_dir=core_pb2.EmptyDirVolumeSource()),
                   core_pb2.Volume(name="h", host_path=core_pb2.HostPathVolumeSource(path=str(host_dir), type="DirectoryOrCreate")))
    paths = setup(manager, pod, Objects())
    scratch = Path(paths["scratch"])
    assert scratch == tmp_path / "agent" / "pods" / "uid-9" / "volumes" / "scratch" and scratch.is_dir()
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o777
    assert paths["h"] == str(host_dir) and host_dir.is_dir()
    (scratch / "kept").write_text("x")
    setup(manager, pod, Objects())  # idempotent: an emptyDir is made once and keeps its content
    assert (scratch / "kept").read_text() == "x"
    missing = pod_with(core_pb2.Volume(name="h", host_path=core_pb2.HostPathVolumeSource(
        path=str(tmp_path / "nope"), type="Directory")))
    with pytest.raises(VolumeError, match="does not exist"):
        setup(manager, missing, Objects())
    assert manager.pod_uids() == ["uid-9"]
    manager.cleanup("uid-9")
    assert manager.pod_uids() == [] and host_dir.is_dir()  # a hostPath is the host's, never removed


def test_config_map_and_secret_files(tmp_path: Path) -> None:
    manager = VolumeManager(tmp_path, tmpfs=False)
    objects = Objects()
    cm = core_pb2.ConfigMap()
    cm.data.update({"app.conf": "port=80\n", "other": "o"})
    objects.items[("configmaps", "default", "cfg")] = cm
    secret = core_pb2.Secret()
    secret.data.update({"password": b"hunter2"})
    objects.items[("secrets", "default", "creds")] = secret
    pod = pod_with(
        core_pb2.Volume(name="config", config_map=core_pb2.ConfigMapVolumeSource(name="cfg")),
        core_pb2.Volume(name="creds", secret=core_pb2.SecretVolumeSource(
            secret_name="creds", default_mode=0o400, items=[core_pb2.KeyToPath(key="password", path="db/pw")])))
    paths = setup(manager, pod, objects)
    config = Path(paths["config"])
    assert (config / "app.conf").read_text() == "port=80\n" and stat.S_IMODE((config / "app.conf").stat().st_mode) == 0o644
    pw = Path(paths["creds"]) / "db" / "pw"
    assert pw.read_bytes() == b"hunter2" and stat.S_IMODE(pw.stat().st_mode) == 0o400
    # A key that went away is removed on the next setup; a changed one is rewritten.
    del cm.data["other"]
    cm.data["app.conf"] = "port=81\n"
    setup(manager, pod, objects)
    assert sorted(p.name for p in config.iterdir()) == ["app.conf"] and (config / "app.conf").read_text() == "port=81\n"
    absent = pod_with(core_pb2.Volume(name="c", config_map=core_pb2.ConfigMapVolumeSource(name="missing")))
    with pytest.raises(VolumeError, match="configmap 'missing' not found"):
        setup(manager, absent, objects)
    optional = pod_with(core_pb2.Volume(name="c", config_map=core_pb2.ConfigMapVolumeSource(name="missing", optional=True)))
    assert Path(setup(manager, optional, objects)["c"]).is_dir()
    bad = pod_with(core_pb2.Volume(name="c", config_map=core_pb2.ConfigMapVolumeSource(
        name="cfg", items=[core_pb2.KeyToPath(key="app.conf", path="../escape")])))
    with pytest.raises(VolumeError, match="must not contain"):
        setup(manager, bad, objects)


def test_unsupported_volume_is_named() -> None:
    pod = pod_with(core_pb2.Volume(name="data", nfs=core_pb2.NFSVolumeSource(server="s", path="/x")))
    with pytest.raises(VolumeError, match="volume 'data': only emptyDir, hostPath, configMap, secret, downwardAPI"):
        asyncio.run(VolumeManager(Path("/nonexistent"), tmpfs=False).setup(pod, Objects().lookup))


def test_container_mounts(tmp_path: Path) -> None:
    c = core_pb2.Container(name="app")
    c.volume_mounts.add(name="data", mount_path="/data", read_only=True)
    c.volume_mounts.add(name="data", mount_path="/logs", sub_path="logs")
    mounts = container_mounts(c, {"data": str(tmp_path)})
    assert [(m.container_path, m.host_path, m.readonly) for m in mounts] == [
        ("/data", str(tmp_path), True), ("/logs", str(tmp_path / "logs"), False)]
    assert (tmp_path / "logs").is_dir()
    c.volume_mounts.add(name="nope", mount_path="/x")
    with pytest.raises(VolumeError, match="'nope' names no volume"):
        container_mounts(c, {"data": str(tmp_path)})


def _downward_items() -> list[core_pb2.DownwardAPIVolumeFile]:
    return [
        core_pb2.DownwardAPIVolumeFile(path="labels", field_ref=core_pb2.ObjectFieldSelector(field_path="metadata.labels")),
        core_pb2.DownwardAPIVolumeFile(path="meta/name", mode=0o600,
                                       field_ref=core_pb2.ObjectFieldSelector(field_path="metadata.name")),
        core_pb2.DownwardAPIVolumeFile(path="mem", resource_field_ref=core_pb2.ResourceFieldSelector(
            container_name="app", resource="limits.memory", divisor="1Mi")),
        core_pb2.DownwardAPIVolumeFile(path="cpu", resource_field_ref=core_pb2.ResourceFieldSelector(
            container_name="app", resource="limits.cpu", divisor="1m")),
    ]


def test_downward_api_volume_files(tmp_path: Path) -> None:
    p = pod_with(core_pb2.Volume(name="info", downward_api=core_pb2.DownwardAPIVolumeSource(items=_downward_items())))
    p.metadata.labels.update({"tier": "front", "app": 'we"b'})
    p.spec.containers.add(name="app", image="busybox").resources.limits["memory"] = "64Mi"
    manager = VolumeManager(tmp_path, tmpfs=False, allocatable={"cpu": "1500m", "memory": "2Gi"})
    target = Path(setup(manager, p, Objects())["info"])
    assert (target / "labels").read_text() == 'app="we\\"b"\ntier="front"'
    assert (target / "meta" / "name").read_text() == "web" and stat.S_IMODE((target / "meta" / "name").stat().st_mode) == 0o600
    assert (target / "mem").read_text() == "64"  # the container's limit in Mi
    assert (target / "cpu").read_text() == "1500"  # no CPU limit: the node's allocatable


def test_projected_volume_merges_sources_and_refuses_service_account_tokens(tmp_path: Path) -> None:
    objects = Objects()
    cm = core_pb2.ConfigMap()
    cm.data["app.conf"] = "x=1"
    objects.items[("configmaps", "default", "settings")] = cm
    secret = core_pb2.Secret()
    secret.data["token"] = b"s3cret"
    objects.items[("secrets", "default", "creds")] = secret
    projected = core_pb2.ProjectedVolumeSource(default_mode=0o440, sources=[
        core_pb2.VolumeProjection(config_map=core_pb2.ConfigMapProjection(name="settings")),
        core_pb2.VolumeProjection(secret=core_pb2.SecretProjection(
            name="creds", items=[core_pb2.KeyToPath(key="token", path="auth/token")])),
        core_pb2.VolumeProjection(secret=core_pb2.SecretProjection(name="absent", optional=True)),
        core_pb2.VolumeProjection(downward_api=core_pb2.DownwardAPIProjection(items=_downward_items()[1:2])),
    ])
    p = pod_with(core_pb2.Volume(name="all", projected=projected))
    target = Path(setup(VolumeManager(tmp_path, tmpfs=False), p, objects)["all"])
    files = sorted(str(f.relative_to(target)) for f in target.rglob("*") if f.is_file())
    assert files == ["app.conf", "auth/token", "meta/name"]
    assert (target / "auth" / "token").read_bytes() == b"s3cret"
    assert stat.S_IMODE((target / "app.conf").stat().st_mode) == 0o440
    projected.sources.add(service_account_token=core_pb2.ServiceAccountTokenProjection(path="token"))
    p = pod_with(core_pb2.Volume(name="all", projected=projected))
    with pytest.raises(VolumeError, match=r"sources\[4\]: serviceAccountToken projections are not supported"):
        setup(VolumeManager(tmp_path, tmpfs=False), p, objects)
    projected.sources[1].secret.name = "missing"
    with pytest.raises(VolumeError, match=r"volume 'all': sources\[1\]: secret 'missing' not found"):
        setup(VolumeManager(tmp_path, tmpfs=False), pod_with(core_pb2.Volume(name="all", projected=projected)), objects)
