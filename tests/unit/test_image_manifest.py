"""Manifest and index parsing, platform choice, and the registry client's HTTP/HTTPS decision."""
from __future__ import annotations

import json

import pytest

from node.runtime.images.manifest import (
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Index, Manifest, ManifestError, Platform,
    choose_platform, document_media_type, parse_config, parse_document,
)
from node.runtime.images.registry import RegistryConfig

D = "sha256:" + "1" * 64


def desc(media_type: str = OCI_MANIFEST, platform: dict[str, str] | None = None, digest: str = D) -> dict[str, object]:
    out: dict[str, object] = {"mediaType": media_type, "digest": digest, "size": 1}
    if platform:
        out["platform"] = platform
    return out


def index_of(*platforms: str) -> Index:
    entries = []
    for i, text in enumerate(platforms):
        os_name, arch, *variant = text.split("/")
        plat = {"os": os_name, "architecture": arch, **({"variant": variant[0]} if variant else {})}
        entries.append(desc(platform=plat, digest="sha256:" + str(i) * 64))
    doc = parse_document(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode())
    assert isinstance(doc, Index)
    return doc


@pytest.mark.parametrize(("offered", "want", "chosen"), [
    (("linux/arm64/v8", "linux/amd64"), "linux/amd64", 1),
    (("linux/amd64/v3", "linux/amd64"), "linux/amd64", 1),         # exact (no variant) wins
    (("linux/amd64/v2",), "linux/amd64", 0),                       # amd64 ignores variants
    (("linux/arm/v6", "linux/arm/v7"), "linux/arm/v7", 1),
    (("linux/arm64",), "linux/arm64/v8", 0),                       # an unnamed variant matches
    (("unknown/unknown", "linux/amd64"), "linux/amd64", 1),        # attestation entries are skipped
])
def test_choose_platform(offered: tuple[str, ...], want: str, chosen: int) -> None:
    index = index_of(*offered)
    assert choose_platform(index, Platform.parse(want)) == index.manifests[chosen]


def test_choose_platform_lists_what_is_offered() -> None:
    with pytest.raises(ManifestError, match=r"no manifest for linux/s390x \(it offers: linux/amd64, linux/arm/v7\)"):
        choose_platform(index_of("linux/arm/v7", "linux/amd64"), Platform("linux", "s390x"))


def test_manifest_kinds() -> None:
    manifest = {"schemaVersion": 2, "config": desc("application/vnd.oci.image.config.v1+json"),
                "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip")]}
    data = json.dumps(manifest).encode()
    assert document_media_type(data) == OCI_MANIFEST  # inferred from the shape
    assert document_media_type(data, f"{DOCKER_MANIFEST}; charset=utf-8") == DOCKER_MANIFEST
    parsed = parse_document(data, DOCKER_MANIFEST)
    assert isinstance(parsed, Manifest) and parsed.media_type == DOCKER_MANIFEST and len(parsed.layers) == 1
    listing = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": []}).encode()
    assert isinstance(parse_document(listing), Index)


@pytest.mark.parametrize(("doc", "says"), [
    ({"schemaVersion": 1, "fsLayers": []}, "schema 1"),
    ({"mediaType": OCI_MANIFEST, "config": desc(), "layers": [desc("application/x-foreign")]}, "cannot unpack"),
    ({"mediaType": OCI_MANIFEST, "config": {"digest": D, "size": 1}, "layers": []}, "no 'mediaType'"),
    ({"mediaType": OCI_MANIFEST, "config": desc(digest="sha256:" + "A" * 64), "layers": []}, "64 lower-case"),
    ({"mediaType": "text/plain"}, "unsupported manifest media type"),
])
def test_bad_documents(doc: dict[str, object], says: str) -> None:
    with pytest.raises(ManifestError, match=says):
        parse_document(json.dumps(doc).encode())


def test_config() -> None:
    config = parse_config(json.dumps({"os": "linux", "architecture": "arm64", "variant": "v8",
                                      "config": {"User": "nobody"}, "rootfs": {"type": "layers", "diff_ids": [D]}}).encode())
    assert config.diff_ids == (D,) and config.user == "nobody" and str(config.platform) == "linux/arm64/v8"
    with pytest.raises(ManifestError, match="rootfs.diff_ids"):
        parse_config(b'{"os": "linux"}')
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_config(b"\xff")


@pytest.mark.parametrize(("host", "scheme"), [
    ("127.0.0.1:5000", "http"), ("localhost", "http"), ("localhost:5000", "http"), ("127.1.2.3:80", "http"),
    ("[::1]:5000", "http"), ("registry.example", "https"), ("10.0.0.5:5000", "https"), ("registry-1.docker.io", "https"),
])
def test_plain_http_only_for_loopback_by_default(host: str, scheme: str) -> None:
    assert RegistryConfig().scheme(host) == scheme


def test_insecure_registries_are_named_explicitly() -> None:
    config = RegistryConfig(insecure_http=frozenset({"10.0.0.5:5000"}))
    assert config.scheme("10.0.0.5:5000") == "http" and config.scheme("10.0.0.5") == "https"


def test_host_platform_uses_oci_names() -> None:
    host = Platform.host()
    assert host.os == "linux" and host.architecture in ("amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64")
