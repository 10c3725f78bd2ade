"""A fake CRI ImageService for hollow nodes: every pull "succeeds" at once and nothing is fetched.

Used when a runtime offers only the `fake` handler (scale tests and benchmarks: hollow nodes
whose containers never run need no image bytes), so pods name any image, as kubemark's hollow
kubelets do. Images "pulled" are remembered in memory and listed like real ones, so the node
agent's image-locality report still works. Never used with the runc or process handlers.
"""
from __future__ import annotations

import hashlib

import grpc

from protos.cri.runtime.v1 import api_pb2, api_pb2_grpc

FAKE_IMAGE_SIZE = 1 << 20


def fake_image(name: str) -> api_pb2.Image:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return api_pb2.Image(id=f"sha256:{digest}", repo_tags=[name], size=FAKE_IMAGE_SIZE,
                         repo_digests=[f"{name.split(':')[0]}@sha256:{digest}"])


class FakeImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self) -> None:
        self.images: dict[str, api_pb2.Image] = {}

    def add_to_server(self, server: grpc.aio.Server) -> None:
        api_pb2_grpc.add_ImageServiceServicer_to_server(self, server)

    async def ListImages(self, request: api_pb2.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> api_pb2.ListImagesResponse:
        return api_pb2.ListImagesResponse(images=list(self.images.values()))

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.ImageStatusResponse:
        image = self.images.get(request.image.image)
        return api_pb2.ImageStatusResponse(image=image) if image else api_pb2.ImageStatusResponse()

    async def PullImage(self, request: api_pb2.PullImageRequest,
                        context: grpc.aio.ServicerContext) -> api_pb2.PullImageResponse:
        name = request.image.image
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "PullImage: image.image is required")
        image = self.images.setdefault(name, fake_image(name))
        return api_pb2.PullImageResponse(image_ref=image.id)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.RemoveImageResponse:
        self.images.pop(request.image.image, None)
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.ImageFsInfoResponse:
        return api_pb2.ImageFsInfoResponse()
