"""CreateModel, DescribeModel, ListModels, DeleteModel through real boto3."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, unique

pytestmark = pytest.mark.api

ARN_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012:model/"
ECHO = str(FIXTURE_MODELS / "echo")
SUM = str(FIXTURE_MODELS / "sum")
ROLE = "arn:aws:iam::123456789012:role/service-role/SageMakerRole"


def error(call: Callable[..., Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return cast(dict[str, str], info.value.response["Error"])


def model_names(sm: Any) -> set[str]:
    pages = sm.get_paginator("list_models").paginate()
    return {m["ModelName"] for page in pages for m in page["Models"]}


def test_create_returns_lower_cased_arn(sm: Any) -> None:
    name = unique("Model-MixedCase")
    out = sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    assert out["ModelArn"] == ARN_PREFIX + name.lower()


def test_describe_round_trips_every_field(sm: Any) -> None:
    name = unique("model-full")
    container = {
        "ContainerHostname": "main",
        "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/inference:1.0",
        "Mode": "SingleModel",
        "ModelDataUrl": ECHO,
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "LOG_LEVEL": "20"},
    }
    sm.create_model(
        ModelName=name,
        PrimaryContainer=container,
        ExecutionRoleArn=ROLE,
        EnableNetworkIsolation=True,
    )
    desc = sm.describe_model(ModelName=name)
    assert desc["ModelName"] == name
    assert desc["ModelArn"] == ARN_PREFIX + name
    assert desc["PrimaryContainer"] == container
    assert desc["ExecutionRoleArn"] == ROLE
    assert desc["EnableNetworkIsolation"] is True
    assert isinstance(desc["CreationTime"], datetime)


def test_describe_round_trips_containers_and_execution_mode(sm: Any) -> None:
    name = unique("model-pipeline")
    containers = [
        {"ContainerHostname": "first", "ModelDataUrl": ECHO, "Environment": {"A": "1"}},
        {"ContainerHostname": "second", "ModelDataUrl": SUM, "Environment": {"B": "2"}},
    ]
    sm.create_model(
        ModelName=name, Containers=containers, InferenceExecutionConfig={"Mode": "Direct"}
    )
    desc = sm.describe_model(ModelName=name)
    assert desc["Containers"] == containers
    assert desc["InferenceExecutionConfig"] == {"Mode": "Direct"}
    assert "PrimaryContainer" not in desc


def test_list_includes_summary(sm: Any) -> None:
    name = unique("model-listed")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    models = sm.list_models(NameContains=name)["Models"]
    assert [m["ModelName"] for m in models] == [name]
    assert models[0]["ModelArn"] == ARN_PREFIX + name
    assert isinstance(models[0]["CreationTime"], datetime)


def test_delete_then_describe_is_not_found(sm: Any) -> None:
    name = unique("model-deleted")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    sm.delete_model(ModelName=name)
    err = error(sm.describe_model, ModelName=name)
    assert err == {
        "Code": "ValidationException",
        "Message": f'Could not find model "{ARN_PREFIX}{name}".',
    }
    assert sm.list_models(NameContains=name)["Models"] == []


@pytest.mark.parametrize("op", ["describe_model", "delete_model"])
def test_missing_model_is_validation_exception(sm: Any, op: str) -> None:
    name = unique("Model-Missing")
    err = error(getattr(sm, op), ModelName=name)
    assert err["Code"] == "ValidationException"
    assert err["Message"] == f'Could not find model "{ARN_PREFIX}{name.lower()}".'


@pytest.mark.parametrize("second", ["same", "upper"])
def test_duplicate_is_refused(sm: Any, second: str) -> None:
    name = unique("model-dup")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    again = name if second == "same" else name.upper()
    err = error(sm.create_model, ModelName=again, PrimaryContainer={"ModelDataUrl": SUM})
    assert err == {
        "Code": "ValidationException",
        "Message": f'Cannot create already existing model "{ARN_PREFIX}{name}".',
    }
    assert sm.describe_model(ModelName=name)["PrimaryContainer"]["ModelDataUrl"] == ECHO


def test_recreate_after_delete(sm: Any) -> None:
    name = unique("model-again")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    sm.delete_model(ModelName=name)
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": SUM})
    assert sm.describe_model(ModelName=name)["PrimaryContainer"]["ModelDataUrl"] == SUM


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            {"PrimaryContainer": {"ModelDataUrl": ECHO}, "Containers": [{"ModelDataUrl": ECHO}]},
            "Specify either PrimaryContainer or Containers, not both.",
        ),
        ({}, "Either PrimaryContainer or Containers must be specified."),
        (
            {"PrimaryContainer": {"ModelDataUrl": "/no/such/modelhost/dir"}},
            "Could not access model data at /no/such/modelhost/dir: no such file.",
        ),
        (
            {"PrimaryContainer": {"ModelDataUrl": "s3://modelhost-no-bucket/m/model.tar.gz"}},
            "Could not access model data at s3://modelhost-no-bucket/m/model.tar.gz: "
            "no such object.",
        ),
    ],
    ids=["both", "neither", "missing-path", "missing-s3-object"],
)
def test_semantic_rules(sm: Any, request_: dict[str, Any], message: str) -> None:
    name = unique("model-bad")
    err = error(sm.create_model, ModelName=name, **request_)
    assert err == {"Code": "ValidationException", "Message": message}
    assert name not in model_names(sm)
