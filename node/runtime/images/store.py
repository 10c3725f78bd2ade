"""The image store: content-addressed blobs, unpacked layers and an index of images, on disk.

Layout under ``root``::

    blobs/sha256/<hex>         manifests, configs, indexes and compressed layers, by digest
    layers/sha256/<hex>/       one unpacked layer per diff_id (overlayfs lower directories)
    images.json                the index: every image and how its layers' whiteouts are stored
    ingest/<pid>-<random>/     staging areas of pulls and imports in progress
    leases/<holder>.json       content kept for a user (a container) even if its image is removed
    lock                       flock(2) lock serializing commits, removals and collection

An image is identified by its *image ID*, the digest of its config (as containerd and Docker do).
It carries its manifest digest, its layers (compressed digest, media type, size, diff_id), its
repo tags (``docker.io/library/busybox:latest``) and repo digests (``name@<manifest or index
digest>``).

Invariants:
- a blob file's sha256 is its name: blobs are written into an ingest area, verified, and only
  then renamed into ``blobs/``; a layer directory is complete: it is unpacked in an ingest area
  and renamed into ``layers/`` by ``commit``;
- ``images.json`` is replaced atomically (write, fsync, rename), so a reader never sees half of
  it; commits, removals and garbage collection hold the lock, so the index and the content are
  consistent for anyone holding it;
- every blob and layer an image in the index or a lease names is present; content neither names
  is garbage, collected by ``remove``, ``release`` and ``gc`` (so removing an image a running
  container uses cannot pull its overlayfs lower directories away, as long as the container
  holds a lease);
- a repo tag names at most one image: committing an image with a tag takes the tag away from any
  other image (which stays, reachable by its ID and repo digests).

A pull that stages content while a concurrent removal collects the same layer finds it missing
at commit and gets a ``StoreError`` saying to retry; nothing half-written becomes visible.
"""
from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from node.runtime.images.records import ImageRecord, LayerRecord
from node.runtime.images.reference import InvalidReference, parse

__all__ = ["BlobWriter", "DigestMismatch", "ImageRecord", "ImageStore", "Ingest", "LayerRecord", "StoreError", "Usage"]

INDEX_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX_PREFIX = re.compile(r"[0-9a-f]{3,63}\Z")
_HOLDER = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")


class StoreError(Exception):
    """The store cannot do what was asked; the message says why and what to do."""


class DigestMismatch(StoreError):
    """Content did not hash to the digest it was announced with (it was not stored)."""


@dataclass(frozen=True)
class Usage:
    bytes: int
    inodes: int


@dataclass
class _Index:
    images: list[ImageRecord] = field(default_factory=list)
    whiteouts: dict[str, str] = field(default_factory=dict)  # diff_id -> "overlay" | "marker"


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or not _HEX64.match(value):
        raise StoreError(f"unsupported digest {digest!r}: the store keeps sha256 content only")
    return value


class BlobWriter:
    """Streams one blob into an ingest area, hashing as it goes; ``close`` verifies the digest.

    On a mismatch (or any error inside the ``with``), the partial file is deleted.
    """

    def __init__(self, path: Path, expected: str | None, expected_size: int | None = None) -> None:
        self.path, self.expected, self.expected_size = path, expected, expected_size
        self._hash = hashlib.sha256()
        self._size = 0
        self._file = open(path, "wb")
        self.digest = ""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)
        self._file.write(chunk)

    def close(self) -> str:
        self._file.close()
        self.digest = "sha256:" + self._hash.hexdigest()
        problem = None
        if self.expected is not None and self.digest != self.expected:
            problem = f"content announced as {self.expected} hashes to {self.digest}"
        elif self.expected_size is not None and self._size != self.expected_size:
            problem = f"{self.expected} is {self._size} bytes, the manifest says {self.expected_size}"
        if problem:
            self.path.unlink(missing_ok=True)
            raise DigestMismatch(f"digest mismatch: {problem}; nothing was stored")
        return self.digest

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._file.close()
            self.path.unlink(missing_ok=True)
        elif not self.digest:
            self.close()


class Ingest:
    """A staging area: blobs and unpacked layers of one pull or import, not yet in the store."""

    def __init__(self, store: ImageStore, directory: Path) -> None:
        self.store, self.dir = store, directory
        (directory / "blobs").mkdir(parents=True)
        (directory / "layers").mkdir()
        self.whiteouts: dict[str, str] = {}

    def _staged_blob(self, digest: str) -> Path:
        return self.dir / "blobs" / _hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self._staged_blob(digest).exists() or self.store.has_blob(digest)

    def blob_path(self, digest: str) -> Path:
        """Where to read a blob from: the staged copy, else the store's."""
        staged = self._staged_blob(digest)
        return staged if staged.exists() else self.store.blob_path(digest)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def writer(self, expected: str | None, expected_size: int | None = None) -> BlobWriter:
        """A writer for a blob; with ``expected=None`` the digest is learned at close (then
        call ``adopt`` to file it under that digest)."""
        name = _hex(expected) if expected else f"unnamed-{secrets.token_hex(8)}"
        return BlobWriter(self.dir / "blobs" / name, expected, expected_size)

    def adopt(self, writer: BlobWriter) -> str:
        """File a blob written with an unknown digest under the digest it hashed to."""
        os.replace(writer.path, self._staged_blob(writer.digest))
        return writer.digest

    def add_bytes(self, data: bytes, expected: str | None = None) -> str:
        with self.writer(expected, len(data) if expected else None) as w:
            w.write(data)
            w.close()
        return self.adopt(w) if expected is None else w.digest

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_dir(diff_id).exists() or self.store.has_layer(diff_id)

    def layer_dir(self, diff_id: str) -> Path:
        """Where to unpack a layer that the store does not have yet."""
        return self.dir / "layers" / _hex(diff_id)


class ImageStore:
    """Images on disk under ``root`` (see the module docstring for layout and invariants)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in ("blobs/sha256", "layers/sha256", "ingest", "leases"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[ImageRecord]:
        return list(self._read().images)

    def get(self, ref_or_id: str) -> ImageRecord | None:
        """The image named by an ID (``sha256:<hex>``, ``<hex>`` or a unique ID prefix), a repo
        tag or a repo digest, in any form ``parse`` accepts; None when the store lacks it."""
        return _find(self._read().images, ref_or_id)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_path(diff_id).is_dir()

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / "sha256" / _hex(diff_id)

    def layer_paths(self, image: ImageRecord) -> builtins.list[Path]:
        """The image's unpacked layers, bottom first (overlayfs wants them top first)."""
        return [self.layer_path(d) for d in image.diff_ids]

    def whiteout_format(self, diff_id: str) -> str:
        """How a layer's deletions are stored: "overlay" (0/0 char devices and the opaque
        xattr, what overlayfs reads) or "marker" (the OCI ``.wh.`` files, kept as they are)."""
        return self._read().whiteouts.get(diff_id, "overlay")

    def config(self, image: ImageRecord) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.read_blob(image.id))
        return loaded

    def fs_usage(self) -> Usage:
        """Bytes (allocated blocks) and inodes used under the root, hard links counted once."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in (*dirnames, *filenames):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        return Usage(bytes=total, inodes=len(seen))

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def ingest(self) -> Iterator[Ingest]:
        """A staging area, deleted on exit (committed content has been moved out of it)."""
        directory = self.root / "ingest" / f"{os.getpid()}-{secrets.token_hex(6)}"
        try:
            yield Ingest(self, directory)
        finally:
            _rmtree(directory)

    def commit(self, ingest: Ingest, image: ImageRecord) -> ImageRecord:
        """Move the image's staged content into the store and record it; return the record as
        stored (tags and digests merged with an earlier record of the same ID)."""
        with self._locked():
            index = self._read()
            missing = [d for d in sorted(image.blobs) if not ingest.has_blob(d)]
            missing += [d for d in image.diff_ids if not ingest.has_layer(d)]
            if missing:
                raise StoreError(f"content of {image.id} vanished before commit ({', '.join(missing)}); "
                                 "an image was removed at the same time: pull again")
            for digest in sorted(image.blobs):
                staged = ingest._staged_blob(digest)
                if staged.exists() and not self.has_blob(digest):
                    os.replace(staged, self.blob_path(digest))
            for diff_id in image.diff_ids:
                staged_dir = ingest.layer_dir(diff_id)
                if staged_dir.exists() and not self.has_layer(diff_id):
                    os.rename(staged_dir, self.layer_path(diff_id))
                    index.whiteouts[diff_id] = ingest.whiteouts.get(diff_id, "overlay")
            stored = _merge(index, image)
            self._write(index)
            return stored

    def remove(self, ref_or_id: str) -> ImageRecord | None:
        """Remove the image (all its tags and digests, as CRI's RemoveImage does) and collect
        content no other image uses. Returns what was removed; None if it was absent."""
        with self._locked():
            index = self._read()
            image = _find(index.images, ref_or_id)
            if image is None:
                return None
            index.images = [i for i in index.images if i.id != image.id]
            self._write(index)
            self._collect(index)
            return image

    def lease(self, holder: str, image: ImageRecord) -> None:
        """Keep the image's content while ``holder`` (e.g. a container ID) uses it: removing the
        image then drops its names but leaves its blobs and layers until ``release(holder)``."""
        if not _HOLDER.match(holder):
            raise StoreError(f"invalid lease holder {holder!r}: use letters, digits, '.', '_' and '-'")
        with self._locked():
            missing = [d for d in image.diff_ids if not self.has_layer(d)]
            if missing:
                raise StoreError(f"image {image.id} is no longer in the store (layer {missing[0]} is gone)")
            lease = {"blobs": sorted(image.blobs), "layers": list(image.diff_ids)}
            _write_atomically(self.root / "leases" / f"{holder}.json", json.dumps(lease).encode())

    def release(self, holder: str) -> None:
        """End ``holder``'s lease and collect what only it kept (idempotent)."""
        with self._locked():
            (self.root / "leases" / f"{holder}.json").unlink(missing_ok=True)
            self._collect(self._read())

    def gc(self) -> tuple[int, int]:
        """Collect unreferenced blobs and layers and abandoned ingest areas; (blobs, layers) removed."""
        with self._locked():
            return self._collect(self._read())

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A fresh open file description per holder: flock then excludes other threads too.
        with open(self.root / "lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> _Index:
        try:
            raw = json.loads((self.root / "images.json").read_text())
        except FileNotFoundError:
            return _Index()
        except json.JSONDecodeError as err:
            raise StoreError(f"{self.root / 'images.json'} is corrupt ({err}); move it away to start an empty store") from None
        if raw.get("version") != INDEX_VERSION:
            raise StoreError(f"{self.root / 'images.json'} has version {raw.get('version')}, this skiff reads {INDEX_VERSION}")
        return _Index([ImageRecord.from_json(i) for i in raw.get("images", [])], dict(raw.get("whiteouts", {})))

    def _write(self, index: _Index) -> None:
        data = {"version": INDEX_VERSION, "images": [i.to_json() for i in index.images], "whiteouts": index.whiteouts}
        _write_atomically(self.root / "images.json", json.dumps(data, indent=1, sort_keys=True).encode())

    def _leased(self) -> tuple[set[str], set[str]]:
        blobs: set[str] = set()
        layers: set[str] = set()
        for path in (self.root / "leases").glob("*.json"):
            lease = json.loads(path.read_bytes())
            blobs.update(_hex(d) for d in lease["blobs"])
            layers.update(_hex(d) for d in lease["layers"])
        return blobs, layers

    def _collect(self, index: _Index) -> tuple[int, int]:
        used_blobs, used_layers = self._leased()
        used_blobs.update(_hex(d) for image in index.images for d in image.blobs)
        used_layers.update(_hex(d) for image in index.images for d in image.diff_ids)
        blobs = layers = 0
        for path in (self.root / "blobs" / "sha256").iterdir():
            if path.name not in used_blobs:
                path.unlink(missing_ok=True)
                blobs += 1
        for path in (self.root / "layers" / "sha256").iterdir():
            if path.name not in used_layers:
                _rmtree(path)
                layers += 1
        stale = [d for d in index.whiteouts if _hex(d) not in used_layers]
        if stale:
            for d in stale:
                del index.whiteouts[d]
            self._write(index)
        for path in (self.root / "ingest").iterdir():
            if not _pid_alive(path.name.partition("-")[0]):
                _rmtree(path)
        return blobs, layers


def _merge(index: _Index, image: ImageRecord) -> ImageRecord:
    """Add or update ``image`` in the index, moving its tags off other images."""
    tags = set(image.repo_tags)
    for i, other in enumerate(index.images):
        if other.id != image.id and tags.intersection(other.repo_tags):
            index.images[i] = replace(other, repo_tags=tuple(t for t in other.repo_tags if t not in tags))
    existing = next((i for i, other in enumerate(index.images) if other.id == image.id), None)
    if existing is None:
        index.images.append(image)
        return image
    old = index.images[existing]
    merged = replace(image,
                     repo_tags=tuple(dict.fromkeys((*old.repo_tags, *image.repo_tags))),
                     repo_digests=tuple(dict.fromkeys((*old.repo_digests, *image.repo_digests))))
    index.images[existing] = merged
    return merged


def _find(images: list[ImageRecord], text: str) -> ImageRecord | None:
    by_id = {image.id: image for image in images}
    if text in by_id:
        return by_id[text]
    if _HEX64.match(text):
        return by_id.get(f"sha256:{text}")
    if text.startswith("sha256:"):
        # A manifest or index digest on its own: the image it belongs to.
        return next((i for i in images if text in (i.manifest_digest, i.index_digest)), None)
    try:
        ref = parse(text)
    except InvalidReference:
        ref = None
    if ref is not None:
        key = f"{ref.name}@{ref.digest}" if ref.digest else str(ref)
        for image in images:
            if key in image.repo_tags or key in image.repo_digests:
                return image
            if ref.digest and ref.digest in (image.manifest_digest, image.index_digest) and ref.name in _names(image):
                return image
    if _HEX_PREFIX.match(text):
        matches = [i for i in images if i.id.removeprefix("sha256:").startswith(text)]
        if len(matches) == 1:
            return matches[0]
    if ref is None:
        raise InvalidReference(f"{text!r} is neither an image ID nor an image reference")
    return None


def _names(image: ImageRecord) -> set[str]:
    return {t.rpartition(":")[0] for t in image.repo_tags} | {d.partition("@")[0] for d in image.repo_digests}


def _write_atomically(path: Path, data: bytes) -> None:
    """Write, fsync, rename over ``path``, fsync the directory: readers see old or new, whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _pid_alive(text: str) -> bool:
    if not text.isdigit():
        return False
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmtree(path: Path) -> None:
    """Remove a tree even where unpacked layers left directories without write permission."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    if os.geteuid() != 0:
        # Directories are made searchable and writable before os.walk descends into them.
        _add_owner_rwx(str(path))
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                _add_owner_rwx(os.path.join(dirpath, name))
    shutil.rmtree(path)


def _add_owner_rwx(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(path, st.st_mode | stat.S_IRWXU)
