"""The wire side of asynchronous inference: config checks and translation, header parsing."""

from __future__ import annotations

import pytest

from modelhost.api.async_invocations import (
    _members,
    async_config,
    check_async_config,
    check_async_update,
)
from modelhost.errors import ValidationError, ValidationException
from modelhost.state.records import Deployment, Endpoint, EndpointStatus, Resource

ASYNC = {
    "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 3},
    "OutputConfig": {
        "S3OutputPath": "s3://b/out",
        "NotificationConfig": {
            "SuccessTopic": "http://127.0.0.1:1/ok",
            "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
        },
    },
}


def _endpoint(spec: dict[str, object]) -> Endpoint:
    config = Resource("cfg", "arn:cfg", 0.0, spec)
    return Endpoint(
        "Ep",
        "arn:ep",
        "cfg",
        EndpointStatus.IN_SERVICE,
        0.0,
        0.0,
        deployment=Deployment(config, {}),
    )


def test_config_translation() -> None:
    config = async_config(_endpoint({"AsyncInferenceConfig": ASYNC}))
    assert config is not None
    assert (config.endpoint, config.output_path, config.failure_path) == ("Ep", "s3://b/out", None)
    assert config.max_concurrent == 3
    assert config.success_topic == "http://127.0.0.1:1/ok" and config.error_topic is None
    assert config.include_response_in == frozenset({"success"})
    assert async_config(_endpoint({})) is None


def test_config_checks() -> None:
    check_async_config(ASYNC)
    with pytest.raises(ValidationException, match="S3OutputPath is required"):
        check_async_config({"OutputConfig": {"S3FailurePath": "s3://b/f"}})
    bad = {
        "OutputConfig": {
            "S3OutputPath": "s3://b/o",
            "NotificationConfig": {"IncludeInferenceResponseIn": ["ERROR_NOTIFICATION_TOPIC"]},
        }
    }
    with pytest.raises(ValidationException, match="has no ErrorTopic"):
        check_async_config(bad)


def test_update_keeps_the_kind_of_endpoint() -> None:
    check_async_update(_endpoint({"AsyncInferenceConfig": ASYNC}), {"AsyncInferenceConfig": ASYNC})
    check_async_update(_endpoint({}), {})
    with pytest.raises(ValidationException, match="cannot be removed from this endpoint Ep"):
        check_async_update(_endpoint({"AsyncInferenceConfig": ASYNC}), {})
    with pytest.raises(ValidationException, match="cannot be added to this endpoint Ep"):
        check_async_update(_endpoint({}), {"AsyncInferenceConfig": ASYNC})


def test_header_members() -> None:
    members = _members(
        [
            (b"x-amzn-sagemaker-inputlocation", b"s3://b/k"),
            (b"x-amzn-sagemaker-requestttlseconds", b"120"),
            (b"x-amzn-sagemaker-content-type", b"text/csv"),
            (b"content-type", b"ignored"),
        ]
    )
    assert members == {
        "InputLocation": "s3://b/k",
        "RequestTTLSeconds": 120,
        "ContentType": "text/csv",
    }
    with pytest.raises(ValidationError, match="Member must be an integer"):
        _members([(b"x-amzn-sagemaker-invocationtimeoutseconds", b"ten")])
