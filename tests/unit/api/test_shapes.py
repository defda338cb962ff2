"""api.shapes: requests parsed and validated against the real botocore models."""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import pytest

from modelhost.api._validate import compile_pattern
from modelhost.api.shapes import ServiceShapes, shapes_for
from modelhost.errors import SerializationException, UnknownOperationException, ValidationException

NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


@pytest.fixture(scope="module")
def sm() -> ServiceShapes:
    return shapes_for("sagemaker")


def full_endpoint_config() -> dict[str, Any]:
    return {
        "EndpointConfigName": "my-config",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "my-model",
                "InitialInstanceCount": 2,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
                "VolumeSizeInGB": 30,
                "ModelDataDownloadTimeoutInSeconds": 600,
                "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                "ManagedInstanceScaling": {
                    "Status": "ENABLED",
                    "MinInstanceCount": 1,
                    "MaxInstanceCount": 4,
                },
                "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
            },
            {
                "VariantName": "Serverless",
                "ModelName": "my-model",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
                "InitialVariantWeight": 0.5,
            },
        ],
        "DataCaptureConfig": {
            "EnableCapture": True,
            "InitialSamplingPercentage": 50,
            "DestinationS3Uri": "s3://bucket/capture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        },
        "AsyncInferenceConfig": {
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
            "OutputConfig": {
                "S3OutputPath": "s3://bucket/out",
                "S3FailurePath": "s3://bucket/failed",
                "NotificationConfig": {
                    "SuccessTopic": "arn:aws:sns:us-east-1:123456789012:ok",
                    "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
                },
            },
        },
        "KmsKeyId": "alias/my-key",
        "Tags": [{"Key": "team", "Value": "ml"}],
    }


def validation_message(sm: ServiceShapes, op: str, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationException) as info:
        sm.parse_input(op, body)
    return info.value.message


def serialization_message(sm: ServiceShapes, op: str, body: dict[str, Any]) -> str:
    with pytest.raises(SerializationException) as info:
        sm.parse_input(op, body)
    return info.value.message


def variant(**fields: Any) -> dict[str, Any]:
    return {"VariantName": "v", "ModelName": "m", **fields}


# --- loading and operations -----------------------------------------------------------------


def test_shapes_are_loaded_once_per_service(sm: ServiceShapes) -> None:
    assert shapes_for("sagemaker") is sm
    assert sm.service_name == "sagemaker"
    assert sm.target_prefix == "SageMaker"


def test_operation_names_come_from_the_model(sm: ServiceShapes) -> None:
    names = sm.operation_names()
    assert {"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "AddTags"} <= names
    assert sm.has_operation("DescribeEndpoint")
    assert not sm.has_operation("InvokeEndpoint")
    names.clear()
    assert sm.has_operation("CreateModel")


def test_unknown_operation(sm: ServiceShapes) -> None:
    with pytest.raises(UnknownOperationException) as info:
        sm.parse_input("LaunchRocket", {})
    assert info.value.message == "Operation LaunchRocket is not supported."
    with pytest.raises(UnknownOperationException):
        sm.serialize_output("LaunchRocket", {})


def test_body_must_be_an_object(sm: ServiceShapes) -> None:
    with pytest.raises(SerializationException):
        sm.parse_input("ListEndpoints", [])  # type: ignore[arg-type]


# --- CreateModel ----------------------------------------------------------------------------


def test_create_model_valid(sm: ServiceShapes) -> None:
    body = {
        "ModelName": "my-model",
        "PrimaryContainer": {
            "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/img:latest",
            "ModelDataUrl": "s3://bucket/model.tar.gz",
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
        },
        "ExecutionRoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "EnableNetworkIsolation": False,
    }
    assert sm.parse_input("CreateModel", body) == body


def test_required_member_missing(sm: ServiceShapes) -> None:
    assert validation_message(sm, "CreateModel", {}) == (
        "1 validation error detected: Value null at 'modelName' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_null_is_treated_as_absent(sm: ServiceShapes) -> None:
    assert sm.parse_input("CreateModel", {"ModelName": "m", "ExecutionRoleArn": None}) == {
        "ModelName": "m"
    }
    assert "Value null at 'modelName'" in validation_message(sm, "CreateModel", {"ModelName": None})


def test_map_keys_and_values(sm: ServiceShapes) -> None:
    body = {
        "ModelName": "m",
        "PrimaryContainer": {"Environment": {"bad key": "x", "BIG": "y" * 1025}},
    }
    message = validation_message(sm, "CreateModel", body)
    assert message.startswith("2 validation errors detected: ")
    assert (
        "Value 'bad key' at 'primaryContainer.environment' failed to satisfy constraint: "
        "Map keys must satisfy constraint: "
        "[Member must satisfy regular expression pattern: ^[a-zA-Z_][a-zA-Z0-9_]*]"
    ) in message
    assert (
        "at 'primaryContainer.environment.BIG' failed to satisfy constraint: "
        "Member must have length less than or equal to 1024"
    ) in message


def test_map_size(sm: ServiceShapes) -> None:
    env = {f"K{i}": "v" for i in range(101)}
    message = validation_message(
        sm, "CreateModel", {"ModelName": "m", "PrimaryContainer": {"Environment": env}}
    )
    assert message.endswith(
        "at 'primaryContainer.environment' failed to satisfy constraint: "
        "Member must have length less than or equal to 100"
    )


def test_list_max_and_nested_path(sm: ServiceShapes) -> None:
    containers = [{"Image": "img"}] * 15 + [{"Image": "img", "Mode": "Nope"}]
    message = validation_message(sm, "CreateModel", {"ModelName": "m", "Containers": containers})
    assert message.startswith("2 validation errors detected: ")
    assert "at 'containers' failed to satisfy constraint: " in message
    assert "Member must have length less than or equal to 15" in message
    assert (
        "Value 'Nope' at 'containers.16.member.mode' failed to satisfy constraint: "
        "Member must satisfy enum value set: [SingleModel, MultiModel]"
    ) in message


def test_huge_values_are_truncated(sm: ServiceShapes) -> None:
    message = validation_message(sm, "CreateModel", {"ModelName": "x" * 5000})
    shown = message.split("Value '", 1)[1].split("' at", 1)[0]
    assert len(shown) <= 100
    assert shown.endswith("...")
    assert len(message) < 400


# --- CreateEndpointConfig -------------------------------------------------------------------


def test_full_endpoint_config_passes_unchanged(sm: ServiceShapes) -> None:
    body = full_endpoint_config()
    original = copy.deepcopy(body)
    assert sm.parse_input("CreateEndpointConfig", body) == original
    assert body == original


def test_instance_type_enum(sm: ServiceShapes) -> None:
    body = {"EndpointConfigName": "c", "ProductionVariants": [variant(InstanceType="ml.huge")]}
    message = validation_message(sm, "CreateEndpointConfig", body)
    assert message.startswith(
        "1 validation error detected: Value 'ml.huge' at 'productionVariants.1.member.instanceType'"
        " failed to satisfy constraint: Member must satisfy enum value set: [ml.t2.medium, "
    )
    assert message.endswith("]")


def test_initial_instance_count_range(sm: ServiceShapes) -> None:
    body = {"EndpointConfigName": "c", "ProductionVariants": [variant(InitialInstanceCount=0)]}
    assert validation_message(sm, "CreateEndpointConfig", body) == (
        "1 validation error detected: Value '0' at "
        "'productionVariants.1.member.initialInstanceCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"MemorySizeInMB": 512, "MaxConcurrency": 1},
            "Value '512' at 'productionVariants.1.member.serverlessConfig.memorySizeInMB' failed "
            "to satisfy constraint: Member must have value greater than or equal to 1024",
        ),
        (
            {"MemorySizeInMB": 8192, "MaxConcurrency": 1},
            "Value '8192' at 'productionVariants.1.member.serverlessConfig.memorySizeInMB' failed "
            "to satisfy constraint: Member must have value less than or equal to 6144",
        ),
        (
            {"MemorySizeInMB": 1024, "MaxConcurrency": 201},
            "Value '201' at 'productionVariants.1.member.serverlessConfig.maxConcurrency' failed "
            "to satisfy constraint: Member must have value less than or equal to 200",
        ),
        (
            {"MemorySizeInMB": 1024},
            "Value null at 'productionVariants.1.member.serverlessConfig.maxConcurrency' failed "
            "to satisfy constraint: Member must not be null",
        ),
    ],
)
def test_serverless_config_ranges(sm: ServiceShapes, config: dict[str, Any], expected: str) -> None:
    body = {"EndpointConfigName": "c", "ProductionVariants": [variant(ServerlessConfig=config)]}
    assert validation_message(sm, "CreateEndpointConfig", body) == (
        "1 validation error detected: " + expected
    )


def test_float_range_and_ints_accepted_as_floats(sm: ServiceShapes) -> None:
    body: dict[str, Any] = {
        "EndpointConfigName": "c",
        "ProductionVariants": [variant(InitialVariantWeight=2)],
    }
    parsed = sm.parse_input("CreateEndpointConfig", body)
    assert parsed["ProductionVariants"][0]["InitialVariantWeight"] == 2.0
    assert isinstance(parsed["ProductionVariants"][0]["InitialVariantWeight"], float)
    body["ProductionVariants"][0]["InitialVariantWeight"] = -0.5
    assert validation_message(sm, "CreateEndpointConfig", body).endswith(
        "Value '-0.5' at 'productionVariants.1.member.initialVariantWeight' failed to satisfy "
        "constraint: Member must have value greater than or equal to 0"
    )


@pytest.mark.parametrize(("count", "constraint"), [(0, "greater"), (11, "less")])
def test_production_variants_list_length(sm: ServiceShapes, count: int, constraint: str) -> None:
    body = {"EndpointConfigName": "c", "ProductionVariants": [variant()] * count}
    message = validation_message(sm, "CreateEndpointConfig", body)
    assert message.startswith("1 validation error detected: Value '[")
    limit = 1 if constraint == "greater" else 10
    assert message.endswith(
        f"at 'productionVariants' failed to satisfy constraint: "
        f"Member must have length {constraint} than or equal to {limit}"
    )


def test_multiple_errors_in_one_message(sm: ServiceShapes) -> None:
    body = {"ProductionVariants": [variant(InitialInstanceCount=0)]}
    assert validation_message(sm, "CreateEndpointConfig", body) == (
        "2 validation errors detected: Value null at 'endpointConfigName' failed to satisfy "
        "constraint: Member must not be null; Value '0' at "
        "'productionVariants.1.member.initialInstanceCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )


# --- CreateEndpoint -------------------------------------------------------------------------


def test_endpoint_name_pattern(sm: ServiceShapes) -> None:
    body = {"EndpointName": "bad name!", "EndpointConfigName": "c"}
    assert validation_message(sm, "CreateEndpoint", body) == (
        "1 validation error detected: Value 'bad name!' at 'endpointName' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {NAME_PATTERN}"
    )


def test_endpoint_name_length(sm: ServiceShapes) -> None:
    assert sm.parse_input("CreateEndpoint", {"EndpointName": "a" * 63, "EndpointConfigName": "c"})
    message = validation_message(
        sm, "CreateEndpoint", {"EndpointName": "a" * 64, "EndpointConfigName": "c"}
    )
    assert message == (
        f"2 validation errors detected: Value '{'a' * 64}' at 'endpointName' failed to satisfy "
        "constraint: Member must have length less than or equal to 63; "
        f"Value '{'a' * 64}' at 'endpointName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}"
    )


def test_pattern_is_a_full_match(sm: ServiceShapes) -> None:
    body = {"EndpointName": "ok-name", "EndpointConfigName": "trailing-"}
    assert "at 'endpointConfigName'" in validation_message(sm, "CreateEndpoint", body)


def test_unknown_members(sm: ServiceShapes) -> None:
    body = {"EndpointName": "e", "EndpointConfigName": "c", "Colour": "blue"}
    message = validation_message(sm, "CreateEndpoint", body)
    assert message == (
        "1 validation error detected: Unknown parameter 'Colour' in input, must be one of: "
        "EndpointName, EndpointConfigName, DeploymentConfig, Tags"
    )
    nested = {"EndpointConfigName": "c", "ProductionVariants": [variant(Extra=1)]}
    assert (
        "Unknown parameter 'Extra' at 'productionVariants.1.member', must be one of: VariantName, "
    ) in validation_message(sm, "CreateEndpointConfig", nested)


# --- ListEndpoints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (1529870369.986, datetime(2018, 6, 24, 19, 59, 29, 986000, tzinfo=UTC)),
        (1529870369, datetime(2018, 6, 24, 19, 59, 29, tzinfo=UTC)),
        ("1529870369", datetime(2018, 6, 24, 19, 59, 29, tzinfo=UTC)),
        ("2018-06-24T19:59:29Z", datetime(2018, 6, 24, 19, 59, 29, tzinfo=UTC)),
        ("2018-06-24T19:59:29", datetime(2018, 6, 24, 19, 59, 29, tzinfo=UTC)),
        (
            "2018-06-24T21:59:29+02:00",
            datetime(2018, 6, 24, 21, 59, 29, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_timestamps_become_aware_datetimes(
    sm: ServiceShapes, wire: float | str, expected: datetime
) -> None:
    parsed = sm.parse_input("ListEndpoints", {"CreationTimeAfter": wire})
    assert parsed["CreationTimeAfter"] == expected
    assert parsed["CreationTimeAfter"].tzinfo is not None


@pytest.mark.parametrize("wire", ["yesterday", "nan", 1e20, True])
def test_bad_timestamps(sm: ServiceShapes, wire: Any) -> None:
    with pytest.raises(SerializationException) as info:
        sm.parse_input("ListEndpoints", {"CreationTimeBefore": wire})
    assert "'creationTimeBefore'" in info.value.message


def test_sort_by_enum(sm: ServiceShapes) -> None:
    assert validation_message(sm, "ListEndpoints", {"SortBy": "Size"}) == (
        "1 validation error detected: Value 'Size' at 'sortBy' failed to satisfy constraint: "
        "Member must satisfy enum value set: [Name, CreationTime, Status]"
    )


@pytest.mark.parametrize(("value", "word", "limit"), [(0, "greater", 1), (101, "less", 100)])
def test_max_results_range(sm: ServiceShapes, value: int, word: str, limit: int) -> None:
    assert validation_message(sm, "ListEndpoints", {"MaxResults": value}) == (
        f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy "
        f"constraint: Member must have value {word} than or equal to {limit}"
    )


def test_integral_floats_are_integers(sm: ServiceShapes) -> None:
    parsed = sm.parse_input("ListEndpoints", {"MaxResults": 10.0})
    assert parsed == {"MaxResults": 10}
    assert isinstance(parsed["MaxResults"], int)


# --- type mismatches: SerializationException ------------------------------------------------


@pytest.mark.parametrize(
    ("op", "body", "expected"),
    [
        (
            "ListEndpoints",
            {"MaxResults": "10"},
            "STRING_VALUE can not be converted to an Integer at 'maxResults'",
        ),
        (
            "ListEndpoints",
            {"MaxResults": 1.5},
            "NUMBER_VALUE can not be converted to an Integer at 'maxResults'",
        ),
        (
            "ListEndpoints",
            {"MaxResults": True},
            "TRUE_VALUE can not be converted to an Integer at 'maxResults'",
        ),
        (
            "ListEndpoints",
            {"MaxResults": 2**31},
            "NUMBER_VALUE can not be converted to an Integer at 'maxResults'",
        ),
        (
            "ListEndpoints",
            {"NameContains": 5},
            "NUMBER_VALUE can not be converted to a String at 'nameContains'",
        ),
        (
            "CreateModel",
            {"ModelName": "m", "EnableNetworkIsolation": "true"},
            "STRING_VALUE can not be converted to a Boolean at 'enableNetworkIsolation'",
        ),
        (
            "AddTags",
            {"ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m", "Tags": {}},
            "START_OBJECT can not be converted to a List at 'tags'",
        ),
        (
            "AddTags",
            {
                "ResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m",
                "Tags": [{"Key": ["k"], "Value": "v"}],
            },
            "Start of list found where not expected at 'tags.1.member.key'",
        ),
        (
            "CreateEndpoint",
            {"EndpointName": {"a": 1}, "EndpointConfigName": "c"},
            "Start of structure or map found where not expected at 'endpointName'",
        ),
        (
            "CreateModel",
            {"ModelName": "m", "PrimaryContainer": "img"},
            "STRING_VALUE can not be converted to a Structure at 'primaryContainer'",
        ),
    ],
)
def test_type_mismatch_is_a_serialization_exception(
    sm: ServiceShapes, op: str, body: dict[str, Any], expected: str
) -> None:
    assert serialization_message(sm, op, body) == expected


def test_type_mismatch_wins_over_constraint_errors(sm: ServiceShapes) -> None:
    body = {"EndpointName": "bad name!", "EndpointConfigName": 3}
    assert serialization_message(sm, "CreateEndpoint", body).startswith("NUMBER_VALUE")


# --- AddTags --------------------------------------------------------------------------------


ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"


def test_add_tags(sm: ServiceShapes) -> None:
    body = {"ResourceArn": ARN, "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}]}
    assert sm.parse_input("AddTags", body) == body


def test_add_tags_errors(sm: ServiceShapes) -> None:
    tags = [{"Key": f"k{i}", "Value": "v"} for i in range(50)] + [{"Value": "v"}]
    message = validation_message(sm, "AddTags", {"ResourceArn": "not-an-arn", "Tags": tags})
    assert message.startswith("3 validation errors detected: Value 'not-an-arn' at 'resourceArn'")
    assert (
        "at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50"
    ) in message
    assert message.endswith(
        "Value null at 'tags.51.member.key' failed to satisfy constraint: Member must not be null"
    )


def test_patterns_python_cannot_compile_are_skipped(sm: ServiceShapes) -> None:
    # TagKey's pattern uses Java's \p{L}; it is not enforced, and raises nothing.
    assert compile_pattern(r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)") is None
    body = {"ResourceArn": ARN, "Tags": [{"Key": "<not>{allowed}", "Value": "v"}]}
    assert sm.parse_input("AddTags", body) == body


def test_compiled_patterns_are_cached() -> None:
    assert compile_pattern("[a-z]+") is compile_pattern("[a-z]+")


def test_recursive_shapes(sm: ServiceShapes) -> None:
    leaf: dict[str, Any] = {
        "Filters": [{"Name": "EndpointName", "Operator": "Equals", "Value": "e"}]
    }
    body = {"Resource": "Endpoint", "SearchExpression": {"SubExpressions": [leaf]}}
    assert sm.parse_input("Search", body) == body
    leaf["Operator"] = "Maybe"
    assert "'searchExpression.subExpressions.1.member.operator'" in validation_message(
        sm, "Search", body
    )


# --- blobs (sagemaker-runtime's model, which has them) --------------------------------------


def test_blobs_are_base64_decoded_and_encoded() -> None:
    runtime = shapes_for("sagemaker-runtime")
    encoded = base64.b64encode(b"\x00\x01payload").decode()
    parsed = runtime.parse_input("InvokeEndpoint", {"EndpointName": "e", "Body": encoded})
    assert parsed == {"EndpointName": "e", "Body": b"\x00\x01payload"}
    with pytest.raises(SerializationException):
        runtime.parse_input("InvokeEndpoint", {"EndpointName": "e", "Body": "%%%"})
    out = runtime.serialize_output("InvokeEndpoint", {"Body": b"\xff", "ContentType": None})
    assert out == {"Body": "/w=="}


# --- serialize_output -----------------------------------------------------------------------


class Status(StrEnum):
    IN_SERVICE = "InService"


def test_serialize_describe_endpoint(sm: ServiceShapes) -> None:
    created = datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    result = {
        "EndpointName": "e",
        "EndpointArn": ARN,
        "EndpointConfigName": "c",
        "EndpointStatus": Status.IN_SERVICE,
        "FailureReason": None,
        "CreationTime": created,
        "LastModifiedTime": datetime(2024, 1, 2, 3, 4, 5),  # naive: read as UTC
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "DeployedImages": [{"SpecifiedImage": "img", "ResolutionTime": created}],
                "CurrentWeight": 1.0,
                "CurrentInstanceCount": 1,
            }
        ],
    }
    out = sm.serialize_output("DescribeEndpoint", result)
    assert out == {
        "EndpointName": "e",
        "EndpointArn": ARN,
        "EndpointConfigName": "c",
        "EndpointStatus": "InService",
        "CreationTime": 1704164645.5,
        "LastModifiedTime": 1704164645.0,
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "DeployedImages": [{"SpecifiedImage": "img", "ResolutionTime": 1704164645.5}],
                "CurrentWeight": 1.0,
                "CurrentInstanceCount": 1,
            }
        ],
    }
    assert type(out["EndpointStatus"]) is str


def test_serialize_rejects_members_not_in_the_shape(sm: ServiceShapes) -> None:
    with pytest.raises(KeyError, match="'Colour' is not a member of DescribeEndpointOutput"):
        sm.serialize_output("DescribeEndpoint", {"EndpointName": "e", "Colour": "blue"})
    with pytest.raises(KeyError, match="DeployedImage"):
        sm.serialize_output(
            "DescribeEndpoint",
            {"ProductionVariants": [{"VariantName": "v", "DeployedImages": [{"Oops": 1}]}]},
        )


def test_serialize_operation_without_output(sm: ServiceShapes) -> None:
    assert sm.serialize_output("DeleteEndpoint", {}) == {}
    with pytest.raises(KeyError):
        sm.serialize_output("DeleteEndpoint", {"EndpointArn": ARN})


# --- application-autoscaling ----------------------------------------------------------------


def test_register_scalable_target() -> None:
    aas = shapes_for("application-autoscaling")
    assert aas.target_prefix == "AnyScaleFrontendService"
    body = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/e/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": 1,
        "MaxCapacity": 4,
    }
    assert aas.parse_input("RegisterScalableTarget", body) == body
    message = validation_message(
        aas, "RegisterScalableTarget", {**body, "ServiceNamespace": "mainframe", "ResourceId": None}
    )
    assert message.startswith(
        "2 validation errors detected: Value 'mainframe' at 'serviceNamespace' failed to satisfy "
        "constraint: Member must satisfy enum value set: [ecs, "
    )
    assert message.endswith(
        "Value null at 'resourceId' failed to satisfy constraint: Member must not be null"
    )
    with pytest.raises(SerializationException):
        aas.parse_input("RegisterScalableTarget", {**body, "MinCapacity": "1"})


# --- speed ----------------------------------------------------------------------------------


def test_validating_create_endpoint_config_is_fast(sm: ServiceShapes) -> None:
    """Relative, not wall-clock: validating a full CreateEndpointConfig costs at most a few
    deep copies of the same document (about 2-3 here), measured back to back, best of several
    rounds; compiling the shapes on every call, say, would cost far more."""
    body = full_endpoint_config()
    sm.parse_input("CreateEndpointConfig", body)

    def best(work: Callable[[], object], runs: int = 50) -> float:
        start = time.perf_counter()
        for _ in range(runs):
            work()
        return (time.perf_counter() - start) / runs

    validate, copied = [], []
    for _ in range(5):
        validate.append(best(lambda: sm.parse_input("CreateEndpointConfig", body)))
        copied.append(best(lambda: copy.deepcopy(body)))
    ratio = min(validate) / min(copied)
    assert ratio < 10, f"validating costs {ratio:.1f} deep copies of the request"
