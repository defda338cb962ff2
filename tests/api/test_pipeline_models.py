"""CreateModel's rules for models with several containers (serial inference pipelines and
Direct multi-container endpoints), through real boto3: each refusal is a
ValidationException that names the cause and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, unique

pytestmark = pytest.mark.api

ECHO = str(FIXTURE_MODELS / "echo")


def _refused(sm: Any, name: str, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        sm.create_model(ModelName=name, **kwargs)
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError, match="Could not find model"):
        sm.describe_model(ModelName=name)
    message: str = err["Error"]["Message"]
    return message


def _c(hostname: str | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"ModelDataUrl": ECHO, **extra}
    if hostname is not None:
        c["ContainerHostname"] = hostname
    return c


def test_direct_needs_a_hostname_on_every_container(sm: Any) -> None:
    message = _refused(
        sm,
        unique("direct-nohost"),
        Containers=[_c("a"), _c()],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    assert "ContainerHostname must be specified for every container" in message
    assert "container(s) 2 have none" in message


def test_hostnames_must_be_unique(sm: Any) -> None:
    message = _refused(sm, unique("dup-host"), Containers=[_c("same"), _c("Same")])
    assert "ContainerHostname Same is used by more than one container" in message


def test_direct_needs_containers_not_a_primary_container(sm: Any) -> None:
    message = _refused(
        sm,
        unique("direct-primary"),
        PrimaryContainer=_c("a"),
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    assert "only supported for a model with Containers" in message


def test_at_most_one_multi_model_container_in_a_pipeline(sm: Any) -> None:
    message = _refused(
        sm,
        unique("two-mme"),
        Containers=[_c(Mode="MultiModel"), _c(Mode="MultiModel"), _c()],
    )
    assert "at most one container with Mode MultiModel" in message


def test_at_most_fifteen_containers(server: LiveServer) -> None:
    # botocore does not check list lengths; the server does, as SageMaker's service does.
    sm = server.client("sagemaker", parameter_validation=False)
    message = _refused(sm, unique("sixteen"), Containers=[_c() for _ in range(16)])
    assert "15" in message


def test_a_valid_pipeline_and_direct_model_are_created_as_given(sm: Any) -> None:
    serial = unique("serial-ok")
    sm.create_model(ModelName=serial, Containers=[_c(), _c("post")])
    assert [
        c.get("ContainerHostname") for c in sm.describe_model(ModelName=serial)["Containers"]
    ] == [None, "post"]
    direct = unique("direct-ok")
    sm.create_model(
        ModelName=direct,
        Containers=[_c("a"), _c("b")],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    desc = sm.describe_model(ModelName=direct)
    assert desc["InferenceExecutionConfig"] == {"Mode": "Direct"}


def test_a_serverless_variant_refuses_a_pipeline_model(sm: Any) -> None:
    model = unique("serverless-pipe")
    sm.create_model(ModelName=model, Containers=[_c(), _c()])
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(
            EndpointConfigName=model,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2},
                }
            ],
        )
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert "serverless endpoints do not support models with multiple containers" in (err["Message"])


def test_an_async_endpoint_config_refuses_a_direct_model(sm: Any, tmp_path: Any) -> None:
    model = unique("async-direct")
    sm.create_model(
        ModelName=model,
        Containers=[_c("a"), _c("b")],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(
            EndpointConfigName=model,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"file://{tmp_path}"}},
        )
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert "asynchronous inference endpoints support one container" in err["Message"]
