"""CreateEndpointConfig, DescribeEndpointConfig, ListEndpointConfigs, DeleteEndpointConfig."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, unique

pytestmark = pytest.mark.api

ACCOUNT = "arn:aws:sagemaker:us-east-1:123456789012"
ECHO = str(FIXTURE_MODELS / "echo")


def error(call: Callable[..., Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return cast(dict[str, str], info.value.response["Error"])


def config_names(sm: Any) -> set[str]:
    pages = sm.get_paginator("list_endpoint_configs").paginate()
    return {c["EndpointConfigName"] for page in pages for c in page["EndpointConfigs"]}


@pytest.fixture
def model(sm: Any) -> str:
    name = unique("cfg-model")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    return name


def variant(model: str, name: str = "AllTraffic", **extra: Any) -> dict[str, Any]:
    return {
        "VariantName": name,
        "ModelName": model,
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
        **extra,
    }


def test_create_returns_lower_cased_arn(sm: Any, model: str) -> None:
    name = unique("Config-MixedCase")
    out = sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant(model)])
    assert out["EndpointConfigArn"] == f"{ACCOUNT}:endpoint-config/{name.lower()}"


def test_describe_round_trips_instance_variants(sm: Any, model: str) -> None:
    name = unique("config-full")
    variants = [
        variant(
            model,
            "Blue",
            InitialInstanceCount=2,
            InitialVariantWeight=0.25,
            VolumeSizeInGB=30,
            ModelDataDownloadTimeoutInSeconds=600,
            ContainerStartupHealthCheckTimeoutInSeconds=120,
        ),
        variant(model, "Green", InstanceType="ml.c5.xlarge", InitialVariantWeight=0.75),
    ]
    capture = {
        "EnableCapture": True,
        "InitialSamplingPercentage": 50,
        "DestinationS3Uri": "s3://capture-bucket/prefix",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=variants,
        DataCaptureConfig=capture,
        KmsKeyId="alias/modelhost",
    )
    desc = sm.describe_endpoint_config(EndpointConfigName=name)
    assert desc["EndpointConfigName"] == name
    assert desc["EndpointConfigArn"] == f"{ACCOUNT}:endpoint-config/{name}"
    assert desc["ProductionVariants"] == variants
    assert desc["DataCaptureConfig"] == capture
    assert desc["KmsKeyId"] == "alias/modelhost"
    assert isinstance(desc["CreationTime"], datetime)


def test_describe_round_trips_serverless_and_async(sm: Any, model: str) -> None:
    name = unique("config-serverless")
    serverless = {
        "VariantName": "AllTraffic",
        "ModelName": model,
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
    }
    async_config = {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
        "OutputConfig": {"S3OutputPath": "s3://out/a", "S3FailurePath": "s3://out/f"},
    }
    sm.create_endpoint_config(
        EndpointConfigName=name, ProductionVariants=[serverless], AsyncInferenceConfig=async_config
    )
    desc = sm.describe_endpoint_config(EndpointConfigName=name)
    assert desc["ProductionVariants"] == [serverless]
    assert desc["AsyncInferenceConfig"] == async_config


def test_list_and_delete(sm: Any, model: str) -> None:
    name = unique("config-listed")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant(model)])
    listed = sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"]
    assert [c["EndpointConfigName"] for c in listed] == [name]
    assert listed[0]["EndpointConfigArn"] == f"{ACCOUNT}:endpoint-config/{name}"
    assert isinstance(listed[0]["CreationTime"], datetime)
    sm.delete_endpoint_config(EndpointConfigName=name)
    assert sm.list_endpoint_configs(NameContains=name)["EndpointConfigs"] == []


@pytest.mark.parametrize(
    "op", ["describe_endpoint_config", "delete_endpoint_config"], ids=["describe", "delete"]
)
def test_missing_config_is_validation_exception(sm: Any, op: str) -> None:
    name = unique("Config-Missing")
    err = error(getattr(sm, op), EndpointConfigName=name)
    assert err == {
        "Code": "ValidationException",
        "Message": f'Could not find endpoint configuration "{ACCOUNT}:endpoint-config/'
        f'{name.lower()}".',
    }


def test_duplicate_is_refused(sm: Any, model: str) -> None:
    name = unique("config-dup")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant(model)])
    err = error(
        sm.create_endpoint_config, EndpointConfigName=name, ProductionVariants=[variant(model)]
    )
    assert err == {
        "Code": "ValidationException",
        "Message": f'Cannot create already existing endpoint configuration "{ACCOUNT}:'
        f'endpoint-config/{name}".',
    }


def test_deleting_the_model_leaves_the_config(sm: Any, model: str) -> None:
    name = unique("config-orphan")
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant(model)])
    sm.delete_model(ModelName=model)
    desc = sm.describe_endpoint_config(EndpointConfigName=name)
    assert desc["ProductionVariants"][0]["ModelName"] == model


@pytest.mark.parametrize(
    ("make_variants", "message"),
    [
        (
            lambda m: [variant(m, ModelName="cfg-no-such-model")],
            f'Could not find model "{ACCOUNT}:model/cfg-no-such-model".',
        ),
        (
            lambda m: [{"VariantName": "AllTraffic", "ModelName": m}],
            "Production variant AllTraffic must specify either InstanceType or ServerlessConfig.",
        ),
        (
            lambda m: [variant(m, "Same"), variant(m, "Same")],
            "Variant name Same is used more than once.",
        ),
        (
            lambda m: [variant(m, ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 1})],
            "Production variant AllTraffic specifies both InstanceType and ServerlessConfig.",
        ),
    ],
    ids=["missing-model", "no-capacity", "duplicate-variant", "instance-and-serverless"],
)
def test_semantic_rules(
    sm: Any, model: str, make_variants: Callable[[str], list[dict[str, Any]]], message: str
) -> None:
    name = unique("config-bad")
    err = error(
        sm.create_endpoint_config, EndpointConfigName=name, ProductionVariants=make_variants(model)
    )
    assert err == {"Code": "ValidationException", "Message": message}
    assert name not in config_names(sm)
