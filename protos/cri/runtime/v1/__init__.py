"""CRI `runtime.v1`: RuntimeService and ImageService (generated modules: api_pb2, api_pb2_grpc)."""
