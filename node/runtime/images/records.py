"""What the image store records about an image: frozen values, and their JSON form in images.json.

An image is identified by its config digest (its *ID*). ``size`` is what CRI reports: the config
plus the compressed layers. ``blobs`` is every piece of content the image keeps alive in the
store (garbage collection's roots); ``diff_ids`` name its unpacked layers, bottom first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ImageRecord", "LayerRecord"]


@dataclass(frozen=True)
class LayerRecord:
    digest: str      # of the compressed blob, as the manifest names it
    media_type: str
    size: int        # compressed size in bytes
    diff_id: str     # of the uncompressed tar; names the unpacked directory


@dataclass(frozen=True)
class ImageRecord:
    id: str                         # config digest
    manifest_digest: str
    manifest_media_type: str
    config_size: int
    layers: tuple[LayerRecord, ...]
    user: str = ""                  # the config's User, for CRI's Image.uid / username
    index_digest: str | None = None  # the index it was chosen from, if any
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    platform: str = ""

    @property
    def size(self) -> int:
        """Bytes of content the image is made of (config plus compressed layers), as CRI reports."""
        return self.config_size + sum(layer.size for layer in self.layers)

    @property
    def blobs(self) -> set[str]:
        names = {self.id, self.manifest_digest, *(layer.digest for layer in self.layers)}
        if self.index_digest:
            names.add(self.index_digest)
        return names

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "manifestDigest": self.manifest_digest,
            "manifestMediaType": self.manifest_media_type, "configSize": self.config_size,
            "layers": [{"digest": la.digest, "mediaType": la.media_type, "size": la.size, "diffID": la.diff_id}
                       for la in self.layers],
            "user": self.user, "indexDigest": self.index_digest, "repoTags": list(self.repo_tags),
            "repoDigests": list(self.repo_digests), "platform": self.platform,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ImageRecord:
        return cls(
            id=raw["id"], manifest_digest=raw["manifestDigest"], manifest_media_type=raw["manifestMediaType"],
            config_size=raw["configSize"],
            layers=tuple(LayerRecord(la["digest"], la["mediaType"], la["size"], la["diffID"]) for la in raw["layers"]),
            user=raw.get("user", ""), index_digest=raw.get("indexDigest"),
            repo_tags=tuple(raw.get("repoTags", ())), repo_digests=tuple(raw.get("repoDigests", ())),
            platform=raw.get("platform", ""),
        )
