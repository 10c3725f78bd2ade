"""Fake images for hollow nodes: every pull "succeeds" at once and nothing is fetched.

Used where a runtime offers only the `fake` handler (scale tests and benchmarks: hollow nodes
whose containers never run need no image bytes), so pods may name any image, as kubemark's hollow
kubelets do. `FakeImageServicer` is the CRI ImageService: it remembers the references pulled (by
the exact string asked, as the agent checks them) and answers for them with a stable fake id, so
the node agent's image report (image locality) still works. `FakeImageStore` is what the runtime
servicer sees: an image pulled has a record without layers and a config whose Cmd is `FAKE_CMD`
(a container needs no command of its own, as with a real image); one never pulled is absent
(CreateContainer: NOT_FOUND). Never used with the runc or process handlers.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import grpc

from node.runtime.images.records import ImageRecord
from node.runtime.images.store import ImageStore
from protos.cri.runtime.v1 import api_pb2, api_pb2_grpc

FAKE_IMAGE_SIZE = 1 << 20  # what a fake image claims to weigh (the scheduler's image locality reads it)
FAKE_CMD = ("/hollow",)    # every fake image's Cmd
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def fake_image_id(reference: str) -> str:
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


class FakeImageServicer(api_pb2_grpc.ImageServiceServicer):
    """An ImageService whose pulls succeed at once: it remembers the references pulled (by the
    exact string asked, as the agent checks them) and answers for them with a stable fake id."""

    def __init__(self) -> None:
        self.images: dict[str, api_pb2.Image] = {}

    def add_to_server(self, server: grpc.aio.Server) -> None:
        api_pb2_grpc.add_ImageServiceServicer_to_server(self, server)

    def _image(self, reference: str) -> api_pb2.Image:
        return api_pb2.Image(id=fake_image_id(reference), repo_tags=[reference], size=FAKE_IMAGE_SIZE,
                             spec=api_pb2.ImageSpec(image=fake_image_id(reference)))

    def find(self, text: str) -> api_pb2.Image | None:
        """The image pulled as `text`, or whose id is `text`; None when never pulled."""
        found = self.images.get(text)
        if found is None:  # an image id, as the agent may pass back what PullImage answered
            found = next((i for i in list(self.images.values()) if i.id == text), None)  # list(): read from a thread too
        return found

    async def ListImages(self, request: api_pb2.ListImagesRequest, context: Any) -> api_pb2.ListImagesResponse:
        return api_pb2.ListImagesResponse(images=list(self.images.values()))

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest, context: Any) -> api_pb2.ImageStatusResponse:
        found = self.find(request.image.image)
        return api_pb2.ImageStatusResponse(image=found) if found is not None else api_pb2.ImageStatusResponse()

    async def PullImage(self, request: api_pb2.PullImageRequest, context: Any) -> api_pb2.PullImageResponse:
        reference = request.image.image
        if not reference:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "PullImage: image.image is required")
        image = self.images.setdefault(reference, self._image(reference))
        return api_pb2.PullImageResponse(image_ref=image.id)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest, context: Any) -> api_pb2.RemoveImageResponse:
        found = self.find(request.image.image)
        if found is not None:
            self.images = {k: v for k, v in self.images.items() if v.id != found.id}
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest, context: Any) -> api_pb2.ImageFsInfoResponse:
        return api_pb2.ImageFsInfoResponse()


class FakeImageStore(ImageStore):
    """The runtime servicer's view of the fake images: an image pulled through `images` has a
    record (no layers) and a config whose Cmd is `FAKE_CMD`, so a container needs no command of
    its own, as with a real image; one never pulled is absent (CreateContainer: NOT_FOUND)."""

    def __init__(self, root: Path, images: FakeImageServicer) -> None:
        super().__init__(root)
        self.images = images

    def get(self, ref_or_id: str) -> ImageRecord | None:
        found = self.images.find(ref_or_id)
        if found is None:
            return None
        return ImageRecord(id=found.id, manifest_digest=found.id, manifest_media_type=OCI_MANIFEST,
                           config_size=FAKE_IMAGE_SIZE, layers=(), repo_tags=tuple(found.repo_tags))

    def config(self, image: ImageRecord) -> dict[str, Any]:
        return {"config": {"Cmd": list(FAKE_CMD)}}
