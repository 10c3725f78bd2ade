from protos.etcd.etcdserverpb import rpc_pb2 as _rpc_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishRequest(_message.Message):
    __slots__ = ("member_id", "name", "peer_url", "client_urls")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PEER_URL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_URLS_FIELD_NUMBER: _ClassVar[int]
    member_id: int
    name: str
    peer_url: str
    client_urls: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, member_id: _Optional[int] = ..., name: _Optional[str] = ..., peer_url: _Optional[str] = ..., client_urls: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("ops", "read_barrier")
    OPS_FIELD_NUMBER: _ClassVar[int]
    READ_BARRIER_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[_rpc_pb2.RequestOp]
    read_barrier: bool
    def __init__(self, ops: _Optional[_Iterable[_Union[_rpc_pb2.RequestOp, _Mapping]]] = ..., read_barrier: _Optional[bool] = ...) -> None: ...

class ForwardResult(_message.Message):
    __slots__ = ("response", "code", "message")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    response: _rpc_pb2.ResponseOp
    code: int
    message: str
    def __init__(self, response: _Optional[_Union[_rpc_pb2.ResponseOp, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("results", "barrier_revision")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    BARRIER_REVISION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ForwardResult]
    barrier_revision: int
    def __init__(self, results: _Optional[_Iterable[_Union[ForwardResult, _Mapping]]] = ..., barrier_revision: _Optional[int] = ...) -> None: ...
