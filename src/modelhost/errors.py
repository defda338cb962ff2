"""Errors are codes. Each carries the SageMaker error code and a message; api/serialize.py maps
codes to HTTP statuses in one table (``http_status``), for the control plane and the runtime
API alike. Nothing here knows about HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """A SageMaker-shaped error: ``code`` is what boto3 reports as ``Error.Code``."""

    code = "InternalFailure"

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- control plane (awsJson1.1) -------------------------------------------------------------


class ValidationException(ServiceError):
    code = "ValidationException"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"


class ResourceInUse(ServiceError):
    code = "ResourceInUse"


class ResourceLimitExceeded(ServiceError):
    code = "ResourceLimitExceeded"


class ConflictException(ServiceError):
    code = "ConflictException"


class UnknownOperationException(ServiceError):
    code = "UnknownOperationException"


class SerializationException(ServiceError):
    code = "SerializationException"


class ThrottlingException(ServiceError):
    code = "ThrottlingException"


class InternalFailure(ServiceError):
    code = "InternalFailure"


# --- Application Auto Scaling (awsJson1.1, AnyScaleFrontendService) -----------------------


class ObjectNotFoundException(ServiceError):
    code = "ObjectNotFoundException"


class LimitExceededException(ServiceError):
    code = "LimitExceededException"


class ConcurrentUpdateException(ServiceError):
    code = "ConcurrentUpdateException"


# --- CloudWatch Logs (awsJson1.1) -----------------------------------------------------------


class ResourceNotFoundException(ServiceError):
    code = "ResourceNotFoundException"


class InvalidParameterException(ServiceError):
    code = "InvalidParameterException"


# --- runtime API (rest-json) ----------------------------------------------------------------


class ValidationError(ServiceError):
    code = "ValidationError"


class ModelError(ServiceError):
    """The container answered with a non-2xx status, or not at all."""

    code = "ModelError"


class ModelNotReadyException(ServiceError):
    code = "ModelNotReadyException"


class ServiceUnavailable(ServiceError):
    code = "ServiceUnavailable"


class InternalDependencyException(ServiceError):
    code = "InternalDependencyException"


def not_found(kind: str, arn: str) -> ValidationException:
    """The exact shape boto3 waiters and the SageMaker SDK rely on for a missing resource."""
    return ValidationException(f'Could not find {kind} "{arn}".')


def already_exists(kind: str, arn: str) -> ValidationException:
    return ValidationException(f'Cannot create already existing {kind} "{arn}".')


# --- authentication and authorisation (every API; auth/) ------------------------------------


class AuthFailure(ServiceError):
    """A request refused by SigV4 verification or a key's policy. ``code`` is the JSON and
    rest-json services' code; awsQuery services (STS, CloudWatch's query wire) answer with
    ``query_code`` and S3 with ``s3_code`` and ``s3_message``, as AWS does."""

    code = query_code = "AccessDenied"
    s3_code = "AccessDenied"
    s3_message = "Access Denied"

    def __init__(self, message: str, s3_code: str | None = None, s3_message: str | None = None):
        super().__init__(message)
        if s3_code is not None:
            self.s3_code = s3_code
        if s3_message is not None:
            self.s3_message = s3_message


class MissingAuthenticationToken(AuthFailure):
    code = query_code = "MissingAuthenticationToken"


class IncompleteSignature(AuthFailure):
    code = query_code = "IncompleteSignature"
    s3_code = "AuthorizationHeaderMalformed"
    s3_message = "The authorization header is malformed."


class UnrecognizedClientException(AuthFailure):
    code = "UnrecognizedClientException"
    query_code = "InvalidClientTokenId"
    s3_code = "InvalidAccessKeyId"
    s3_message = "The AWS Access Key Id you provided does not exist in our records."


class InvalidSignatureException(AuthFailure):
    code = "InvalidSignatureException"
    query_code = "SignatureDoesNotMatch"
    s3_code = "SignatureDoesNotMatch"
    s3_message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class AccessDeniedException(AuthFailure):
    code = "AccessDeniedException"
    query_code = "AccessDenied"
