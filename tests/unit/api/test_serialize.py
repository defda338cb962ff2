"""The one table from SageMaker error codes to HTTP statuses (api/serialize.py)."""

from __future__ import annotations

import json

import pytest

from modelhost import errors
from modelhost.api.serialize import (
    JSON_11,
    REST_JSON,
    http_status,
    json_error,
    rest_error,
    s3_error,
)

# What SageMaker answers for each error (awsJson1.1 control plane: 400 for client errors).
EXPECTED = {
    errors.ServiceError: 500,
    errors.ValidationException: 400,
    errors.ResourceNotFound: 400,
    errors.ResourceInUse: 400,
    errors.ResourceLimitExceeded: 400,
    errors.ConflictException: 400,
    errors.UnknownOperationException: 400,
    errors.SerializationException: 400,
    errors.ThrottlingException: 400,
    errors.InternalFailure: 500,
    # Application Auto Scaling (awsJson1.1 too)
    errors.ObjectNotFoundException: 400,
    errors.LimitExceededException: 400,
    errors.ConcurrentUpdateException: 400,
    errors.ResourceNotFoundException: 400,  # CloudWatch Logs
    errors.InvalidParameterException: 400,
    errors.ValidationError: 400,
    errors.ModelError: 424,
    errors.ModelNotReadyException: 429,
    errors.ServiceUnavailable: 503,
    errors.InternalDependencyException: 530,
    # authentication and authorisation (every API), as AWS's JSON services answer them
    errors.AuthFailure: 403,  # the base class: its code is AccessDenied (S3's and STS's)
    errors.MissingAuthenticationToken: 403,
    errors.IncompleteSignature: 403,
    errors.UnrecognizedClientException: 403,
    errors.InvalidSignatureException: 403,
    errors.AccessDeniedException: 400,
}


@pytest.mark.parametrize(("kind", "status"), EXPECTED.items(), ids=lambda v: str(v))
def test_each_error_has_its_sagemaker_status(kind: type[errors.ServiceError], status: int) -> None:
    assert http_status(kind("boom")) == status


def test_every_error_class_is_in_the_table() -> None:
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.ServiceError)
    }
    assert defined == set(EXPECTED)


def test_an_unknown_code_is_a_500() -> None:
    class Odd(errors.ServiceError):
        code = "SomethingNew"

    assert http_status(Odd("x")) == 500


def test_errors_carry_no_http_status() -> None:
    assert not any(hasattr(kind, "status") for kind in EXPECTED)


def test_json_error_uses_the_table() -> None:
    status, headers, body = json_error(errors.ResourceInUse("busy"), "rid-1")
    assert status == 400
    assert (b"content-type", JSON_11) in headers
    assert (b"x-amzn-errortype", b"ResourceInUse") in headers
    assert (b"x-amzn-requestid", b"rid-1") in headers
    assert json.loads(body) == {"__type": "ResourceInUse", "message": "busy"}


def test_rest_error_uses_the_table_and_keeps_extra_fields() -> None:
    err = errors.ModelError("bad", OriginalStatusCode=500, OriginalMessage="oops")
    status, headers, body = rest_error(err, "rid-2")
    assert status == 424
    assert (b"content-type", REST_JSON) in headers
    assert (b"x-amzn-errortype", b"ModelError") in headers
    assert json.loads(body) == {
        "message": "bad",
        "OriginalStatusCode": 500,
        "OriginalMessage": "oops",
    }


def test_s3_error_is_s3_xml_with_s3_codes() -> None:
    err = errors.InvalidSignatureException("json message")
    status, headers, body = s3_error(err, "rid-3")
    assert status == 403
    assert (b"content-type", b"application/xml") in headers
    assert b"<Code>SignatureDoesNotMatch</Code>" in body
    status, _, body = s3_error(errors.IncompleteSignature("bad"), "rid-4")
    assert status == 400 and b"<Code>AuthorizationHeaderMalformed</Code>" in body
    status, _, body = s3_error(errors.UnrecognizedClientException("who"), "rid-5")
    assert status == 403 and b"<Code>InvalidAccessKeyId</Code>" in body
