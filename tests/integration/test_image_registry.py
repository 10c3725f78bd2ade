"""Pulling through the CRI ImageService, over a real grpc.aio server on a unix socket, from a
real local registry (Debian's docker-registry); the bearer-token flow against a small fake
registry; importing OCI and docker-save archives."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import AsyncIterator, Iterator

import grpc
import pytest

from node.runtime.images.importer import import_archive
from node.runtime.images.manifest import Platform
from node.runtime.images.pull import Puller
from node.runtime.images.registry import RegistryClient, RegistryConfig
from node.runtime.images.service import ImageServicer
from node.runtime.images.store import ImageStore
from protos.cri.runtime.v1 import api_pb2, api_pb2_grpc
from tests.imagebuild import (
    LocalRegistry, OCILayout, build_busybox_oci, docker_save_archive, file, oci_archive, tar_layer,
)

AMD64 = Platform("linux", "amd64")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if not LocalRegistry.available():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    return build_busybox_oci(tmp_path_factory.mktemp("layouts") / "busybox", "1.0")


@contextlib.asynccontextmanager
async def image_service(store: ImageStore, platform: Platform = AMD64) -> AsyncIterator[api_pb2_grpc.ImageServiceStub]:
    """The ImageService on a grpc.aio server listening on a unix socket; a stub connected to it."""
    sock_dir = tempfile.mkdtemp(prefix="skiff-cri-", dir="/tmp")  # unix socket paths are short
    address = f"unix://{sock_dir}/cri.sock"
    server = grpc.aio.server()
    ImageServicer(store, Puller(store, RegistryClient(RegistryConfig(platform=platform)))).add_to_server(server)
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield api_pb2_grpc.ImageServiceStub(channel)
    finally:
        await server.stop(None)
        shutil.rmtree(sock_dir, ignore_errors=True)


def spec(image: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=image)


async def pull(stub: api_pb2_grpc.ImageServiceStub, image: str, **auth: str) -> str:
    request = api_pb2.PullImageRequest(image=spec(image), auth=api_pb2.AuthConfig(**auth))
    response = await stub.PullImage(request, timeout=60)
    return str(response.image_ref)


async def pull_error(stub: api_pb2_grpc.ImageServiceStub, image: str, **auth: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await pull(stub, image, **auth)
    return info.value


def config_digest(layout: Path, ref_name: str) -> str:
    lay = OCILayout(layout)
    return str(json.loads(lay.blob(lay.named(ref_name)["digest"]))["config"]["digest"])


def test_pull_by_tag_and_by_digest(tmp_path: Path, registry: LocalRegistry, busybox: Path) -> None:
    manifest_digest = registry.push(busybox, "1.0", "library/busybox", "1.0")
    name = f"{registry.host}/library/busybox"
    store = ImageStore(tmp_path / "store")

    async def scenario() -> None:
        async with image_service(store) as stub:
            image_id = await pull(stub, f"{name}:1.0")
            assert image_id == config_digest(busybox, "1.0")  # image_ref is the image ID, as containerd's
            status = (await stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(f"{name}:1.0")))).image
            assert status.id == image_id
            assert list(status.repo_tags) == [f"{name}:1.0"]
            assert list(status.repo_digests) == [f"{name}@{manifest_digest}"]
            assert status.size > 0 and not status.HasField("uid") and status.username == ""
            assert await pull(stub, f"{name}@{manifest_digest}") == image_id
            listed = (await stub.ListImages(api_pb2.ListImagesRequest())).images
            assert [i.id for i in listed] == [image_id]
            by_id = await stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(image_id)))
            assert by_id.image.id == image_id

    asyncio.run(scenario())
    record = store.get(f"{name}:1.0")
    assert record is not None
    rootfs = store.layer_paths(record)[0]
    assert os.access(rootfs / "bin" / "busybox", os.X_OK) and os.readlink(rootfs / "bin" / "sh") == "busybox"


def two_platform_layout(path: Path) -> tuple[Path, dict[str, str]]:
    layout = OCILayout(path)
    ids = {}
    for arch in ("arm64", "amd64"):
        image = layout.add_image([tar_layer([file("arch", arch)])], architecture=arch)
        ids[arch] = image
    index = layout.add_index([ids["arm64"], ids["amd64"]], ref_name="multi")
    return path, {"index": index["digest"], **{a: i.config_digest for a, i in ids.items()}}


def test_index_with_two_platforms_picks_ours(tmp_path: Path, registry: LocalRegistry) -> None:
    layout, digests = two_platform_layout(tmp_path / "multi")
    assert registry.push(layout, "multi", "team/multi", "v1") == digests["index"]
    name = f"{registry.host}/team/multi"

    async def scenario(platform: Platform, store: ImageStore) -> str:
        async with image_service(store, platform) as stub:
            image_id = await pull(stub, f"{name}:v1")
            status = (await stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(image_id)))).image
            assert list(status.repo_digests) == [f"{name}@{digests['index']}"]  # the digest the tag names
            return image_id

    amd = ImageStore(tmp_path / "amd64")
    assert asyncio.run(scenario(AMD64, amd)) == digests["amd64"]
    assert (amd.layer_paths(amd.get(digests["amd64"]))[0] / "arch").read_text() == "amd64"  # type: ignore[arg-type]
    assert asyncio.run(scenario(Platform("linux", "arm64", "v8"), ImageStore(tmp_path / "arm64"))) == digests["arm64"]

    async def absent() -> None:
        async with image_service(ImageStore(tmp_path / "s390x"), Platform("linux", "s390x")) as stub:
            err = await pull_error(stub, f"{name}:v1")
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no manifest for linux/s390x" in str(err.details()) and "linux/amd64, linux/arm64" in str(err.details())

    asyncio.run(absent())


def test_list_status_remove_and_fs_info(tmp_path: Path, registry: LocalRegistry, busybox: Path) -> None:
    registry.push(busybox, "1.0", "library/busybox", "rm-me")
    ref = f"{registry.host}/library/busybox:rm-me"
    store = ImageStore(tmp_path / "store")

    async def scenario() -> None:
        async with image_service(store) as stub:
            image_id = await pull(stub, ref)
            verbose = await stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(ref), verbose=True))
            info = json.loads(verbose.info["info"])
            assert info["imageSpec"]["config"]["Cmd"] == ["sh"] and info["diffIDs"]
            fs = (await stub.ImageFsInfo(api_pb2.ImageFsInfoRequest())).image_filesystems[0]
            assert fs.used_bytes.value > 1_000_000 and fs.inodes_used.value > 100 and fs.timestamp > 0
            assert fs.fs_id.mountpoint == str(store.root)
            filtered = await stub.ListImages(api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec(image_id[7:19]))))
            assert [i.id for i in filtered.images] == [image_id]
            await stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec(ref)))
            gone = await stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec(image_id)))
            assert not gone.HasField("image")
            await stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec(ref)))  # idempotent
            assert list((await stub.ListImages(api_pb2.ListImagesRequest())).images) == []
            with pytest.raises(grpc.aio.AioRpcError) as info_err:
                await stub.ImageStatus(api_pb2.ImageStatusRequest(image=spec("Bad Name")))
            assert info_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())
    assert os.listdir(store.root / "blobs" / "sha256") == [] and os.listdir(store.root / "layers" / "sha256") == []


def test_tampered_blob_is_a_digest_mismatch_and_nothing_is_stored(tmp_path: Path, registry: LocalRegistry) -> None:
    layout = OCILayout(tmp_path / "layout")
    image = layout.add_image([tar_layer([file("payload", "x" * 4096)])], ref_name="t")
    registry.push(layout.path, "t", "team/tampered", "v1")
    blob = registry.blob_file(image.layer_digests[0])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    manifest = layout.add_image([tar_layer([file("other", "y")])], ref_name="f")
    registry.push(layout.path, "f", "team/forged", "v1")
    stored = registry.blob_file(manifest.digest)
    stored.write_bytes(stored.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    store = ImageStore(tmp_path / "store")

    async def scenario() -> None:
        async with image_service(store) as stub:
            err = await pull_error(stub, f"{registry.host}/team/tampered:v1")
            assert err.code() == grpc.StatusCode.DATA_LOSS
            assert "digest mismatch" in str(err.details()) and image.layer_digests[0] in str(err.details())
            missing = await pull_error(stub, f"{registry.host}/team/tampered:nope")
            assert missing.code() == grpc.StatusCode.NOT_FOUND and "MANIFEST_UNKNOWN" in str(missing.details())
            bad = await pull_error(stub, "team/UPPER:v1")
            assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
            for target in ("v1", manifest.digest):
                forged = await pull_error(stub, f"{registry.host}/team/forged{'@' if ':' in target else ':'}{target}")
                assert forged.code() == grpc.StatusCode.DATA_LOSS and "digest mismatch" in str(forged.details())

    asyncio.run(scenario())
    assert store.list() == []
    assert os.listdir(store.root / "blobs" / "sha256") == [] and os.listdir(store.root / "ingest") == []


class FakeTokenRegistry:
    """A registry that serves an OCI layout only to bearer tokens from its own token endpoint,
    which grants them to user ``alice`` with password ``s3cret``."""

    TOKEN = "t0k3n"

    def __init__(self, layout: Path) -> None:
        self.layout = OCILayout(layout)
        self.log: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTokenRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        auth = req.headers.get("Authorization", "")
        self.log.append(f"{req.path.split('?')[0]} {auth.split(' ')[0] or '-'}")
        if req.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()
            if auth != expected or "scope=repository%3Ateam%2Fprivate%3Apull" not in req.path:
                return self.reply(req, 401, b'{"errors":[{"code":"DENIED"}]}')
            return self.reply(req, 200, json.dumps({"token": self.TOKEN}).encode())
        if auth != f"Bearer {self.TOKEN}":
            challenge = (f'Bearer realm="http://{self.host}/token",service="fake",'
                         'scope="repository:team/private:pull"')
            return self.reply(req, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
        match = re.fullmatch(r"/v2/team/private/(manifests|blobs)/(.+)", req.path)
        if match is None:
            return self.reply(req, 404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        kind, target = match.groups()
        digest = target if target.startswith("sha256:") else self.layout.named(target)["digest"]
        data = self.layout.blob(digest)
        headers = {"Docker-Content-Digest": digest}
        if kind == "manifests":
            headers["Content-Type"] = json.loads(data)["mediaType"]
        self.reply(req, 200, data, headers)

    @staticmethod
    def reply(req: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        req.send_response(status)
        for key, value in (headers or {}).items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)


def test_bearer_token_flow(tmp_path: Path) -> None:
    layout = OCILayout(tmp_path / "layout")
    image = layout.add_image([tar_layer([file("secret", "s")]), tar_layer([file("more", "m")])], ref_name="v1")
    store = ImageStore(tmp_path / "store")

    async def scenario(fake: FakeTokenRegistry) -> None:
        async with image_service(store) as stub:
            anonymous = await pull_error(stub, f"{fake.host}/team/private:v1")
            assert anonymous.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "check the credentials" in str(anonymous.details())
            wrong = await pull_error(stub, f"{fake.host}/team/private:v1", username="alice", password="nope")
            assert wrong.code() == grpc.StatusCode.PERMISSION_DENIED
            fake.log.clear()
            auth = base64.b64encode(b"alice:s3cret").decode()
            assert await pull(stub, f"{fake.host}/team/private:v1", auth=auth) == image.config_digest

    with FakeTokenRegistry(layout.path) as fake:
        asyncio.run(scenario(fake))
    # challenged once, one token fetched, then every request carries the cached token
    assert fake.log[:3] == ["/v2/team/private/manifests/v1 -", "/token Basic", "/v2/team/private/manifests/v1 Bearer"]
    assert fake.log.count("/token Basic") == 1
    assert all(line.endswith("Bearer") for line in fake.log[3:]) and len(fake.log) == 6  # + config + 2 layers


def test_import_oci_archive(tmp_path: Path, busybox: Path) -> None:
    store = ImageStore(tmp_path / "store")
    records = import_archive(store, oci_archive(busybox, tmp_path / "busybox.tar"))
    assert [r.repo_tags for r in records] == [("docker.io/library/busybox:1.0",)]
    assert records[0].id == config_digest(busybox, "1.0")
    assert store.get("busybox:1.0") == records[0]
    if os.geteuid() == 0:  # the unpacked image runs: chroot into its only layer
        out = subprocess.run(["chroot", str(store.layer_paths(records[0])[0]), "/bin/sh", "-c", "echo hi from $0"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == "hi from /bin/sh\n", out.stderr


def test_import_names_from_bare_tags_and_indexes(tmp_path: Path) -> None:
    layout = OCILayout(tmp_path / "layout")
    layout.add_image([tar_layer([file("a", "1")])], ref_name="v1")  # bare tag, as skopeo writes it
    layout.add_image([tar_layer([file("b", "2")])], ref_name="localhost:5000/team/b:v2")
    multi, _ = two_platform_layout(tmp_path / "multi")
    for blob in (multi / "blobs" / "sha256").iterdir():
        shutil.copy(blob, layout.path / "blobs" / "sha256" / blob.name)
    layout.name(OCILayout(multi).named("multi"), "team/multi:v3")
    archive = oci_archive(layout.path, tmp_path / "layout.tar")

    unnamed = import_archive(ImageStore(tmp_path / "s1"), archive, platform=AMD64)
    assert [r.repo_tags for r in unnamed] == [(), ("localhost:5000/team/b:v2",), ("docker.io/team/multi:v3",)]
    named = import_archive(ImageStore(tmp_path / "s2"), archive, base_name="team/a", platform=AMD64)
    assert named[0].repo_tags == ("docker.io/team/a:v1",)
    assert named[2].index_digest == OCILayout(multi).named("multi")["digest"]
    assert named[2].platform == "linux/amd64"


def test_import_docker_save_archive(tmp_path: Path, busybox: Path) -> None:
    archive = docker_save_archive(busybox, tmp_path / "saved.tar", "1.0", ["busybox:saved", "localhost:5000/bb:1"])
    store = ImageStore(tmp_path / "store")
    [record] = import_archive(store, archive)
    assert record.id == config_digest(busybox, "1.0")  # Docker's image ID is the config digest
    assert record.repo_tags == ("docker.io/library/busybox:saved", "localhost:5000/bb:1")
    assert record.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar"  # saved uncompressed
    assert record.diff_ids == (record.layers[0].digest,)
    assert (store.layer_paths(record)[0] / "bin" / "busybox").exists()


def test_import_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(tar_layer([file("hello", "x")]))
    with pytest.raises(Exception, match="neither an OCI image layout"):
        import_archive(ImageStore(tmp_path / "store"), tmp_path / "junk.tar")


def test_pull_an_image_pushed_by_skopeo(tmp_path: Path, registry: LocalRegistry, busybox: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    registry.push_with_skopeo(busybox, "1.0", "skopeo/busybox", "v1")
    store = ImageStore(tmp_path / "store")
    record = Puller(store, RegistryClient(RegistryConfig(platform=AMD64))).pull(f"{registry.host}/skopeo/busybox:v1")
    assert record.id == config_digest(busybox, "1.0")  # skopeo kept the config byte for byte
    assert record.repo_tags == (f"{registry.host}/skopeo/busybox:v1",)


def test_cli_pull(tmp_path: Path, registry: LocalRegistry, busybox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from deploy.cli import image_cmd

    registry.push(busybox, "1.0", "library/busybox", "cli")
    parser = argparse.ArgumentParser()
    image_cmd.add_arguments(parser)
    args = parser.parse_args(["pull", f"{registry.host}/library/busybox:cli", "--platform", "linux/amd64",
                              "--root", str(tmp_path / "root")])
    assert image_cmd.run(args) == 0
    assert capsys.readouterr().out == f"pulled {config_digest(busybox, '1.0')}  {registry.host}/library/busybox:cli\n"
