"""Image manifests, indexes and configs: pure parsing of the OCI and Docker schema 2 formats.

No I/O here: the registry client, the importer and the store hand in bytes and get frozen values.

- A *manifest* (OCI image manifest or Docker schema 2 manifest) names one config blob and the
  ordered layer blobs of one platform's image.
- An *index* (OCI image index or Docker manifest list) names manifests, one per platform;
  ``choose_platform`` picks ours: same OS and architecture, and the same variant when both name
  one (an exact variant match wins; ``amd64`` ignores variants).
- The *config* carries ``rootfs.diff_ids``: the sha256 of each layer's uncompressed tar, which
  unpacking checks, and the defaults a container starts with (User, Env, Cmd, ...).

Docker schema 1 manifests (signed, from before 2017) are refused with a clear error. Every error
is a ``ManifestError`` whose message names the document and what is wrong with it.
"""
from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any, Mapping

from node.runtime.images.reference import InvalidReference, parse_digest

__all__ = [
    "ACCEPT", "Descriptor", "ImageConfig", "Index", "Manifest", "ManifestError", "Platform",
    "choose_platform", "parse_config", "parse_document",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
# What a registry is asked for, best first (schema 1 is deliberately absent).
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP)

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
                 "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x"}


class ManifestError(ValueError):
    """A manifest, index or config is malformed or unusable; the message says how."""


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``linux/amd64``, ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        """This machine's platform, in OCI's (Go's) names."""
        machine = _platform.machine()
        arch = _ARCH_ALIASES.get(machine, machine)
        variant = {"aarch64": "v8", "armv7l": "v7", "armv6l": "v6"}.get(machine, "")
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(f"invalid platform {text!r}: expected os/architecture[/variant]")
        return cls(*parts)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: its media type, digest and size (and, in an index, its platform)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config the runtime uses; ``raw`` keeps the whole document."""

    diff_ids: tuple[str, ...]
    platform: Platform
    user: str
    raw: Mapping[str, Any] = field(compare=False)


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return doc


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a descriptor object")
    try:
        media_type, digest, size = raw["mediaType"], raw["digest"], raw["size"]
    except KeyError as missing:
        raise ManifestError(f"{where}: descriptor has no {missing.args[0]!r}") from None
    if not isinstance(size, int) or size < 0 or not isinstance(media_type, str):
        raise ManifestError(f"{where}: bad size or mediaType in descriptor")
    try:
        parse_digest(str(digest))
    except InvalidReference as err:
        raise ManifestError(f"{where}: {err}") from None
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", "")))
    annotations = raw.get("annotations") or {}
    return Descriptor(media_type, digest, size, platform, {str(k): str(v) for k, v in annotations.items()})


def document_media_type(data: bytes, declared: str | None = None) -> str:
    """The media type of a manifest or index: its own ``mediaType`` field, else the declared
    one (a registry's Content-Type), else inferred from its shape."""
    doc = _load(data, "manifest")
    own = doc.get("mediaType")
    if isinstance(own, str) and own:
        return own
    if declared and declared.split(";")[0].strip() not in ("", "application/json", "application/octet-stream"):
        return declared.split(";")[0].strip()
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1[0]
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def parse_document(data: bytes, declared: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index; raise ManifestError for schema 1 or unknown kinds."""
    media_type = document_media_type(data, declared)
    doc = _load(data, "manifest")
    if media_type in DOCKER_SCHEMA1:
        raise ManifestError("Docker schema 1 manifests are not supported; push the image again with a current client")
    if media_type in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise ManifestError("image index has no 'manifests' list")
        return Index(media_type, tuple(_descriptor(m, f"index.manifests[{i}]") for i, m in enumerate(items)))
    if media_type in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("image manifest has no 'layers' list")
        config = _descriptor(doc.get("config"), "manifest.config")
        parsed = tuple(_descriptor(layer, f"manifest.layers[{i}]") for i, layer in enumerate(layers))
        for i, layer in enumerate(parsed):
            if layer.media_type not in LAYER_TYPES:
                raise ManifestError(f"manifest.layers[{i}] has media type {layer.media_type!r}, which skiff cannot unpack")
        return Manifest(media_type, config, parsed)
    raise ManifestError(f"unsupported manifest media type {media_type!r}")


def choose_platform(index: Index, want: Platform) -> Descriptor:
    """The index entry for ``want``; raise ManifestError listing what the index offers."""
    candidates = [d for d in index.manifests
                  if d.platform is not None and d.media_type not in INDEX_TYPES + LAYER_TYPES
                  and d.platform.os == want.os and d.platform.architecture == want.architecture]
    if want.architecture != "amd64" and want.variant:
        candidates = [d for d in candidates if d.platform is not None and d.platform.variant in ("", want.variant)]
    exact = [d for d in candidates if d.platform is not None and d.platform.variant == want.variant]
    chosen = exact or candidates
    if not chosen:
        offered = sorted({str(d.platform) for d in index.manifests if d.platform is not None})
        raise ManifestError(f"the image has no manifest for {want} (it offers: {', '.join(offered) or 'none'})")
    return chosen[0]


def parse_config(data: bytes) -> ImageConfig:
    """Parse an image config; raise ManifestError when it lacks rootfs.diff_ids."""
    doc = _load(data, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ManifestError("image config has no rootfs.diff_ids")
    diff_ids = tuple(str(d) for d in rootfs["diff_ids"])
    for d in diff_ids:
        try:
            parse_digest(d)
        except InvalidReference as err:
            raise ManifestError(f"image config rootfs.diff_ids: {err}") from None
    settings = doc.get("config") or {}
    user = str(settings.get("User") or "") if isinstance(settings, dict) else ""
    plat = Platform(str(doc.get("os", "")), str(doc.get("architecture", "")), str(doc.get("variant", "")))
    return ImageConfig(diff_ids=diff_ids, platform=plat, user=user, raw=doc)
