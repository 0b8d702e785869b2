"""Errors that carry their gRPC status, raised by service code and turned into statuses by
`lookalike.server.rpc`, so handlers never build statuses by hand."""

from __future__ import annotations

import grpc


class LookalikeError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(LookalikeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LookalikeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LookalikeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LookalikeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LookalikeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(LookalikeError):
    code = grpc.StatusCode.UNAVAILABLE


class PermissionDenied(LookalikeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(LookalikeError):
    code = grpc.StatusCode.UNAUTHENTICATED
