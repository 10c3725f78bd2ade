"""Build container images offline, and serve them from a local registry, for tests and benches.

- ``tar_layer(entries)``: an uncompressed layer tar from ``Entry`` values (files, directories,
  symlinks, hard links, whiteouts, ...), deterministic (fixed mtimes, sorted as given).
- ``OCILayout(dir)``: writes an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``):
  ``add_image`` adds a config, gzip layers (gzip with mtime 0, so digests are reproducible) and
  a manifest; ``add_index`` adds a multi-platform index; both can be named in ``index.json``
  with the ``org.opencontainers.image.ref.name`` annotation (a tag, as skopeo and umoci write it)
  and ``io.containerd.image.name`` (the full name, as containerd writes it).
- ``build_busybox_oci(dir, tag)``: a runnable image: busybox-static at /bin/busybox with a
  symlink per applet, /etc/passwd, /etc/group, /tmp; Cmd ["sh"], Env PATH.
- ``oci_archive`` and ``docker_save_archive``: the layout as a tar, or converted to ``docker
  save``'s format (manifest.json, <config>.json, <id>/layer.tar).
- ``LocalRegistry``: Debian's ``docker-registry`` on 127.0.0.1:<free port> with storage in a
  temporary directory, stopped by PID; ``push`` uploads an image from a layout over the
  Registry HTTP API v2 (indexes included), ``push_with_skopeo`` does the same with skopeo.
"""
from __future__ import annotations

from deploy import images as deploy_images

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One tar member. kind: file, dir, symlink, hardlink, fifo, char."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0
    xattrs: dict[str, str] = field(default_factory=dict)


def file(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode, **kw)


def directory(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", mode=0o777, target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def whiteout(path: str) -> Entry:
    """The OCI whiteout deleting ``path`` from lower layers."""
    parent, _, base = path.rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(dir_path: str) -> Entry:
    """The OCI marker hiding everything lower layers have under ``dir_path``."""
    return file(f"{dir_path.rstrip('/')}/.wh..wh..opq")


def tar_layer(entries: Iterable[Entry]) -> bytes:
    """An uncompressed PAX tar of ``entries``, in the order given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for e in entries:
            info = tarfile.TarInfo(e.name + ("/" if e.kind == "dir" and not e.name.endswith("/") else ""))
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, MTIME
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE}[e.kind]
            info.linkname = e.target
            if e.kind == "file":
                info.size = len(e.data)
                archive.addfile(info, io.BytesIO(e.data))
            else:
                archive.addfile(info)
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@dataclass(frozen=True)
class BuiltImage:
    manifest: dict[str, Any]      # the manifest's descriptor (mediaType, digest, size, platform)
    config_digest: str
    diff_ids: tuple[str, ...]
    layer_digests: tuple[str, ...]

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])


class OCILayout:
    """An OCI image layout directory being written."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (self.path / "index.json").exists():
            self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return digest

    def blob(self, digest: str) -> bytes:
        return (self.path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    def add_image(self, layers: list[bytes], *, config: dict[str, Any] | None = None,
                  architecture: str = "amd64", os_name: str = "linux", compress: bool = True,
                  ref_name: str | None = None, full_name: str | None = None) -> BuiltImage:
        """Add an image of these uncompressed layer tars; name it in index.json if asked."""
        diff_ids: tuple[str, ...] = tuple(sha256(layer) for layer in layers)
        blobs = [gzip_bytes(layer) if compress else layer for layer in layers]
        layer_descs = [{"mediaType": OCI_LAYER_GZIP if compress else OCI_LAYER, "digest": self.add_blob(b), "size": len(b)}
                       for b in blobs]
        doc = {"architecture": architecture, "os": os_name, "created": "2023-11-14T22:13:20Z",
               "config": config if config is not None else {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
               "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
               "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/imagebuild.py"} for _ in layers]}
        config_bytes = json.dumps(doc, sort_keys=True).encode()
        config_digest = self.add_blob(config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                    "layers": layer_descs}
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        descriptor = {"mediaType": OCI_MANIFEST, "digest": self.add_blob(manifest_bytes), "size": len(manifest_bytes),
                      "platform": {"architecture": architecture, "os": os_name}}
        image = BuiltImage(descriptor, config_digest, diff_ids, tuple(str(d["digest"]) for d in layer_descs))
        if ref_name is not None:
            self.name(descriptor, ref_name, full_name)
        return image

    def add_index(self, images: list[BuiltImage], *, ref_name: str | None = None,
                  full_name: str | None = None) -> dict[str, Any]:
        """Add a multi-platform index of ``images``; returns its descriptor."""
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [i.manifest for i in images]}
        data = json.dumps(index, sort_keys=True).encode()
        descriptor = {"mediaType": OCI_INDEX, "digest": self.add_blob(data), "size": len(data)}
        if ref_name is not None:
            self.name(descriptor, ref_name, full_name)
        return descriptor

    def name(self, descriptor: dict[str, Any], ref_name: str, full_name: str | None = None) -> None:
        """List ``descriptor`` in index.json under ``ref_name`` (replacing that name)."""
        index = json.loads((self.path / "index.json").read_text())
        index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != ref_name]
        entry = {k: v for k, v in descriptor.items() if k != "platform"}
        entry["annotations"] = {REF_NAME: ref_name, **({CONTAINERD_NAME: full_name} if full_name else {})}
        index["manifests"].append(entry)
        self._write_index(index)

    def named(self, ref_name: str) -> dict[str, Any]:
        index = json.loads((self.path / "index.json").read_text())
        for m in index["manifests"]:
            if m.get("annotations", {}).get(REF_NAME) == ref_name:
                return dict(m)
        raise KeyError(f"{ref_name!r} is not named in {self.path / 'index.json'}")

    def _write_index(self, index: dict[str, Any]) -> None:
        (self.path / "index.json").write_text(json.dumps(index, sort_keys=True))


def busybox_layer(extra: Iterable[Entry] = ()) -> bytes:
    """A layer with busybox-static and its applets, enough to run ``sh``, ``httpd``, ``nc``..."""
    if not BUSYBOX.exists():
        raise FileNotFoundError("/bin/busybox is missing: apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    entries = [directory("bin"), directory("etc"), directory("root", 0o700), directory("tmp", 0o1777),
               directory("var"), directory("var/www"), directory("proc"), directory("sys"), directory("dev"),
               file("bin/busybox", BUSYBOX.read_bytes(), 0o755)]
    entries += [symlink(f"bin/{name}", "busybox") for name in sorted(set(applets)) if name != "busybox"]
    entries += [file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
                file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
                file("etc/hostname", "skiff\n")]
    entries += list(extra)
    return tar_layer(entries)


def build_busybox_oci(dir: Path, tag: str = "latest", *, name: str = "docker.io/library/busybox",
                      architecture: str = "amd64") -> Path:
    """An OCI layout in ``dir`` holding a busybox image named ``tag`` (ref.name) and
    ``name:tag`` (io.containerd.image.name). Returns ``dir``."""
    layout = OCILayout(dir)
    layout.add_image([busybox_layer()], architecture=architecture, ref_name=tag, full_name=f"{name}:{tag}")
    return Path(dir)


def oci_archive(layout_dir: Path, out_tar: Path) -> Path:
    """The layout as a tar (what ``skopeo copy ... oci-archive:`` and ``ctr export`` produce)."""
    with tarfile.open(out_tar, "w") as archive:
        for name in ("oci-layout", "index.json", "blobs"):
            archive.add(Path(layout_dir) / name, arcname=name)
    return Path(out_tar)


def docker_save_archive(layout_dir: Path, out_tar: Path, ref_name: str, repo_tags: list[str]) -> Path:
    """The image named ``ref_name`` in the layout, converted to ``docker save``'s format."""
    layout = OCILayout(layout_dir)
    manifest = json.loads(layout.blob(layout.named(ref_name)["digest"]))
    config = layout.blob(manifest["config"]["digest"])
    files: dict[str, bytes] = {f"{manifest['config']['digest'].split(':')[1]}.json": config}
    layer_paths = []
    for layer in manifest["layers"]:
        data = layout.blob(layer["digest"])
        raw = gzip.decompress(data) if layer["mediaType"].endswith("gzip") else data
        path = f"{hashlib.sha256(raw).hexdigest()}/layer.tar"
        files[path] = raw
        layer_paths.append(path)
    files["manifest.json"] = json.dumps([{"Config": next(iter(files)), "RepoTags": repo_tags,
                                          "Layers": layer_paths}]).encode()
    with tarfile.open(out_tar, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), MTIME
            archive.addfile(info, io.BytesIO(data))
    return Path(out_tar)


class LocalRegistry(deploy_images.LocalRegistry):
    """Debian's docker-registry on loopback (deploy.images.LocalRegistry), with the pushes tests
    need: blobs, manifests, whole OCI layouts (indexes too), skopeo, and blob files to tamper with."""

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        if self._request("HEAD", f"/v2/{repository}/blobs/{digest}")[0] == 200:
            return digest
        status, headers, body = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"upload start for {repository}: HTTP {status}: {body[:200]!r}")
        location = headers["location"]
        if location.startswith("http"):
            location = "/" + location.split("/", 3)[3]
        sep = "&" if "?" in location else "?"
        status, _, body = self._request("PUT", f"{location}{sep}digest={digest}", data,
                                        {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"blob upload {digest}: HTTP {status}: {body[:200]!r}")
        return digest

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        status, headers, body = self._request("PUT", f"/v2/{repository}/manifests/{reference}", data,
                                              {"Content-Type": media_type})
        if status != 201:
            raise RuntimeError(f"manifest {repository}:{reference}: HTTP {status}: {body[:300]!r}")
        return sha256(data)

    def push(self, layout_dir: Path, ref_name: str, repository: str, tag: str) -> str:
        """Upload what ``ref_name`` names in the layout (an image or an index) as
        ``repository:tag``; returns its digest."""
        layout = OCILayout(layout_dir)
        top = layout.named(ref_name)
        self._push_tree(layout, repository, top["digest"], top["mediaType"])
        return self.push_manifest(repository, tag, layout.blob(top["digest"]), top["mediaType"])

    def _push_tree(self, layout: OCILayout, repository: str, digest: str, media_type: str) -> None:
        doc = json.loads(layout.blob(digest))
        if "manifests" in doc:
            for child in doc["manifests"]:
                self._push_tree(layout, repository, child["digest"], child["mediaType"])
                self.push_manifest(repository, child["digest"], layout.blob(child["digest"]), child["mediaType"])
            return
        for blob in [doc["config"], *doc["layers"]]:
            self.push_blob(repository, layout.blob(blob["digest"]))

    def push_with_skopeo(self, layout_dir: Path, ref_name: str, repository: str, tag: str) -> None:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                        f"oci:{layout_dir}:{ref_name}", f"docker://{self.host}/{repository}:{tag}"],
                       check=True, capture_output=True, timeout=120)

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob on disk (to tamper with it in tests)."""
        hex_ = digest.split(":")[1]
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"
