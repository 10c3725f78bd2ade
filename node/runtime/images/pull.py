"""Pulling: registry -> verified blobs -> unpacked layers -> one committed image record.

``Puller.pull(reference)`` resolves the reference to a manifest (choosing this machine's
platform from an index), fetches the config and every layer the store lacks into an ingest
area, unpacks each new layer while checking its diff_id against the config, and commits the
image to the store in one step. ``stage_image`` is the part shared with the archive importer:
given a manifest and a way to fetch blobs, it stages and verifies everything an image needs.

Invariants: nothing becomes visible in the store before every blob has been verified against
its digest and size and every layer against its diff_id; on any error the ingest area is
deleted and the store is as it was. Repo tags and digests recorded are those of the reference
pulled: ``name:tag`` for a tag, ``name@<digest of what the tag or digest named>`` (the index's
digest for a multi-platform image, as containerd records it).
"""
from __future__ import annotations

from typing import Callable

from node.runtime.images.manifest import (
    Descriptor, Index, Manifest, ManifestError, Platform, choose_platform, parse_config, parse_document,
)
from node.runtime.images.reference import Reference, parse
from node.runtime.images.registry import Credentials, RegistryClient
from node.runtime.images.store import BlobWriter, ImageRecord, ImageStore, Ingest, LayerRecord
from node.runtime.images.unpack import unpack_layer

__all__ = ["Puller", "stage_image"]

# Fetches the blob a descriptor names into the writer (which verifies digest and size).
Fetch = Callable[[Descriptor, BlobWriter], None]


def stage_image(ingest: Ingest, manifest: Manifest, manifest_digest: str, fetch: Fetch, *,
                index_digest: str | None = None, repo_tags: tuple[str, ...] = (),
                repo_digests: tuple[str, ...] = (), whiteouts: str | None = None) -> ImageRecord:
    """Stage the config and layers of ``manifest`` (blobs the store has are not fetched again,
    layers it has unpacked are not unpacked again) and return the record to commit."""
    _ensure_blob(ingest, manifest.config, fetch)
    config = parse_config(ingest.read_blob(manifest.config.digest))
    if len(config.diff_ids) != len(manifest.layers):
        raise ManifestError(f"the manifest names {len(manifest.layers)} layers but the config "
                            f"{manifest.config.digest} lists {len(config.diff_ids)} diff_ids")
    layers = []
    for descriptor, diff_id in zip(manifest.layers, config.diff_ids):
        if not (ingest.has_layer(diff_id) and ingest.has_blob(descriptor.digest)):
            _ensure_blob(ingest, descriptor, fetch)
        if not ingest.has_layer(diff_id):
            unpacked = unpack_layer(ingest.blob_path(descriptor.digest), ingest.layer_dir(diff_id),
                                    expected_diff_id=diff_id, whiteouts=whiteouts)
            ingest.whiteouts[diff_id] = unpacked.whiteouts
        layers.append(LayerRecord(descriptor.digest, descriptor.media_type, descriptor.size, diff_id))
    return ImageRecord(
        id=manifest.config.digest, manifest_digest=manifest_digest, manifest_media_type=manifest.media_type,
        config_size=manifest.config.size, layers=tuple(layers), user=config.user, index_digest=index_digest,
        repo_tags=repo_tags, repo_digests=repo_digests, platform=str(config.platform),
    )


def _ensure_blob(ingest: Ingest, descriptor: Descriptor, fetch: Fetch) -> None:
    if ingest.has_blob(descriptor.digest):
        return
    with ingest.writer(descriptor.digest, descriptor.size) as writer:
        fetch(descriptor, writer)
        writer.close()


class Puller:
    """Pulls images from registries into a store (synchronous; run it in a worker thread)."""

    def __init__(self, store: ImageStore, client: RegistryClient | None = None,
                 platform: Platform | None = None) -> None:
        self.store = store
        self.client = client or RegistryClient()
        self.platform = platform or self.client.config.platform

    def pull(self, reference: str | Reference, credentials: Credentials | None = None) -> ImageRecord:
        """Pull ``reference`` and return the stored image (its ``id`` is CRI's image_ref)."""
        ref = parse(reference) if isinstance(reference, str) else reference
        with self.store.ingest() as ingest:
            top = self.client.get_manifest(ref, ref.pull_target, credentials)
            document = parse_document(top.data, top.media_type)
            ingest.add_bytes(top.data, top.digest)
            index_digest = None
            manifest_digest = top.digest
            if isinstance(document, Index):
                index_digest = top.digest
                chosen = choose_platform(document, self.platform)
                fetched = self.client.get_manifest(ref, chosen.digest, credentials)
                document = parse_document(fetched.data, fetched.media_type)
                if isinstance(document, Index):
                    raise ManifestError(f"{ref}: an index inside an index is not supported")
                ingest.add_bytes(fetched.data, fetched.digest)
                manifest_digest = fetched.digest

            def fetch(descriptor: Descriptor, writer: BlobWriter) -> None:
                self.client.fetch_blob(ref, descriptor, writer, credentials)

            tags = (str(ref.with_tag(ref.tag)),) if ref.tag and not ref.digest else ()
            record = stage_image(ingest, document, manifest_digest, fetch, index_digest=index_digest,
                                 repo_tags=tags, repo_digests=(f"{ref.name}@{top.digest}",))
            return self.store.commit(ingest, record)
