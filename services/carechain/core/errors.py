"""Errors that know their gRPC status.

Domain code raises these; the server interceptor in :mod:`carechain.runtime.server` turns
them into a gRPC status with a message that names the field or reason. Messages
must never contain PHI.
"""

from __future__ import annotations

import grpc


class CareChainError(Exception):
    """Base class: an error with a gRPC status code and a safe message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(CareChainError):
    """A request field is wrong; the message names the field and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


class Unauthenticated(CareChainError):
    """Missing, expired, forged or wrong-audience credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CareChainError):
    """The caller is known but not allowed; the message says why."""

    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(CareChainError):
    """The named thing does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CareChainError):
    """The thing exists already (or a nonce was replayed)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CareChainError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(CareChainError):
    """A backend or peer service is down; the message names it."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, backend: str, why: str) -> None:
        super().__init__(f"{backend} unavailable: {why}")
        self.backend = backend


class DataLoss(CareChainError):
    """Stored data no longer matches its hash: never return it."""

    code = grpc.StatusCode.DATA_LOSS


class IntegrityError(CareChainError):
    """A verification (hash, signature, proof) failed."""

    code = grpc.StatusCode.DATA_LOSS
