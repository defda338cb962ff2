"""The awsJson1.1 error shape, and validation from the botocore model, seen on the wire.

boto3 checks some constraints itself, so bad requests go through a client with
``parameter_validation=False`` or as raw JSON over urllib."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, unique

pytestmark = pytest.mark.api

ECHO = str(FIXTURE_MODELS / "echo")
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?"


@pytest.fixture
def raw_sm(server: LiveServer) -> Any:
    """A boto3 client that sends what it is given, unchecked."""
    return server.client("sagemaker", parameter_validation=False)


def post(server: LiveServer, target: str | None, body: bytes) -> tuple[int, Any, dict[str, Any]]:
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    req = urllib.request.Request(f"{server.url}/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, json.loads(exc.read())


def model_names(sm: Any) -> set[str]:
    pages = sm.get_paginator("list_models").paginate()
    return {m["ModelName"] for page in pages for m in page["Models"]}


def config_names(sm: Any) -> set[str]:
    pages = sm.get_paginator("list_endpoint_configs").paginate()
    return {c["EndpointConfigName"] for page in pages for c in page["EndpointConfigs"]}


# --- the error shape --------------------------------------------------------------------------


def test_client_error_metadata(sm: Any) -> None:
    name = unique("wire-missing")
    with pytest.raises(ClientError) as info:
        sm.describe_model(ModelName=name)
    response = info.value.response
    assert response["Error"]["Code"] == "ValidationException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["RequestId"]
    assert info.value.operation_name == "DescribeModel"


def test_success_has_request_id(sm: Any) -> None:
    meta = sm.list_models(MaxResults=1)["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 200
    assert meta["RequestId"]


def test_raw_error_headers_and_body(server: LiveServer) -> None:
    name = unique("wire-raw")
    status, headers, body = post(
        server, "SageMaker.DescribeModel", json.dumps({"ModelName": name}).encode()
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationException"
    assert headers["x-amzn-RequestId"]
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    assert body == {
        "__type": "ValidationException",
        "message": f'Could not find model "arn:aws:sagemaker:us-east-1:123456789012:model/{name}".',
    }


def test_request_ids_differ(server: LiveServer) -> None:
    ids = {post(server, "SageMaker.DescribeModel", b'{"ModelName": "x"}')[1]["x-amzn-RequestId"]}
    ids.add(post(server, "SageMaker.DescribeModel", b'{"ModelName": "x"}')[1]["x-amzn-RequestId"])
    assert len(ids) == 2


# --- protocol-level errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "body", "code", "message"),
    [
        (
            "SageMaker.NoSuchOperation",
            b"{}",
            "UnknownOperationException",
            "Operation NoSuchOperation does not exist in the SageMaker API.",
        ),
        (
            "SageMaker.CreateTrainingJob",
            b"{}",
            "UnknownOperationException",
            "Operation CreateTrainingJob is not supported by modelhost yet.",
        ),
        (
            "Other.ListModels",
            b"{}",
            "UnknownOperationException",
            "Unknown target 'Other.ListModels'.",
        ),
        (None, b"{}", "UnknownOperationException", "Missing X-Amz-Target header."),
        (
            "SageMaker.ListModels",
            b'{"MaxResults": "5"}',
            "SerializationException",
            "STRING_VALUE can not be converted to an Integer at 'maxResults'",
        ),
        (
            "SageMaker.ListModels",
            b"[]",
            "SerializationException",
            "Request body must be a JSON object.",
        ),
        (
            "SageMaker.CreateModel",
            b"{}",
            "ValidationException",
            "1 validation error detected: Value null at 'modelName' failed to satisfy "
            "constraint: Member must not be null",
        ),
    ],
    ids=[
        "unknown-op",
        "unsupported-op",
        "wrong-prefix",
        "no-target",
        "string-for-integer",
        "array-body",
        "missing-required",
    ],
)
def test_protocol_errors(
    server: LiveServer, target: str | None, body: bytes, code: str, message: str
) -> None:
    status, headers, payload = post(server, target, body)
    assert status == 400
    assert headers["x-amzn-ErrorType"] == code
    assert payload == {"__type": code, "message": message}


def test_malformed_json(server: LiveServer, sm: Any) -> None:
    before = model_names(sm)
    status, headers, payload = post(server, "SageMaker.CreateModel", b'{"ModelName": "x",')
    assert status == 400
    assert payload["__type"] == headers["x-amzn-ErrorType"] == "SerializationException"
    assert payload["message"].startswith("Request body is not valid JSON: ")
    assert model_names(sm) == before


def test_type_mismatch_creates_nothing(server: LiveServer, sm: Any) -> None:
    name = unique("wire-type")
    body = {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": "1",
            }
        ],
    }
    status, _, payload = post(server, "SageMaker.CreateEndpointConfig", json.dumps(body).encode())
    assert (status, payload["__type"]) == (400, "SerializationException")
    assert payload["message"] == (
        "STRING_VALUE can not be converted to an Integer at "
        "'productionVariants.1.member.initialInstanceCount'"
    )
    assert name not in config_names(sm)


# --- validation from the botocore model -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "bad_name",
            "1 validation error detected: Value 'bad_name' at 'modelName' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {MODEL_NAME_PATTERN}",
        ),
        (
            "m" * 64,
            f"1 validation error detected: Value '{'m' * 64}' at 'modelName' failed to satisfy "
            "constraint: Member must have length less than or equal to 63",
        ),
        (
            "-leading-hyphen",
            "1 validation error detected: Value '-leading-hyphen' at 'modelName' failed to "
            f"satisfy constraint: Member must satisfy regular expression pattern: "
            f"{MODEL_NAME_PATTERN}",
        ),
    ],
    ids=["underscore", "64-chars", "leading-hyphen"],
)
def test_model_name_constraints(raw_sm: Any, name: str, message: str) -> None:
    before = model_names(raw_sm)
    with pytest.raises(ClientError) as info:
        raw_sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    assert info.value.response["Error"] == {"Code": "ValidationException", "Message": message}
    assert model_names(raw_sm) == before


def test_missing_required_member_via_boto3(raw_sm: Any) -> None:
    before = model_names(raw_sm)
    with pytest.raises(ClientError) as info:
        raw_sm.create_model(PrimaryContainer={"ModelDataUrl": ECHO})
    assert info.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value null at 'modelName' failed to satisfy "
        "constraint: Member must not be null",
    }
    assert model_names(raw_sm) == before


def _variant(**extra: Any) -> dict[str, Any]:
    base = {
        "VariantName": "AllTraffic",
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    return {k: v for k, v in {**base, **extra}.items() if v is not None}


@pytest.mark.parametrize(
    ("variants", "path", "constraint"),
    [
        (
            [_variant(InitialInstanceCount=0)],
            "Value '0' at 'productionVariants.1.member.initialInstanceCount'",
            "Member must have value greater than or equal to 1",
        ),
        (
            [_variant(InstanceType="ml.nope.large")],
            "Value 'ml.nope.large' at 'productionVariants.1.member.instanceType'",
            "Member must satisfy enum value set: [ml.t2.medium, ml.t2.large, ",
        ),
        (
            [
                _variant(
                    InstanceType=None,
                    InitialInstanceCount=None,
                    ServerlessConfig={"MemorySizeInMB": 8192, "MaxConcurrency": 1},
                )
            ],
            "Value '8192' at 'productionVariants.1.member.serverlessConfig.memorySizeInMB'",
            "Member must have value less than or equal to 6144",
        ),
        (
            [
                _variant(
                    InstanceType=None,
                    InitialInstanceCount=None,
                    ServerlessConfig={"MemorySizeInMB": 512, "MaxConcurrency": 1},
                )
            ],
            "Value '512' at 'productionVariants.1.member.serverlessConfig.memorySizeInMB'",
            "Member must have value greater than or equal to 1024",
        ),
        (
            [_variant(VariantName=f"V{i}") for i in range(11)],
            "Value '[{VariantName=V0, InstanceType=ml.m5.large, InitialInstanceCount=1, ",
            "Member must have length less than or equal to 10",
        ),
        (
            [],
            "Value '[]' at 'productionVariants'",
            "Member must have length greater than or equal to 1",
        ),
    ],
    ids=[
        "instance-count-0",
        "instance-type-enum",
        "serverless-memory-high",
        "serverless-memory-low",
        "11-variants",
        "no-variants",
    ],
)
def test_endpoint_config_constraints(
    raw_sm: Any, variants: list[dict[str, Any]], path: str, constraint: str
) -> None:
    model = unique("wire-model")
    raw_sm.create_model(ModelName=model, PrimaryContainer={"ModelDataUrl": ECHO})
    name = unique("wire-config")
    pvs = [{**v, "ModelName": model} for v in variants]
    with pytest.raises(ClientError) as info:
        raw_sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=pvs)
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert err["Message"].startswith(f"1 validation error detected: {path}")
    assert "failed to satisfy constraint: " + constraint in err["Message"]
    assert name not in config_names(raw_sm)


def test_errors_are_collected(raw_sm: Any) -> None:
    with pytest.raises(ClientError) as info:
        raw_sm.create_endpoint_config(
            EndpointConfigName="bad_config",
            ProductionVariants=[_variant(ModelName="m", InitialInstanceCount=0)],
        )
    message = info.value.response["Error"]["Message"]
    assert message.startswith("2 validation errors detected: Value 'bad_config' at ")
    assert "; Value '0' at 'productionVariants.1.member.initialInstanceCount'" in message
