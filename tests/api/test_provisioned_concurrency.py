"""Application Auto Scaling of a serverless variant's provisioned concurrency
(``sagemaker:variant:DesiredProvisionedConcurrency``), with boto3 on a live server: raising it
keeps an idle variant warm (and wakes one that scaled to zero, with no request waiting);
lowering it to 0 (a target-tracking policy over
SageMakerVariantProvisionedConcurrencyUtilization, with no traffic) lets it scale to zero.
DescribeEndpoint shows the value in effect; scaling activities record each change."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_scale_to_zero import PID_MODEL, _alive, _pid, _wait_dead
from tests.fixtures.server import LiveServer, deploy, unique, wait_gone

pytestmark = pytest.mark.api

IDLE_S = 1.0
DIM = "sagemaker:variant:DesiredProvisionedConcurrency"
UTILIZATION = "SageMakerVariantProvisionedConcurrencyUtilization"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "MODELHOST_SERVERLESS_IDLE_S": str(IDLE_S),
        "MODELHOST_AUTOSCALING_INTERVAL_S": "0.2",
        "MODELHOST_AUTOSCALING_WINDOW_S": "1",
    }
    with LiveServer(tmp_path_factory.mktemp("provisioned"), env=env) as live:
        yield live


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _configs(sm: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (variant,) = sm.describe_endpoint(EndpointName=name)["ProductionVariants"]
    return variant["CurrentServerlessConfig"], variant["DesiredServerlessConfig"]


def _shows(sm: Any, name: str, provisioned: int | None) -> bool:
    current, desired = _configs(sm, name)
    return current == desired and current.get("ProvisionedConcurrency") == provisioned


def test_provisioned_concurrency_autoscaling_keeps_warm_and_lets_sleep(
    server: LiveServer,
) -> None:
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    aas = server.client("application-autoscaling")
    name = unique("ep-pc")
    config = {"MemorySizeInMB": 1024, "MaxConcurrency": 4}
    variants = [{"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": config}]
    assert deploy(sm, name, str(PID_MODEL), variants=variants)["EndpointStatus"] == "InService"
    assert _shows(sm, name, None)
    base = {"ServiceNamespace": "sagemaker", "ResourceId": f"endpoint/{name}/variant/AllTraffic"}
    target = {**base, "ScalableDimension": DIM}

    # Bad input changes nothing: more than MaxConcurrency, an instance-count metric.
    with pytest.raises(ClientError) as info:
        aas.register_scalable_target(**target, MinCapacity=0, MaxCapacity=5)
    assert "MaxConcurrency 4" in info.value.response["Error"]["Message"]
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []

    # A minimum of 1 provisions one at once: the idle variant stays warm.
    aas.register_scalable_target(**target, MinCapacity=1, MaxCapacity=4)
    _wait_for(lambda: _shows(sm, name, 1), 10, "ProvisionedConcurrency 1")
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    (activity,) = aas.describe_scaling_activities(**base)["ScalingActivities"]
    assert activity["StatusCode"] == "Successful", activity
    assert activity["ScalableDimension"] == DIM
    warm = _pid(rt, name)
    time.sleep(IDLE_S * 3)  # not synchronisation: the idle period passing, three times over
    assert _alive(warm) and _pid(rt, name) == warm

    tracking = {"TargetValue": 0.5, "ScaleInCooldown": 0, "ScaleOutCooldown": 0}
    with pytest.raises(ClientError) as info:
        metric = {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
        aas.put_scaling_policy(
            **target, PolicyName="wrong", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                **tracking, "PredefinedMetricSpecification": metric
            },
        )  # fmt: skip
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert UTILIZATION in info.value.response["Error"]["Message"]

    # Target tracking with no traffic and a minimum of 0: down to 0, then to zero instances.
    aas.put_scaling_policy(
        **target, PolicyName="pc", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            **tracking, "PredefinedMetricSpecification": {"PredefinedMetricType": UTILIZATION}
        },
    )  # fmt: skip
    aas.register_scalable_target(**target, MinCapacity=0)
    _wait_for(lambda: _shows(sm, name, None), 15, "ProvisionedConcurrency 0")
    _wait_dead(warm, 30)
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"

    # Raising the minimum wakes the variant with no request waiting, and keeps it warm.
    aas.register_scalable_target(**target, MinCapacity=2)
    _wait_for(lambda: _shows(sm, name, 2), 10, "ProvisionedConcurrency 2")
    woken = f"{name}/AllTraffic started from zero"
    _wait_for(lambda: woken in server.log_tail(400), 30, "the variant to start")
    again = _pid(rt, name)
    assert again != warm
    time.sleep(IDLE_S * 3)
    assert _alive(again) and _pid(rt, name) == again
    causes = [a["Cause"] for a in aas.describe_scaling_activities(**base)["ScalingActivities"]]
    assert any("minimum capacity was set to 2" in c for c in causes), causes
    assert any(UTILIZATION.removeprefix("SageMakerVariant") in c for c in causes), causes

    aas.deregister_scalable_target(**target)
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)
