"""Unpack one image layer (a tar, possibly gzip- or zstd-compressed) into its own directory.

Each layer is unpacked once into a directory of its own, which overlayfs later stacks as a lower
directory. The layer's deletions are OCI whiteouts in the tar, translated here:

- ``dir/.wh.name`` (``name`` was deleted): with ``whiteouts="overlay"`` a character device 0/0
  named ``dir/name``, which is how overlayfs marks a deleted lower entry; with ``"marker"`` the
  ``.wh.name`` file is kept as an empty regular file;
- ``dir/.wh..wh..opq`` (``dir`` hides everything below it): with ``"overlay"`` the
  ``trusted.overlay.opaque=y`` extended attribute on ``dir``; with ``"marker"`` the file is kept;
- other ``.wh..wh.*`` names (AUFS bookkeeping) are dropped.

``"overlay"`` needs root (mknod of a device, ``trusted.*`` xattrs) and is the default as root.
Without root the default is ``"marker"``: the layer keeps OCI's markers, which a consumer that
copies layers into one directory (the ``process`` runtime handler) applies itself; overlayfs
cannot be mounted without root anyway. File owners, devices and ``trusted.*``/``security.*``
xattrs are only applied as root; without root files belong to the caller and device nodes are
skipped (FIFOs are still made).

Invariants:
- nothing is written outside ``dest``: an entry whose path, after resolving ``..`` lexically,
  leaves the layer is refused; no existing symlink is ever followed (a parent that is a symlink
  is refused, files are opened with ``O_NOFOLLOW``, hard-link targets are checked the same way);
  symlinks are created with their targets as data, absolute or not;
- the sha256 of the whole uncompressed stream (the diff_id) is computed while unpacking and
  checked against the image config's; on a mismatch or any error ``dest`` is deleted, so a layer
  directory that exists is complete and verified.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping

__all__ = ["DiffIDMismatch", "LayerError", "Unpacked", "unpack_layer"]

log = logging.getLogger("skiff.images.unpack")

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20


class LayerError(Exception):
    """A layer cannot be unpacked safely; the message names the layer entry and the problem."""


class DiffIDMismatch(LayerError):
    """The uncompressed layer does not hash to the diff_id the image config declares."""


@dataclass(frozen=True)
class Unpacked:
    diff_id: str
    whiteouts: str   # "overlay" or "marker"
    skipped: int     # entries not reproduced (device nodes without root)


class _HashingReader:
    """A file-like reader that hashes every byte handed out (the diff_id of the tar stream)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _decompressed(handle: IO[bytes]) -> IO[bytes]:
    magic = handle.read(4)
    handle.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise LayerError("the layer is zstd-compressed and the Python package 'zstandard' is not installed "
                             "(pip install zstandard, or push the image with gzip layers)") from None
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(handle)
        return reader
    return handle


def unpack_layer(blob: Path, dest: Path, *, expected_diff_id: str | None = None,
                 whiteouts: str | None = None) -> Unpacked:
    """Unpack the layer ``blob`` into the new directory ``dest`` (see the module docstring)."""
    as_root = os.geteuid() == 0
    mode = whiteouts or ("overlay" if as_root else "marker")
    if mode not in ("overlay", "marker"):
        raise ValueError(f"whiteouts must be 'overlay' or 'marker', not {mode!r}")
    if mode == "overlay" and not as_root:
        raise LayerError("overlay whiteouts (0/0 devices, trusted.* xattrs) need root; use whiteouts='marker'")
    dest.mkdir(mode=0o755)
    try:
        with open(blob, "rb") as handle:
            reader = _HashingReader(_decompressed(handle))
            extractor = _Extractor(dest, mode, as_root)
            try:
                with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
                    for member in archive:
                        extractor.add(archive, member)
            except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
                raise LayerError(f"layer {blob.name} could not be unpacked: {err}") from None
            reader.drain()
            extractor.finish()
        diff_id = "sha256:" + reader.hash.hexdigest()
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise DiffIDMismatch(f"layer {blob.name} unpacks to {diff_id}, but the image config says "
                                 f"{expected_diff_id}: the image is corrupt or was tampered with")
        return Unpacked(diff_id=diff_id, whiteouts=mode, skipped=extractor.skipped)
    except BaseException:
        _remove_tree(dest)
        raise


def _clean(name: str) -> str:
    """The entry's path relative to the layer root, ``..`` resolved lexically; "" is the root.
    Raises LayerError when the path would leave the layer."""
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise LayerError(f"layer entry {name!r} escapes the layer directory")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


class _Extractor:
    """Applies tar members one by one under ``root``; directory metadata waits until ``finish``
    so that a read-only directory can still receive its children."""

    def __init__(self, root: Path, whiteouts: str, as_root: bool) -> None:
        self.root, self.whiteouts, self.as_root = root, whiteouts, as_root
        self.dirs: dict[str, tarfile.TarInfo] = {}
        self.skipped = 0

    def add(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        rel = _clean(member.name)
        if not rel:
            return  # the layer root itself keeps 0755
        parent_rel, _, base = rel.rpartition("/")
        parent = self._ensure_parents(parent_rel, member.name)
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base, member)
            return
        path = os.path.join(parent, base)
        self._clear(path, member)
        if member.isdir():
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)
            self.dirs[rel] = member
            return
        if member.isreg():
            self._write_file(archive, member, path)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            os.link(self._link_target(member), path, follow_symlinks=False)
            return  # a hard link shares the target's inode and metadata
        elif member.ischr() or member.isblk():
            if not self.as_root:
                self.skipped += 1
                return
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(path, 0o600)
        else:
            self.skipped += 1
            return
        self._metadata(path, member)

    def finish(self) -> None:
        # Deepest first, so a parent's mtime is set after its children were touched.
        for rel in sorted(self.dirs, key=lambda r: r.count("/"), reverse=True):
            self._metadata(os.path.join(self.root, rel), self.dirs[rel])

    def _ensure_parents(self, parent_rel: str, name: str) -> str:
        current = str(self.root)
        for part in filter(None, parent_rel.split("/")):
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)  # implied parent: Docker's default mode
                continue
            if stat.S_ISLNK(st.st_mode):
                raise LayerError(f"layer entry {name!r} goes through the symlink {os.path.relpath(current, self.root)!r}; refusing to follow it")
            if not stat.S_ISDIR(st.st_mode):
                raise LayerError(f"layer entry {name!r} needs {os.path.relpath(current, self.root)!r} to be a directory")
        return current

    def _whiteout(self, parent: str, base: str, member: tarfile.TarInfo) -> None:
        if base == OPAQUE_MARKER:
            if self.whiteouts == "overlay":
                os.setxattr(parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
                return
        elif base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # AUFS metadata (.wh..wh.plnk, ...), meaningless here
        elif self.whiteouts == "overlay":
            target = os.path.join(parent, base[len(WHITEOUT_PREFIX):])
            self._clear(target, None)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            return
        path = os.path.join(parent, base)
        self._clear(path, member)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))

    def _clear(self, path: str, member: tarfile.TarInfo | None) -> None:
        """Make room for a new entry: a later entry for the same path replaces the earlier one,
        except that a directory stays a directory."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if member is not None and member.isdir():
                return
            _remove_tree(Path(path))
        else:
            os.unlink(path)

    def _write_file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        source = archive.extractfile(member)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            if source is not None:
                shutil.copyfileobj(source, out, _CHUNK)

    def _link_target(self, member: tarfile.TarInfo) -> str:
        target_rel = _clean(member.linkname)
        if not target_rel:
            raise LayerError(f"layer entry {member.name!r} is a hard link to the layer root")
        parent_rel, _, base = target_rel.rpartition("/")
        target = os.path.join(self._ensure_parents(parent_rel, member.linkname), base)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise LayerError(f"layer entry {member.name!r} is a hard link to {member.linkname!r}, "
                             "which is not earlier in the same layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer entry {member.name!r} is a hard link to a directory")
        return target

    def _metadata(self, path: str, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.lchown(path, member.uid, member.gid)
            self._xattrs(path, member)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears setuid bits
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def _xattrs(self, path: str, member: tarfile.TarInfo) -> None:
        headers: Mapping[str, Any] = member.pax_headers
        for key, value in headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(path, name, raw, follow_symlinks=False)
            except OSError as err:
                log.debug("xattr %s on %s not applied: %s", name, path, err)


def _remove_tree(path: Path) -> None:
    if os.path.lexists(path):
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, 0o700)  # before os.walk lists it
            for dirpath, dirnames, _ in os.walk(path):
                for name in dirnames:
                    full = os.path.join(dirpath, name)
                    if not os.path.islink(full):
                        os.chmod(full, 0o700)
            shutil.rmtree(path)
        else:
            path.unlink()
