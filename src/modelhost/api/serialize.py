"""The one place where errors become HTTP, for both wire protocols.

awsJson1.1 (control plane): HTTP status from the error's code (``http_status``), body
``{"__type", "message"}``, headers ``x-amzn-ErrorType`` and ``x-amzn-RequestId``. rest-json
(runtime API) uses the same headers with body ``{"message", ...extra}`` (ModelError adds
OriginalStatusCode, OriginalMessage, LogStreamArn).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from xml.sax.saxutils import escape

from modelhost.errors import AuthFailure, ServiceError

JSON_11 = b"application/x-amz-json-1.1"
REST_JSON = b"application/json"

# SageMaker's HTTP status for each error code; a code not listed is a 500 (InternalFailure).
# The control plane answers every client error with 400, as awsJson1.1 services do; the runtime
# API's statuses are those boto3's sagemaker-runtime model documents for each error.
_STATUS_BY_CODE = {
    # control plane
    "ValidationException": 400,
    "ResourceNotFound": 400,
    "ResourceInUse": 400,
    "ResourceLimitExceeded": 400,
    "ConflictException": 400,
    "UnknownOperationException": 400,
    "SerializationException": 400,
    "ThrottlingException": 400,
    "InternalFailure": 500,
    # Application Auto Scaling
    "ObjectNotFoundException": 400,
    "LimitExceededException": 400,
    "ConcurrentUpdateException": 400,
    # CloudWatch Logs
    "ResourceNotFoundException": 400,
    "InvalidParameterException": 400,
    # runtime API
    "ValidationError": 400,
    "ModelError": 424,
    "ModelNotReadyException": 429,
    "ServiceUnavailable": 503,
    "InternalDependencyException": 530,
    # authentication and authorisation (auth/): JSON and rest-json services
    "MissingAuthenticationToken": 403,
    "IncompleteSignature": 403,
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "AccessDeniedException": 400,
    # ... and the S3 relay's codes (S3 XML errors, storage/s3front.py)
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400,
    "XAmzContentSHA256Mismatch": 400,
    "InvalidArgument": 400,
}


def http_status(err: ServiceError) -> int:
    """The HTTP status ``err`` is answered with."""
    return _STATUS_BY_CODE.get(err.code, 500)


def request_id() -> str:
    return str(uuid.uuid4())


def json_error(err: ServiceError, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"__type": err.code, "message": err.message}).encode()
    return http_status(err), _headers(err, rid, JSON_11), body


def rest_error(err: ServiceError, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    payload: dict[str, Any] = {"message": err.message, **err.extra}
    return http_status(err), _headers(err, rid, REST_JSON), json.dumps(payload).encode()


def _headers(err: ServiceError, rid: str, content_type: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", content_type),
        (b"x-amzn-errortype", err.code.encode()),
        (b"x-amzn-requestid", rid.encode()),
    ]


def json_ok(payload: dict[str, Any], rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [(b"content-type", JSON_11), (b"x-amzn-requestid", rid.encode())]
    return 200, headers, json.dumps(payload).encode()


def s3_error(err: AuthFailure, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An authentication failure as S3 answers it (the embedded S3 relay): an XML ``Error``
    with S3's code and message."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{err.s3_code}</Code><Message>{escape(err.s3_message)}</Message>"
        f"<RequestId>{rid}</RequestId></Error>"
    )
    headers = [(b"content-type", b"application/xml"), (b"x-amz-request-id", rid.encode())]
    return _STATUS_BY_CODE.get(err.s3_code, 403), headers, body.encode()
