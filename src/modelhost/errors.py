"""Errors are codes. Each carries the SageMaker error code and a message; the wire layer
(api/serialize.py for the control plane, router/ for the runtime API) maps them to HTTP in one
place. Nothing here knows about HTTP frameworks."""

from __future__ import annotations


class ServiceError(Exception):
    """A SageMaker-shaped error: ``code`` is what boto3 reports as ``Error.Code``."""

    code = "InternalFailure"
    status = 500

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- control plane (awsJson1.1, HTTP 400 unless noted) -------------------------------------


class ValidationException(ServiceError):
    code = "ValidationException"
    status = 400


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"
    status = 400


class ResourceInUse(ServiceError):
    code = "ResourceInUse"
    status = 400


class ResourceLimitExceeded(ServiceError):
    code = "ResourceLimitExceeded"
    status = 400


class ConflictException(ServiceError):
    code = "ConflictException"
    status = 400


class UnknownOperationException(ServiceError):
    code = "UnknownOperationException"
    status = 400


class SerializationException(ServiceError):
    code = "SerializationException"
    status = 400


class ThrottlingException(ServiceError):
    code = "ThrottlingException"
    status = 400


class InternalFailure(ServiceError):
    code = "InternalFailure"
    status = 500


# --- runtime API (rest-json) ----------------------------------------------------------------


class ValidationError(ServiceError):
    code = "ValidationError"
    status = 400


class ModelError(ServiceError):
    """The container answered with a non-2xx status, or not at all. HTTP 424."""

    code = "ModelError"
    status = 424


class ModelNotReadyException(ServiceError):
    code = "ModelNotReadyException"
    status = 429


class ServiceUnavailable(ServiceError):
    code = "ServiceUnavailable"
    status = 503


class InternalDependencyException(ServiceError):
    code = "InternalDependencyException"
    status = 530


def not_found(kind: str, arn: str) -> ValidationException:
    """The exact shape boto3 waiters and the SageMaker SDK rely on for a missing resource."""
    return ValidationException(f'Could not find {kind} "{arn}".')


def already_exists(kind: str, arn: str) -> ValidationException:
    return ValidationException(f'Cannot create already existing {kind} "{arn}".')
