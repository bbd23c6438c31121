"""Core errors and the one table that maps them to HTTP and gRPC status codes.

The codes are TensorFlow's error codes (tensorflow/core/protobuf/error_codes.proto), which
TF Serving returns on both front ends; the HTTP mapping is TF Serving's ToHTTPStatusCode.
"""

from __future__ import annotations

import enum
import logging

import grpc


class Code(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# code -> (HTTP status, gRPC status). The only place either front end learns a status.
STATUS_TABLE = {
    Code.OK: (200, grpc.StatusCode.OK),
    Code.CANCELLED: (499, grpc.StatusCode.CANCELLED),
    Code.UNKNOWN: (500, grpc.StatusCode.UNKNOWN),
    Code.INVALID_ARGUMENT: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Code.DEADLINE_EXCEEDED: (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    Code.NOT_FOUND: (404, grpc.StatusCode.NOT_FOUND),
    Code.ALREADY_EXISTS: (409, grpc.StatusCode.ALREADY_EXISTS),
    Code.PERMISSION_DENIED: (403, grpc.StatusCode.PERMISSION_DENIED),
    Code.RESOURCE_EXHAUSTED: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Code.FAILED_PRECONDITION: (400, grpc.StatusCode.FAILED_PRECONDITION),
    Code.ABORTED: (409, grpc.StatusCode.ABORTED),
    Code.OUT_OF_RANGE: (400, grpc.StatusCode.OUT_OF_RANGE),
    Code.UNIMPLEMENTED: (501, grpc.StatusCode.UNIMPLEMENTED),
    Code.INTERNAL: (500, grpc.StatusCode.INTERNAL),
    Code.UNAVAILABLE: (503, grpc.StatusCode.UNAVAILABLE),
    Code.DATA_LOSS: (500, grpc.StatusCode.DATA_LOSS),
    Code.UNAUTHENTICATED: (401, grpc.StatusCode.UNAUTHENTICATED),
}


class ServingError(Exception):
    """An API failure with the status TF Serving would return for it."""

    def __init__(self, code: Code, message: str):
        super().__init__(message)
        self.code = Code(code)
        self.message = message

    @property
    def http_status(self) -> int:
        return STATUS_TABLE[self.code][0]

    @property
    def grpc_status(self) -> grpc.StatusCode:
        return STATUS_TABLE[self.code][1]

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def as_serving_error(e: Exception, what: str) -> ServingError:
    """The error a front end answers for `e`, raised while serving `what`: a ServingError
    as it is; anything else is a bug, logged with its traceback and answered INTERNAL, so
    that one request never takes the server down."""
    if isinstance(e, ServingError):
        return e
    logging.getLogger("serving.model_server").error("%s failed", what, exc_info=e)
    return ServingError(Code.INTERNAL, f"{type(e).__name__}: {e}")


def from_tf_error(e: BaseException) -> ServingError:
    """A TensorFlow op error keeps its code (tf.errors codes are these codes)."""
    code = getattr(e, "error_code", None)
    message = getattr(e, "message", None) or str(e)
    try:
        return ServingError(Code(code), message)
    except (ValueError, TypeError):
        return ServingError(Code.INTERNAL, message)
