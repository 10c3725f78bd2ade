"""Import images from archives: an OCI image layout as a tar, or a ``docker save`` tarball.

- OCI layout archive (``oci-layout``, ``index.json``, ``blobs/sha256/...``; what ``skopeo copy
  ... oci-archive:``, ``ctr export`` and Docker 25+ ``docker save`` write): every entry of
  ``index.json`` becomes an image; an entry that is itself an index yields this machine's
  platform. Its name comes from the ``io.containerd.image.name`` annotation, else from
  ``org.opencontainers.image.ref.name`` when that is a full reference (``busybox:1.36``,
  ``localhost:5000/app:v1``); a bare tag there (``1.36``, what skopeo and umoci write) is joined
  to ``base_name`` when one is given, and otherwise the image is imported without a name
  (reachable by its ID).
- ``docker save`` archive (``manifest.json`` listing Config, RepoTags and Layers): layers are
  the (usually uncompressed) tars as stored; skiff synthesizes an OCI manifest for them, so the
  image's ID (its config digest) is Docker's, while its manifest digest is skiff's own. Names
  come from RepoTags.

Members are read by name from the archive, never extracted as files; every blob is verified
against its digest and every layer against its diff_id exactly as for a pull (``stage_image``),
and each image is committed to the store in one step or not at all.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import IO

from node.runtime.images.manifest import (
    OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST, Descriptor, Index, Manifest, ManifestError,
    Platform, choose_platform, parse_document,
)
from node.runtime.images.pull import stage_image
from node.runtime.images.reference import InvalidReference, parse
from node.runtime.images.store import BlobWriter, ImageRecord, ImageStore, Ingest

__all__ = ["ArchiveError", "import_archive"]

CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


class ArchiveError(Exception):
    """The file is not an image archive skiff can import; the message says what is wrong."""


class _Archive:
    """Random access to an archive's members by normalized name."""

    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as err:
            raise ArchiveError(f"{path}: not a readable tar archive ({err})") from None
        self.path = path
        self.members = {m.name.removeprefix("./").lstrip("/"): m for m in self.tar.getmembers()}

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name.removeprefix("./"))
        handle = self.tar.extractfile(member) if member is not None else None
        if handle is None:
            raise ArchiveError(f"{self.path}: {name} is missing from the archive")
        return handle

    def read(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()

    def copy(self, name: str, writer: BlobWriter) -> None:
        with self.open(name) as handle:
            while chunk := handle.read(_CHUNK):
                writer.write(chunk)


def import_archive(store: ImageStore, path: Path, *, base_name: str | None = None,
                   platform: Platform | None = None) -> list[ImageRecord]:
    """Import every image in the archive at ``path``; returns the stored records."""
    archive = _Archive(Path(path))
    try:
        if "index.json" in archive.members:
            return _import_oci(store, archive, base_name, platform or Platform.host())
        if "manifest.json" in archive.members:
            return _import_docker(store, archive)
        raise ArchiveError(f"{path}: neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)")
    finally:
        archive.tar.close()


def _blob_name(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"blobs/{algorithm}/{value}"


def _image_name(annotations: dict[str, str], base_name: str | None) -> str | None:
    full = annotations.get(CONTAINERD_NAME)
    ref_name = annotations.get(REF_NAME)
    try:
        if full:
            return str(parse(full))
        if ref_name and any(c in ref_name for c in "/:@"):
            return str(parse(ref_name))
        if ref_name and base_name:
            return str(parse(f"{base_name}:{ref_name}"))
    except InvalidReference as err:
        raise ArchiveError(f"index.json names an image {full or ref_name!r} that is not a valid reference: {err}") from None
    return None


def _import_oci(store: ImageStore, archive: _Archive, base_name: str | None, platform: Platform) -> list[ImageRecord]:
    index = parse_document(archive.read("index.json"), OCI_INDEX)
    if not isinstance(index, Index):
        raise ArchiveError(f"{archive.path}: index.json is not an image index")
    records = []
    for entry in index.manifests:
        name = _image_name(dict(entry.annotations), base_name)
        with store.ingest() as ingest:
            records.append(store.commit(ingest, _stage_oci_entry(archive, ingest, entry, name, platform)))
    if not records:
        raise ArchiveError(f"{archive.path}: index.json lists no images")
    return records


def _stage_oci_entry(archive: _Archive, ingest: Ingest, entry: Descriptor, name: str | None,
                     platform: Platform) -> ImageRecord:
    def fetch(descriptor: Descriptor, writer: BlobWriter) -> None:
        archive.copy(_blob_name(descriptor.digest), writer)

    def load(descriptor: Descriptor) -> Manifest | Index:
        with ingest.writer(descriptor.digest, descriptor.size) as writer:
            fetch(descriptor, writer)
            writer.close()
        return parse_document(ingest.read_blob(descriptor.digest), descriptor.media_type)

    document = load(entry)
    manifest_digest, index_digest = entry.digest, None
    if isinstance(document, Index):
        chosen = choose_platform(document, platform)
        index_digest, manifest_digest = entry.digest, chosen.digest
        document = load(chosen)
    if not isinstance(document, Manifest):
        raise ManifestError(f"{entry.digest}: an index inside an index is not supported")
    ref = parse(name) if name else None
    tags: tuple[str, ...] = (str(ref),) if ref is not None and ref.tag and not ref.digest else ()
    digests = (f"{ref.name}@{entry.digest}",) if ref is not None else ()
    return stage_image(ingest, document, manifest_digest, fetch, index_digest=index_digest,
                       repo_tags=tags, repo_digests=digests)


def _import_docker(store: ImageStore, archive: _Archive) -> list[ImageRecord]:
    try:
        entries = json.loads(archive.read("manifest.json"))
    except json.JSONDecodeError as err:
        raise ArchiveError(f"{archive.path}: manifest.json is not JSON ({err})") from None
    if not isinstance(entries, list) or not entries:
        raise ArchiveError(f"{archive.path}: manifest.json lists no images")
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "Config" not in entry or not isinstance(entry.get("Layers"), list):
            raise ArchiveError(f"{archive.path}: manifest.json entry {i} lacks Config or Layers")
        try:
            tags = tuple(str(parse(t)) for t in entry.get("RepoTags") or ())
        except InvalidReference as err:
            raise ArchiveError(f"{archive.path}: manifest.json entry {i}: {err}") from None
        with store.ingest() as ingest:
            records.append(store.commit(ingest, _stage_docker_entry(archive, ingest, entry, tags)))
    return records


def _stage_docker_entry(archive: _Archive, ingest: Ingest, entry: dict[str, object], tags: tuple[str, ...]) -> ImageRecord:
    config = archive.read(str(entry["Config"]))
    config_digest = ingest.add_bytes(config)
    layers = []
    for layer_name in entry["Layers"]:  # type: ignore[attr-defined]
        with archive.open(str(layer_name)) as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        with ingest.writer(None) as writer:
            archive.copy(str(layer_name), writer)
            size = writer.size
            writer.close()
        digest = ingest.adopt(writer)
        layers.append({"mediaType": OCI_LAYER_GZIP if gzipped else OCI_LAYER, "digest": digest, "size": size})
    manifest_bytes = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": layers,
    }, sort_keys=True).encode()
    manifest_digest = ingest.add_bytes(manifest_bytes)
    manifest = parse_document(manifest_bytes, OCI_MANIFEST)
    assert isinstance(manifest, Manifest)

    def fetch(descriptor: Descriptor, writer: BlobWriter) -> None:
        raise ArchiveError(f"{archive.path}: blob {descriptor.digest} was not staged")  # all are, above

    return stage_image(ingest, manifest, manifest_digest, fetch, repo_tags=tags)
