"""CRI ImageService (``runtime.v1``) on top of the image store and the puller, for grpc.aio.

``ImageServicer(store, puller)`` implements ListImages, ImageStatus, PullImage, RemoveImage and
ImageFsInfo; the runtime's gRPC server mounts it with ``servicer.add_to_server(server)``.

Semantics (containerd's CRI plugin answers the same way):
- an image's ``id`` is its config digest; ``PullImage`` answers ``image_ref`` = that ID, which
  the kubelet then passes back in ``ContainerConfig.image``; ``ImageSpec.image`` may be an ID,
  an ID prefix, a repo tag or a repo digest in any form Docker accepts (``busybox``);
- ``ImageStatus`` of an absent image answers with ``image`` unset, not an error; with
  ``verbose`` it adds ``info["info"]``: JSON with the image config (``imageSpec``) and digests;
- ``RemoveImage`` removes the image with all its tags and digests and collects content no other
  image uses; removing an absent image succeeds;
- ``Image.uid`` is set when the config's User is numeric, ``username`` otherwise;
  ``size`` is the image's content size (config plus compressed layers).

Identical pulls that overlap are coalesced: the second waits for the first's result. Store and
registry I/O runs in worker threads, never on the event loop. Errors are gRPC statuses with a
message naming the image: INVALID_ARGUMENT (bad reference), NOT_FOUND (no such repository, tag
or manifest), PERMISSION_DENIED (registry refused credentials), DATA_LOSS (digest or diff_id
mismatch), FAILED_PRECONDITION (an unusable manifest or layer), UNAVAILABLE (registry
unreachable or failing), ABORTED (a concurrent removal; retry).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Any, Callable

import grpc

from node.runtime.images.manifest import ManifestError
from node.runtime.images.pull import Puller
from node.runtime.images.reference import InvalidReference
from node.runtime.images.registry import Credentials, ManifestDigestMismatch, NotFound, RegistryError, Unauthorized
from node.runtime.images.store import DigestMismatch, ImageRecord, ImageStore, StoreError
from node.runtime.images.unpack import DiffIDMismatch, LayerError
from protos.cri.runtime.v1 import api_pb2, api_pb2_grpc

__all__ = ["ImageServicer", "image_message", "pull_error_status"]

# Most specific first: DigestMismatch is a StoreError, DiffIDMismatch a LayerError.
_STATUS: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (InvalidReference, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unauthorized, grpc.StatusCode.PERMISSION_DENIED),
    (DigestMismatch, grpc.StatusCode.DATA_LOSS),
    (DiffIDMismatch, grpc.StatusCode.DATA_LOSS),
    (ManifestDigestMismatch, grpc.StatusCode.DATA_LOSS),
    (ManifestError, grpc.StatusCode.FAILED_PRECONDITION),
    (LayerError, grpc.StatusCode.FAILED_PRECONDITION),
    (RegistryError, grpc.StatusCode.UNAVAILABLE),
    (StoreError, grpc.StatusCode.ABORTED),
]


def pull_error_status(err: BaseException) -> grpc.StatusCode | None:
    """The gRPC code for an error of pulling or resolving an image; None if unexpected."""
    return next((code for kind, code in _STATUS if isinstance(err, kind)), None)


def _user(user: str) -> tuple[int | None, str]:
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    return (int(name), "") if name.isdigit() else (None, name)


def image_message(record: ImageRecord) -> api_pb2.Image:
    """The CRI Image for a stored record."""
    uid, username = _user(record.user)
    image = api_pb2.Image(id=record.id, repo_tags=list(record.repo_tags), repo_digests=list(record.repo_digests),
                          size=record.size, username=username, spec=api_pb2.ImageSpec(image=record.id))
    if uid is not None:
        image.uid.value = uid
    return image


def credentials_from(auth: api_pb2.AuthConfig) -> Credentials | None:
    """Registry credentials from CRI's AuthConfig; None when it carries none."""
    if auth.identity_token:
        raise Unauthorized("AuthConfig.identity_token (an OAuth2 refresh token) is not supported; "
                           "pass username/password or registry_token")
    if auth.registry_token:
        return Credentials(token=auth.registry_token)
    username, password = auth.username, auth.password
    if auth.auth and not (username or password):
        try:
            username, _, password = base64.b64decode(auth.auth, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("AuthConfig.auth is not base64 of 'username:password'") from None
    return Credentials(username=username, password=password) if (username or password) else None


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    """The CRI ImageService (see the module docstring)."""

    def __init__(self, store: ImageStore, puller: Puller, clock: Callable[[], int] = time.time_ns) -> None:
        self.store, self.puller, self.clock = store, puller, clock
        self._inflight: dict[tuple[str, Credentials | None], asyncio.Future[ImageRecord]] = {}

    def add_to_server(self, server: grpc.aio.Server) -> None:
        api_pb2_grpc.add_ImageServiceServicer_to_server(self, server)

    async def _find(self, spec: api_pb2.ImageSpec, context: grpc.aio.ServicerContext) -> ImageRecord | None:
        try:
            return self.store.get(spec.image)
        except InvalidReference as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise  # unreachable: abort raises

    async def ListImages(self, request: api_pb2.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> api_pb2.ListImagesResponse:
        if request.filter.image.image:
            found = await self._find(request.filter.image, context)
            records = [found] if found is not None else []
        else:
            records = sorted(self.store.list(), key=lambda r: r.id)
        return api_pb2.ListImagesResponse(images=[image_message(r) for r in records])

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.ImageStatusResponse:
        if not request.image.image:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ImageStatus: image.image is required")
        record = await self._find(request.image, context)
        if record is None:
            return api_pb2.ImageStatusResponse()
        response = api_pb2.ImageStatusResponse(image=image_message(record))
        if request.verbose:
            info: dict[str, Any] = {"imageSpec": self.store.config(record), "manifestDigest": record.manifest_digest,
                                    "indexDigest": record.index_digest, "diffIDs": list(record.diff_ids)}
            response.info["info"] = json.dumps(info)
        return response

    async def PullImage(self, request: api_pb2.PullImageRequest,
                        context: grpc.aio.ServicerContext) -> api_pb2.PullImageResponse:
        name = request.image.image
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "PullImage: image.image is required")
        try:
            credentials = credentials_from(request.auth)
            record = await self._pull_once(name, credentials)
        except Exception as err:
            code = pull_error_status(err)
            if code is None:
                raise
            await context.abort(code, f"pull {name}: {err}")
        return api_pb2.PullImageResponse(image_ref=record.id)

    async def _pull_once(self, name: str, credentials: Credentials | None) -> ImageRecord:
        key = (name, credentials)
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[ImageRecord] = asyncio.ensure_future(asyncio.to_thread(self.puller.pull, name, credentials))
        self._inflight[key] = future
        future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.RemoveImageResponse:
        if not request.image.image:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RemoveImage: image.image is required")
        try:
            await asyncio.to_thread(self.store.remove, request.image.image)
        except InvalidReference as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.ImageFsInfoResponse:
        usage = await asyncio.to_thread(self.store.fs_usage)
        fs = api_pb2.FilesystemUsage(
            timestamp=self.clock(), fs_id=api_pb2.FilesystemIdentifier(mountpoint=str(self.store.root)),
            used_bytes=api_pb2.UInt64Value(value=usage.bytes), inodes_used=api_pb2.UInt64Value(value=usage.inodes))
        return api_pb2.ImageFsInfoResponse(image_filesystems=[fs])
