"""API errors: each is one gRPC status code and one message naming the object and the field.

The registry raises these; the gRPC service turns each into `context.abort(code, message)`.
Messages follow Kubernetes' wording so that people (and tools) who know kubectl recognise them.
"""
from __future__ import annotations

from typing import Sequence

import grpc

from controlplane.client.scheme import Kind


class ApiError(Exception):
    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Invalid(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(ApiError):
    code = grpc.StatusCode.ABORTED


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(ApiError):
    """Refused by admission (a terminating namespace, an allocated IP) or authorization."""
    code = grpc.StatusCode.PERMISSION_DENIED


class Gone(ApiError):
    """Too old a resourceVersion or continue token: the client must list again."""
    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class TooMany(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def not_found(kind: Kind, name: str) -> NotFound:
    return NotFound(f'{kind.group_resource} "{name}" not found')


def already_exists(kind: Kind, name: str) -> AlreadyExists:
    return AlreadyExists(f'{kind.group_resource} "{name}" already exists')


def conflict(kind: Kind, name: str) -> Conflict:
    return Conflict(f'Operation cannot be fulfilled on {kind.group_resource} "{name}": '
                    "the object has been modified; please apply your changes to the latest version and try again")


def invalid(kind: Kind, name: str, errors: Sequence[str]) -> Invalid:
    """`Deployment.apps "web" is invalid: <error>` or, for several, `... is invalid: [e1, e2]`."""
    detail = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return Invalid(f'{kind.qualified} "{name}" is invalid: {detail}')
