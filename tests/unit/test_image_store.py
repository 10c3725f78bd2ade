"""The image store: committing staged images, lookups, tags, removal and garbage collection."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from node.runtime.images.manifest import Manifest, parse_document
from node.runtime.images.pull import stage_image
from node.runtime.images.reference import InvalidReference
from node.runtime.images.store import BlobWriter, DigestMismatch, ImageRecord, ImageStore, StoreError
from tests.imagebuild import BuiltImage, OCILayout, directory, file, sha256, tar_layer

BASE = tar_layer([directory("etc"), file("etc/os-release", "ID=skiff\n")])


def layout_with(tmp_path: Path) -> tuple[OCILayout, BuiltImage, BuiltImage]:
    layout = OCILayout(tmp_path / "layout")
    app = layout.add_image([BASE, tar_layer([file("app", "v1")])], config={"User": "1000:1000", "Cmd": ["/app"]})
    other = layout.add_image([BASE, tar_layer([file("other", "o")])])
    return layout, app, other


def commit(store: ImageStore, layout: OCILayout, image: BuiltImage, tags: tuple[str, ...] = (),
           digests: tuple[str, ...] = ()) -> ImageRecord:
    manifest = parse_document(layout.blob(image.digest))
    assert isinstance(manifest, Manifest)
    fetched: list[str] = []

    def fetch(descriptor, writer: BlobWriter) -> None:  # type: ignore[no-untyped-def]
        fetched.append(descriptor.digest)
        writer.write(layout.blob(descriptor.digest))

    with store.ingest() as ingest:
        ingest.add_bytes(layout.blob(image.digest), image.digest)
        record = stage_image(ingest, manifest, image.digest, fetch, repo_tags=tags, repo_digests=digests,
                             whiteouts="marker")
        return store.commit(ingest, record)


def test_commit_and_lookups(tmp_path: Path) -> None:
    layout, app, _ = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    name = "docker.io/library/app"
    record = commit(store, layout, app, tags=(f"{name}:v1",), digests=(f"{name}@{app.digest}",))
    assert record.id == app.config_digest
    assert record.user == "1000:1000" and record.platform == "linux/amd64"
    assert record.diff_ids == app.diff_ids
    assert record.size == sum(la.size for la in record.layers) + record.config_size > 0
    hex_id = record.id.split(":")[1]
    for query in (record.id, hex_id, hex_id[:12], "app:v1", f"{name}:v1", "docker.io/app:v1",
                  f"app@{app.digest}", app.digest):
        assert store.get(query) == record, query
    assert store.get("app") is None  # :latest was never tagged
    assert store.get("nothere:1") is None
    with pytest.raises(InvalidReference):
        store.get("Not A Reference")
    for digest in (record.id, app.digest, *app.layer_digests):
        assert store.has_blob(digest)
    assert [p.name for p in store.layer_paths(record)] == [d.split(":")[1] for d in app.diff_ids]
    assert (store.layer_paths(record)[1] / "app").read_text() == "v1"
    assert store.whiteout_format(record.diff_ids[0]) == "marker"
    assert store.config(record)["config"]["Cmd"] == ["/app"]
    assert list(os.listdir(store.root / "ingest")) == []  # staging is cleaned up


def test_index_survives_reopening(tmp_path: Path) -> None:
    layout, app, _ = layout_with(tmp_path)
    record = commit(ImageStore(tmp_path / "store"), layout, app, tags=("docker.io/library/app:v1",))
    again = ImageStore(tmp_path / "store")
    assert again.list() == [record]
    assert json.loads((tmp_path / "store" / "images.json").read_text())["version"] == 1


def test_second_commit_reuses_content(tmp_path: Path) -> None:
    layout, app, other = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    commit(store, layout, app)
    base_dir = store.layer_path(app.diff_ids[0])
    inode = base_dir.stat().st_ino
    commit(store, layout, other)
    assert base_dir.stat().st_ino == inode  # the shared base layer was not unpacked again


def test_a_tag_moves_to_the_newer_image(tmp_path: Path) -> None:
    layout, app, other = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    first = commit(store, layout, app, tags=("docker.io/library/app:latest", "docker.io/library/app:v1"))
    second = commit(store, layout, other, tags=("docker.io/library/app:latest",))
    assert store.get("app") == second
    assert store.get(first.id) is not None
    assert store.get(first.id).repo_tags == ("docker.io/library/app:v1",)  # type: ignore[union-attr]


def test_recommitting_merges_names(tmp_path: Path) -> None:
    layout, app, _ = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    commit(store, layout, app, tags=("docker.io/library/app:v1",))
    merged = commit(store, layout, app, tags=("localhost:5000/app:v1",), digests=(f"localhost:5000/app@{app.digest}",))
    assert merged.repo_tags == ("docker.io/library/app:v1", "localhost:5000/app:v1")
    assert merged.repo_digests == (f"localhost:5000/app@{app.digest}",)
    assert len(store.list()) == 1


def test_remove_collects_only_unshared_content(tmp_path: Path) -> None:
    layout, app, other = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    a = commit(store, layout, app, tags=("docker.io/library/app:v1",))
    b = commit(store, layout, other, tags=("docker.io/library/other:v1",))
    assert store.remove("app:v1") == a
    assert store.get(a.id) is None and store.list() == [b]
    assert not store.has_blob(a.id) and not store.has_blob(app.layer_digests[1])
    assert not store.has_layer(a.diff_ids[1])
    assert store.has_layer(a.diff_ids[0]) and store.has_blob(app.layer_digests[0])  # shared with other
    assert store.remove("app:v1") is None  # idempotent
    assert store.remove(b.id) == b
    assert os.listdir(store.root / "blobs" / "sha256") == [] and os.listdir(store.root / "layers" / "sha256") == []


def test_a_lease_keeps_content_of_a_removed_image(tmp_path: Path) -> None:
    layout, app, _ = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    record = commit(store, layout, app, tags=("docker.io/library/app:v1",))
    store.lease("ctr-1", record)
    store.remove("app:v1")
    assert store.get(record.id) is None  # the name is gone...
    assert all(p.is_dir() for p in store.layer_paths(record)) and store.has_blob(record.id)  # ...the content stays
    store.gc()
    assert all(p.is_dir() for p in store.layer_paths(record))
    store.release("ctr-1")
    assert not any(p.exists() for p in store.layer_paths(record)) and not store.has_blob(record.id)
    store.release("ctr-1")  # idempotent
    with pytest.raises(StoreError, match="no longer in the store"):
        store.lease("ctr-2", record)
    with pytest.raises(StoreError, match="invalid lease holder"):
        store.lease("../x", record)


def test_digest_mismatch_stores_nothing(tmp_path: Path) -> None:
    layout, app, _ = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    manifest = parse_document(layout.blob(app.digest))
    assert isinstance(manifest, Manifest)

    def tampered(descriptor, writer: BlobWriter) -> None:  # type: ignore[no-untyped-def]
        data = layout.blob(descriptor.digest)
        writer.write(data[:-1] + bytes([data[-1] ^ 1]))

    with pytest.raises(DigestMismatch, match="digest mismatch.*nothing was stored"):
        with store.ingest() as ingest:
            stage_image(ingest, manifest, app.digest, tampered, whiteouts="marker")
    assert store.list() == [] and os.listdir(store.root / "blobs" / "sha256") == []
    assert os.listdir(store.root / "ingest") == []


def test_size_mismatch_is_refused(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    data = b"hello"
    digest = sha256(data)
    with store.ingest() as ingest:
        with pytest.raises(DigestMismatch, match="is 5 bytes, the manifest says 6"):
            with ingest.writer(digest, 6) as writer:
                writer.write(data)
                writer.close()
        assert not ingest.has_blob(digest)


def test_commit_refuses_when_content_vanished(tmp_path: Path) -> None:
    layout, app, _ = layout_with(tmp_path)
    store = ImageStore(tmp_path / "store")
    record = commit(store, layout, app)
    store.remove(record.id)
    with store.ingest() as ingest:  # nothing staged, and the store no longer has it
        with pytest.raises(StoreError, match="vanished before commit.*pull again"):
            store.commit(ingest, record)


def test_gc_removes_abandoned_ingest_areas(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    proc = subprocess.Popen(["true"])  # a PID that has exited (reaped, so not reused meanwhile)
    proc.wait()
    (store.root / "ingest" / f"{proc.pid}-abc").mkdir()
    (store.root / "ingest" / f"{os.getpid()}-live").mkdir()
    store.gc()
    assert os.listdir(store.root / "ingest") == [f"{os.getpid()}-live"]


def test_fs_usage_counts_hard_links_once(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    empty = store.fs_usage()
    (store.root / "blobs" / "sha256" / ("a" * 64)).write_bytes(b"x" * 8192)
    os.link(store.root / "blobs" / "sha256" / ("a" * 64), store.root / "layers" / "sha256" / "link")
    usage = store.fs_usage()
    assert usage.inodes == empty.inodes + 1
    assert usage.bytes >= empty.bytes + 8192


def test_corrupt_index_is_a_clear_error(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    (store.root / "images.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt.*move it away"):
        store.list()
