"""CreateEndpoint, DescribeEndpoint, ListEndpoints, UpdateEndpoint(WeightsAndCapacities),
DeleteEndpoint and the boto3 waiters, against real instances."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, unique, wait_gone

pytestmark = pytest.mark.api

ACCOUNT = "arn:aws:sagemaker:us-east-1:123456789012"
ECHO = str(FIXTURE_MODELS / "echo")
WAIT = {"Delay": 1, "MaxAttempts": 60}
# model_fn blocks, so an endpoint on this model stays Creating while the tests look at it.
# The server finishes a startup before it acts on DeleteEndpoint, so keep this short.
SLOW_START_S = 6
SLOW_START = f"""
import time


def model_fn(model_dir):
    time.sleep({SLOW_START_S})


def transform_fn(model, data, content_type, accept):
    return data, content_type
"""


def error(call: Callable[..., Any], **kwargs: Any) -> dict[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return cast(dict[str, str], info.value.response["Error"])


@pytest.fixture(scope="module")
def live(server: LiveServer) -> Iterator[str]:
    """One InService endpoint (variant AllTraffic, weight 2.0) shared by this module."""
    sm = server.client("sagemaker")
    name = unique("ep-live")
    variants = [
        {
            "VariantName": "AllTraffic",
            "ModelName": name,
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 2.0,
        }
    ]
    desc = deploy(sm, name, ECHO, variants=variants)
    assert desc["EndpointStatus"] == "InService", desc
    yield name
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


@pytest.fixture(scope="module")
def creating(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An endpoint that stays Creating for SLOW_START_S seconds; deleted afterwards."""
    sm = server.client("sagemaker")
    code = tmp_path_factory.mktemp("slow-start") / "code"
    code.mkdir()
    (code / "inference.py").write_text(SLOW_START)
    name = unique("ep-creating")
    deploy(sm, name, str(code.parent), wait=False)
    yield name
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


def test_lifecycle_with_waiters(sm: Any) -> None:
    name = unique("ep-cycle")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": ECHO})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    out = sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert out["EndpointArn"] == f"{ACCOUNT}:endpoint/{name}"
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] in {"Creating", "InService"}
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=WAIT)
    assert sm.list_endpoints(NameContains=name)["Endpoints"] == []


def test_describe_in_service(sm: Any, live: str) -> None:
    desc = sm.describe_endpoint(EndpointName=live)
    assert desc["EndpointName"] == live
    assert desc["EndpointArn"] == f"{ACCOUNT}:endpoint/{live}"
    assert desc["EndpointConfigName"] == live
    assert desc["EndpointStatus"] == "InService"
    assert isinstance(desc["CreationTime"], datetime)
    assert desc["LastModifiedTime"] >= desc["CreationTime"]
    assert "FailureReason" not in desc
    [pv] = desc["ProductionVariants"]
    assert pv["VariantName"] == "AllTraffic"
    assert (pv["CurrentWeight"], pv["DesiredWeight"]) == (2.0, 2.0)
    assert (pv["CurrentInstanceCount"], pv["DesiredInstanceCount"]) == (1, 1)


def test_missing_endpoint_is_validation_exception(sm: Any) -> None:
    name = unique("Ep-Missing")
    message = f'Could not find endpoint "{ACCOUNT}:endpoint/{name.lower()}".'
    for call in (sm.describe_endpoint, sm.delete_endpoint):
        assert error(call, EndpointName=name) == {
            "Code": "ValidationException",
            "Message": message,
        }


def test_duplicate_endpoint_is_refused(sm: Any, live: str) -> None:
    err = error(sm.create_endpoint, EndpointName=live, EndpointConfigName=live)
    assert err == {
        "Code": "ValidationException",
        "Message": f'Cannot create already existing endpoint "{ACCOUNT}:endpoint/{live}".',
    }


def test_create_with_missing_config(sm: Any) -> None:
    name = unique("ep-noconfig")
    err = error(sm.create_endpoint, EndpointName=name, EndpointConfigName=name)
    assert err == {
        "Code": "ValidationException",
        "Message": f'Could not find endpoint configuration "{ACCOUNT}:endpoint-config/{name}".',
    }
    assert sm.list_endpoints(NameContains=name)["Endpoints"] == []


def test_a_config_in_use_can_be_deleted_and_its_endpoint_goes_on(
    server: LiveServer, sm: Any
) -> None:
    """As on SageMaker. The SageMaker Python SDK's Predictor.delete_endpoint() deletes the
    endpoint's config first, then the endpoint: both calls must succeed."""
    rt = server.client("sagemaker-runtime")
    name = unique("ep-cfg-gone")
    assert deploy(sm, name, ECHO)["EndpointStatus"] == "InService"
    sm.delete_endpoint_config(EndpointConfigName=name)
    assert error(sm.describe_endpoint_config, EndpointConfigName=name)["Message"] == (
        f'Could not find endpoint configuration "{ACCOUNT}:endpoint-config/{name}".'
    )
    desc = sm.describe_endpoint(EndpointName=name)
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", name)
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert rt.invoke_endpoint(EndpointName=name, Body=b"still here")["Body"].read() == (
        b"still here"
    )
    sm.update_endpoint_weights_and_capacities(  # works from the endpoint's own copy
        EndpointName=name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": 3.0}],
    )
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
    assert variant["CurrentWeight"] == 3.0
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


def test_update_weights_with_unknown_variant(sm: Any, live: str) -> None:
    err = error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName=live,
        DesiredWeightsAndCapacities=[{"VariantName": "NoSuchVariant", "DesiredWeight": 1.0}],
    )
    assert err == {
        "Code": "ValidationException",
        "Message": f"The variant name(s) [NoSuchVariant] is/are not present in endpoint {live}.",
    }
    assert sm.describe_endpoint(EndpointName=live)["EndpointStatus"] == "InService"


def test_update_while_creating_is_refused(sm: Any, creating: str) -> None:
    assert sm.describe_endpoint(EndpointName=creating)["EndpointStatus"] == "Creating"
    message = f'Cannot update in-progress endpoint "{ACCOUNT}:endpoint/{creating}".'
    err = error(sm.update_endpoint, EndpointName=creating, EndpointConfigName=creating)
    assert err == {"Code": "ValidationException", "Message": message}
    err = error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName=creating,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": 3.0}],
    )
    assert err == {"Code": "ValidationException", "Message": message}
    assert sm.describe_endpoint(EndpointName=creating)["EndpointStatus"] == "Creating"


def test_list_status_equals(sm: Any, live: str, creating: str) -> None:
    def listed(status: str, name: str) -> list[str]:
        found = sm.list_endpoints(StatusEquals=status, NameContains=name)["Endpoints"]
        return [e["EndpointName"] for e in found]

    assert listed("InService", live) == [live]
    assert listed("Creating", live) == []
    assert listed("Creating", creating) == [creating]
    assert listed("InService", creating) == []
    [summary] = sm.list_endpoints(NameContains=live)["Endpoints"]
    assert summary["EndpointArn"] == f"{ACCOUNT}:endpoint/{live}"
    assert summary["EndpointStatus"] == "InService"
    assert isinstance(summary["LastModifiedTime"], datetime)


def test_update_weights_applies(sm: Any, live: str) -> None:
    def set_weight(weight: float) -> dict[str, Any]:
        out = sm.update_endpoint_weights_and_capacities(
            EndpointName=live,
            DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredWeight": weight}],
        )
        assert out["EndpointArn"] == f"{ACCOUNT}:endpoint/{live}"
        sm.get_waiter("endpoint_in_service").wait(EndpointName=live, WaiterConfig=WAIT)
        [pv] = sm.describe_endpoint(EndpointName=live)["ProductionVariants"]
        return {k: pv[k] for k in ("CurrentWeight", "DesiredWeight", "CurrentInstanceCount")}

    try:
        assert set_weight(5.0) == {
            "CurrentWeight": 5.0,
            "DesiredWeight": 5.0,
            "CurrentInstanceCount": 1,
        }
    finally:
        set_weight(2.0)  # the module's endpoint is shared
