"""Pod volumes on the host: directories the runtime bind-mounts into containers.

Every volume of a pod lives under `<root>/pods/<uid>/volumes/<name>` (hostPath excepted):

- **emptyDir**: an empty directory made once (mode 0777, as the kubelet makes it, so any user
  in any container can write); medium Memory mounts a tmpfs there when the agent is root (its
  sizeLimit as the tmpfs size), else it is a plain directory.
- **hostPath**: the host's path itself, checked against its `type`: DirectoryOrCreate and
  FileOrCreate make what is missing; Directory, File, Socket, CharDevice, BlockDevice require
  it to be one; "" checks nothing.
- **configMap / secret**: the object's keys as files (all keys, or `items` key -> path with an
  optional per-item mode), mode `defaultMode` (0644 by default) or the item's. Files are
  rewritten (atomically, by rename) only when their bytes or mode changed, and files for keys
  that went away are removed, so a refresh is cheap and a reader never sees half a file. A
  missing object or key is an error naming it, unless the volume is `optional`.
- **downwardAPI**: the pod's fields and its containers' resources as files
  (`node.agent.downward`; limits a container does not set are the node's allocatable).
- **projected**: configMap, secret and downwardAPI sources in one directory, the volume's
  defaultMode for all; serviceAccountToken sources are refused (skiff issues no such tokens).

`container_mounts(container, paths)` turns a container's volumeMounts into CRI mounts
(subPath joins under the volume's path; readOnly kept). `cleanup(uid)` unmounts tmpfs volumes
and removes the pod's directory; `pod_uids()` lists pods with a directory, so the agent can
remove what no pod owns. Other volume kinds (persistentVolumeClaim, nfs) are refused with
`VolumeError` naming the volume.

The object lookup is injected (`Lookup`: kind, namespace, name -> object or None), so the
manager itself does no API calls; the agent passes one that reads through its API client.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path, PurePosixPath

from google.protobuf.message import Message

from controlplane.client import quantity
from node.agent import downward
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2

Lookup = Callable[[str, str, str], Awaitable[Message | None]]
DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume cannot be set up; the message names the pod's volume and what is wrong."""


def projected_files(data: Mapping[str, bytes], items: list[core_pb2.KeyToPath], default_mode: int,
                    where: str, optional: bool) -> dict[str, tuple[bytes, int]]:
    """Pure: relative path -> (content, mode) for a configMap's or secret's volume."""
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item.key not in data:
            if optional:
                continue
            raise VolumeError(f"{where}: key {item.key!r} not found")
        files[item.path] = (data[item.key], item.mode if item.HasField("mode") else default_mode)
    return files


def _safe_relative(path: str, where: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise VolumeError(f"{where}: path {path!r} must be relative and must not contain '..'")
    return rel


class VolumeManager:
    """Sets up and removes pods' volumes under `root` (see the module docstring)."""

    def __init__(self, root: Path, tmpfs: bool | None = None, allocatable: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.tmpfs = os.geteuid() == 0 if tmpfs is None else tmpfs
        self.allocatable = dict(allocatable or {})  # the node's: downward API limits a container does not set

    def pod_dir(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def pod_uids(self) -> list[str]:
        base = self.root / "pods"
        return sorted(p.name for p in base.iterdir()) if base.is_dir() else []

    async def setup(self, pod: core_pb2.Pod, lookup: Lookup) -> dict[str, str]:
        """Make every volume of the pod; volume name -> host path."""
        paths: dict[str, str] = {}
        for volume in pod.spec.volumes:
            where = f"pod {pod.metadata.namespace}/{pod.metadata.name}: volume {volume.name!r}"
            target = self.pod_dir(pod.metadata.uid) / "volumes" / volume.name
            if volume.HasField("empty_dir"):
                self._empty_dir(target, volume.empty_dir, where)
            elif volume.HasField("host_path"):
                paths[volume.name] = self._host_path(volume.host_path, where)
                continue
            elif volume.HasField("config_map"):
                src = volume.config_map
                files = await _object_files(lookup, pod.metadata.namespace, True, src.name, list(src.items),
                                            _mode(src), src.HasField("optional") and src.optional, where)
                _write_files(target, files, where)
            elif volume.HasField("secret"):
                ssrc = volume.secret
                files = await _object_files(lookup, pod.metadata.namespace, False, ssrc.secret_name, list(ssrc.items),
                                            _mode(ssrc), ssrc.HasField("optional") and ssrc.optional, where)
                _write_files(target, files, where)
            elif volume.HasField("downward_api"):
                _write_files(target, self._downward(pod, list(volume.downward_api.items),
                                                    _mode(volume.downward_api), where), where)
            elif volume.HasField("projected"):
                _write_files(target, await self._projected(pod, volume.projected, lookup, where), where)
            else:
                raise VolumeError(f"{where}: only emptyDir, hostPath, configMap, secret, downwardAPI and "
                                  "projected volumes are supported")
            paths[volume.name] = str(target)
        return paths

    def _empty_dir(self, target: Path, source: core_pb2.EmptyDirVolumeSource, where: str) -> None:
        if target.is_dir():
            return
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)
        if source.medium == "Memory" and self.tmpfs:
            options = "mode=0777"
            if source.size_limit:
                try:
                    options += f",size={quantity.parse_bytes(source.size_limit)}"
                except ValueError as err:
                    raise VolumeError(f"{where}: sizeLimit: {err}") from None
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise VolumeError(f"{where}: mounting a tmpfs failed: {done.stderr.strip()}")

    def _host_path(self, source: core_pb2.HostPathVolumeSource, where: str) -> str:
        path = Path(source.path)
        kind = source.type if source.HasField("type") else ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        elif kind:
            checks = {"Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
                      "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}
            check = checks.get(kind)
            if check is None:
                raise VolumeError(f"{where}: unknown hostPath type {kind!r}")
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                raise VolumeError(f"{where}: hostPath {path} does not exist (type {kind})") from None
            if not check(mode):
                raise VolumeError(f"{where}: hostPath {path} is not a {kind}")
        return str(path)

    def _downward(self, pod: core_pb2.Pod, items: list[core_pb2.DownwardAPIVolumeFile], default_mode: int,
                  where: str) -> dict[str, tuple[bytes, int]]:
        try:
            return downward.volume_files(pod, items, default_mode, self.allocatable)
        except ValueError as err:
            raise VolumeError(f"{where}: {err}") from None

    async def _projected(self, pod: core_pb2.Pod, source: core_pb2.ProjectedVolumeSource, lookup: Lookup,
                         where: str) -> dict[str, tuple[bytes, int]]:
        """Every source's files in one directory (a later source's file of the same path wins)."""
        mode = _mode(source)
        files: dict[str, tuple[bytes, int]] = {}
        for i, projection in enumerate(source.sources):
            at = f"{where}: sources[{i}]"
            if projection.HasField("config_map") or projection.HasField("secret"):
                is_cm = projection.HasField("config_map")
                ref = projection.config_map if is_cm else projection.secret
                files.update(await _object_files(lookup, pod.metadata.namespace, is_cm, ref.name, list(ref.items),
                                                 mode, ref.HasField("optional") and ref.optional, at))
            elif projection.HasField("downward_api"):
                files.update(self._downward(pod, list(projection.downward_api.items), mode, at))
            elif projection.HasField("service_account_token"):
                raise VolumeError(f"{at}: serviceAccountToken projections are not supported "
                                  "(skiff issues no service account tokens)")
            else:
                raise VolumeError(f"{at}: the projection names no source")
        return files

    def cleanup(self, uid: str) -> None:
        """Unmount and remove everything of the pod (idempotent)."""
        pod_dir = self.pod_dir(uid)
        volumes = pod_dir / "volumes"
        if volumes.is_dir() and self.tmpfs:
            for entry in volumes.iterdir():
                if os.path.ismount(entry):
                    subprocess.run(["umount", str(entry)], capture_output=True)
        shutil.rmtree(pod_dir, ignore_errors=True)


def _mode(source: Message) -> int:
    """A volume source's defaultMode, or 0644."""
    return source.default_mode if source.HasField("default_mode") else DEFAULT_MODE  # type: ignore[attr-defined]


async def _object_files(lookup: Lookup, namespace: str, is_cm: bool, name: str, items: list[core_pb2.KeyToPath],
                        default_mode: int, optional: bool, where: str) -> dict[str, tuple[bytes, int]]:
    """A ConfigMap's or Secret's keys as files (all, or `items`); nothing when it is absent and optional."""
    what = f"{where}: {'configmap' if is_cm else 'secret'} {name!r}"
    obj = await lookup("configmaps" if is_cm else "secrets", namespace, name)
    if obj is None:
        if not optional:
            raise VolumeError(f"{what} not found")
        return {}
    data = _config_map_data(obj) if is_cm else dict(obj.data)  # type: ignore[attr-defined]
    return projected_files(data, items, default_mode, what, optional)


def _write_files(target: Path, files: Mapping[str, tuple[bytes, int]], where: str) -> None:
    """Make `target` hold exactly `files` (relative path -> (content, mode)), changing only
    what differs."""
    target.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for rel_text, (content, mode) in files.items():
        rel = _safe_relative(rel_text, where)
        path = target.joinpath(*rel.parts)
        wanted.add(path)
        _write_if_changed(path, content, mode)
    for existing in sorted(target.rglob("*"), reverse=True):
        if existing.is_file() and existing not in wanted:
            existing.unlink()
        elif existing.is_dir() and not any(existing.iterdir()):
            existing.rmdir()


def _config_map_data(cm: Message) -> dict[str, bytes]:
    data = {k: v.encode() for k, v in cm.data.items()}  # type: ignore[attr-defined]
    data.update(dict(cm.binary_data))  # type: ignore[attr-defined]
    return data


def _write_if_changed(path: Path, content: bytes, mode: int) -> None:
    try:
        if path.read_bytes() == content and stat.S_IMODE(path.stat().st_mode) == mode:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def container_mounts(container: core_pb2.Container, paths: Mapping[str, str], where: str = "") -> list[cri.Mount]:
    """CRI mounts for a container's volumeMounts (VolumeError for an unknown volume)."""
    mounts = []
    for vm in container.volume_mounts:
        host = paths.get(vm.name)
        if host is None:
            raise VolumeError(f"{where}container {container.name!r}: volumeMount {vm.name!r} names no volume of the pod")
        if vm.sub_path:
            rel = _safe_relative(vm.sub_path, f"{where}container {container.name!r}")
            sub = Path(host).joinpath(*rel.parts)
            if not sub.exists():
                sub.mkdir(parents=True, exist_ok=True)
            host = str(sub)
        mounts.append(cri.Mount(container_path=vm.mount_path, host_path=host, readonly=vm.read_only))
    return mounts
