"""Layer unpacking: contents and metadata, whiteouts, opaque directories, path escapes, hard
links and the diff_id check."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from node.runtime.images.unpack import OPAQUE_XATTR, DiffIDMismatch, LayerError, unpack_layer
from tests.imagebuild import (
    MTIME, Entry, directory, file, gzip_bytes, hardlink, opaque, sha256, symlink, tar_layer, whiteout,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="overlay whiteouts (0/0 devices, trusted.* xattrs) need root")


def unpack(tmp_path: Path, entries: list[Entry], *, compress: bool = False, **kw: object):
    data = tar_layer(entries)
    blob = tmp_path / "blob"
    blob.write_bytes(gzip_bytes(data) if compress else data)
    dest = tmp_path / "layer"
    return unpack_layer(blob, dest, **kw), dest, sha256(data)  # type: ignore[arg-type]


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
def test_contents_and_metadata(tmp_path: Path, compress: bool) -> None:
    result, dest, diff_id = unpack(tmp_path, [
        directory("etc"), file("etc/motd", "hi\n"), file("bin/tool", b"\x7fELF", 0o4755),
        symlink("etc/abs", "/etc/motd"), symlink("rel", "etc/motd"), directory("ro", 0o555), file("ro/f", "x"),
    ], compress=compress, whiteouts="marker")
    assert result.diff_id == diff_id  # the uncompressed stream's sha256, compressed or not
    assert (dest / "etc/motd").read_text() == "hi\n"
    assert stat.S_IMODE(os.stat(dest / "bin/tool").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "bin").st_mode) == 0o755  # implied parent
    assert os.readlink(dest / "etc/abs") == "/etc/motd"  # absolute target kept as data
    assert os.readlink(dest / "rel") == "etc/motd"
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555  # applied after its child
    assert (dest / "ro/f").read_text() == "x"
    assert os.stat(dest / "etc/motd").st_mtime == MTIME
    assert os.lstat(dest / "etc").st_mtime == MTIME


def test_later_entries_replace_earlier(tmp_path: Path) -> None:
    _, dest, _ = unpack(tmp_path, [
        file("a", "one"), file("a", "two"), directory("d"), file("d/x"), file("d", "now a file"),
        symlink("s", "a"), file("s", "plain"),
    ], whiteouts="marker")
    assert (dest / "a").read_text() == "two"
    assert (dest / "d").read_text() == "now a file"
    assert not (dest / "s").is_symlink() and (dest / "s").read_text() == "plain"


def test_marker_whiteouts_are_kept_as_files(tmp_path: Path) -> None:
    result, dest, _ = unpack(tmp_path, [
        directory("etc"), whiteout("etc/gone"), opaque("var"), file("var/keep", "k"), file(".wh..wh.plnk"),
    ], whiteouts="marker")
    assert result.whiteouts == "marker"
    assert (dest / "etc/.wh.gone").is_file() and (dest / "etc/.wh.gone").stat().st_size == 0
    assert (dest / "var/.wh..wh..opq").is_file()
    assert not (dest / ".wh..wh.plnk").exists()  # AUFS bookkeeping is dropped
    assert not (dest / "etc/gone").exists()


@needs_root
def test_overlay_whiteouts(tmp_path: Path) -> None:
    result, dest, _ = unpack(tmp_path, [directory("etc"), whiteout("etc/gone"), opaque("var"), file("var/keep")],
                             whiteouts="overlay")
    assert result.whiteouts == "overlay"
    st = os.lstat(dest / "etc/gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (dest / "etc/.wh.gone").exists()
    assert os.getxattr(dest / "var", OPAQUE_XATTR) == b"y"
    assert not (dest / "var/.wh..wh..opq").exists()


@needs_root
def test_overlayfs_reads_our_whiteouts(tmp_path: Path) -> None:
    """Stacked with a real overlayfs mount, deletions and opaque directories take effect."""
    lower = tmp_path / "lower.tar"
    lower.write_bytes(tar_layer([file("a", "A"), file("b", "B"), directory("d"), file("d/old", "old")]))
    upper = tmp_path / "upper.tar"
    upper.write_bytes(tar_layer([whiteout("a"), opaque("d"), file("d/new", "new")]))
    l1, l2 = tmp_path / "l1", tmp_path / "l2"
    unpack_layer(lower, l1, whiteouts="overlay")
    unpack_layer(upper, l2, whiteouts="overlay")
    merged = tmp_path / "merged"
    merged.mkdir()
    mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={l2}:{l1}", str(merged)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"overlayfs mount not available here: {mount.stderr.strip()}")
    try:
        assert sorted(os.listdir(merged)) == ["b", "d"]
        assert os.listdir(merged / "d") == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../evil"])
def test_paths_escaping_the_layer_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(LayerError, match="escapes the layer directory"):
        unpack(tmp_path, [directory("a"), file(name, "x")], whiteouts="marker")
    assert not (tmp_path / "layer").exists()  # nothing half-unpacked is left
    assert not (tmp_path / "evil").exists()


def test_absolute_and_dotted_names_stay_inside(tmp_path: Path) -> None:
    _, dest, _ = unpack(tmp_path, [file("/abs", "1"), file("a/../b", "2"), file("./c", "3")], whiteouts="marker")
    assert sorted(os.listdir(dest)) == ["abs", "b", "c"]  # "a/../b" is "b"


@pytest.mark.parametrize("target", ["/", "../../..", "OUTSIDE"])
def test_symlinks_are_never_followed(tmp_path: Path, target: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(LayerError, match="goes through the symlink"):
        unpack(tmp_path, [symlink("link", str(outside) if target == "OUTSIDE" else target), file("link/pwned", "x")],
               whiteouts="marker")
    assert os.listdir(outside) == []
    assert not (tmp_path / "layer").exists()


def test_hard_links(tmp_path: Path) -> None:
    _, dest, _ = unpack(tmp_path, [file("bin/busybox", "bb", 0o755), hardlink("bin/sh", "bin/busybox"),
                                   hardlink("ls", "./bin/busybox")], whiteouts="marker")
    assert os.stat(dest / "bin/sh").st_ino == os.stat(dest / "bin/busybox").st_ino
    assert os.stat(dest / "ls").st_nlink == 3
    assert (dest / "bin/sh").read_text() == "bb"


@pytest.mark.parametrize(("entries", "says"), [
    ([hardlink("x", "../../etc/passwd")], "escapes"),
    ([hardlink("x", "missing")], "not earlier in the same layer"),
    ([symlink("s", "/etc"), hardlink("x", "s/passwd")], "goes through the symlink"),
    ([directory("d"), hardlink("x", "d")], "to a directory"),
])
def test_bad_hard_links_are_refused(tmp_path: Path, entries: list[Entry], says: str) -> None:
    with pytest.raises(LayerError, match=says):
        unpack(tmp_path, entries, whiteouts="marker")


def test_diff_id_mismatch_removes_the_layer(tmp_path: Path) -> None:
    with pytest.raises(DiffIDMismatch, match="the image config says"):
        unpack(tmp_path, [file("a", "x")], compress=True, expected_diff_id="sha256:" + "0" * 64, whiteouts="marker")
    assert not (tmp_path / "layer").exists()


def test_diff_id_match(tmp_path: Path) -> None:
    data = tar_layer([file("a", "x")])
    (tmp_path / "blob").write_bytes(gzip_bytes(data))
    result = unpack_layer(tmp_path / "blob", tmp_path / "layer", expected_diff_id=sha256(data), whiteouts="marker")
    assert result.diff_id == sha256(data)


def test_corrupt_layer(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(gzip_bytes(tar_layer([file("a", "x" * 10000)]))[:-100])
    with pytest.raises(LayerError, match="could not be unpacked"):
        unpack_layer(tmp_path / "blob", tmp_path / "layer", whiteouts="marker")
    assert not (tmp_path / "layer").exists()


def test_zstd_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import zstandard  # type: ignore[import-not-found]  # noqa: F401
        pytest.skip("zstandard is installed; the error path cannot be reached")
    except ImportError:
        pass
    (tmp_path / "blob").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    with pytest.raises(LayerError, match="zstd-compressed.*zstandard"):
        unpack_layer(tmp_path / "blob", tmp_path / "layer", whiteouts="marker")


def test_overlay_whiteouts_need_root(tmp_path: Path) -> None:
    if ROOT:
        pytest.skip("runs as root: overlay whiteouts are allowed")
    (tmp_path / "blob").write_bytes(tar_layer([file("a")]))
    with pytest.raises(LayerError, match="need root"):
        unpack_layer(tmp_path / "blob", tmp_path / "layer", whiteouts="overlay")


@needs_root
def test_owners_devices_and_xattrs_as_root(tmp_path: Path) -> None:
    _, dest, _ = unpack(tmp_path, [
        file("owned", "x", 0o4750, uid=1000, gid=1001), Entry("dev/null", "char", mode=0o666),
        file("cap", "x", 0o755, xattrs={"user.skiff": "yes"}),
    ], whiteouts="overlay")
    st = os.stat(dest / "owned")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o4750)  # setuid survives chown
    assert stat.S_ISCHR(os.lstat(dest / "dev/null").st_mode)
    try:
        assert os.getxattr(dest / "cap", "user.skiff") == b"yes"
    except OSError:
        pytest.skip("this filesystem has no user xattrs")


def test_without_root_markers_are_the_default_and_devices_are_skipped(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The non-root code path (as seen by the unpacker; real permissions are still root's here)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result, dest, _ = unpack(tmp_path, [
        whiteout("gone"), Entry("dev/null", "char", mode=0o666), Entry("fifo", "fifo", mode=0o600),
        file("owned", "x", uid=4242, gid=4242),
    ])
    assert result.whiteouts == "marker" and result.skipped == 1
    assert (dest / ".wh.gone").is_file() and not (dest / "dev/null").exists()
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert os.stat(dest / "owned").st_uid == os.getuid()  # owners are not applied
