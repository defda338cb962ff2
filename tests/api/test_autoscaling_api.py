"""Application Auto Scaling on the API port: boto3's ``application-autoscaling`` client and the
AWS CLI drive RegisterScalableTarget ... DescribeScalingActivities; every validation error;
a target-tracking policy scales a variant out under real (loopback, bounded) load and back in
while requests keep coming, with no request failing."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, aws_env, deploy, unique, wait_gone
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.api

ECHO = str(FIXTURE_MODELS / "echo")
AWS = Path(sys.executable).parent / "aws"
DIM = "sagemaker:variant:DesiredInstanceCount"
NS = "sagemaker"


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose scaler looks every 0.2 s over a 2 s window."""
    env = {"MODELHOST_AUTOSCALING_INTERVAL_S": "0.2", "MODELHOST_AUTOSCALING_WINDOW_S": "2"}
    with LiveServer(tmp_path_factory.mktemp("autoscaling"), env=env) as live:
        yield live


@pytest.fixture(scope="module")
def sm(fast: LiveServer) -> Any:
    return fast.client("sagemaker")


@pytest.fixture(scope="module")
def aas(fast: LiveServer) -> Any:
    return fast.client("application-autoscaling")


@pytest.fixture(scope="module")
def endpoint(sm: Any) -> Iterator[str]:
    name = unique("ep-scale")
    desc = deploy(sm, name, ECHO)
    assert desc["EndpointStatus"] == "InService", desc
    yield name
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


def rid(endpoint: str, variant: str = "AllTraffic") -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    err = info.value.response["Error"]
    return err["Code"], err["Message"]


def tracking(target: float, out_s: int = 0, in_s: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "TargetValue": target,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleOutCooldown": out_s,
        "ScaleInCooldown": in_s,
        **extra,
    }


def test_register_describe_put_delete_deregister(aas: Any, endpoint: str) -> None:
    r = rid(endpoint)
    arn = aas.register_scalable_target(
        ServiceNamespace=NS, ResourceId=r, ScalableDimension=DIM, MinCapacity=1, MaxCapacity=2
    )["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:us-east-1:123456789012:")
    # registering again updates in place, keeping the ARN; the bounds are optional then
    again = aas.register_scalable_target(
        ServiceNamespace=NS, ResourceId=r, ScalableDimension=DIM, MaxCapacity=3
    )
    assert again["ScalableTargetARN"] == arn
    (target,) = aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=[r])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
    assert target["ScalableDimension"] == DIM and target["ScalableTargetARN"] == arn
    assert "RoleARN" in target and "CreationTime" in target

    put = aas.put_scaling_policy(
        PolicyName="p1",
        ServiceNamespace=NS,
        ResourceId=r,
        ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=tracking(1e9, 300, 300),
    )
    assert put["PolicyARN"].startswith("arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:")
    assert put["PolicyARN"].endswith(f":resource/sagemaker/{r}:policyName/p1")
    assert [a["AlarmName"].split("-")[-6] for a in put["Alarms"]] == ["AlarmHigh", "AlarmLow"]
    (policy,) = aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=r)["ScalingPolicies"]
    assert policy["PolicyName"] == "p1" and policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 1e9
    custom = {
        "TargetValue": 5.0,
        "CustomizedMetricSpecification": {
            "MetricName": "InvocationsPerInstance",
            "Namespace": "AWS/SageMaker",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
            "Statistic": "Sum",
        },
        "DisableScaleIn": True,
    }
    aas.put_scaling_policy(
        PolicyName="p2",
        ServiceNamespace=NS,
        ResourceId=r,
        ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={**custom, "TargetValue": 1e9},
    )
    names = aas.describe_scaling_policies(ServiceNamespace=NS, PolicyNames=["p2"])
    assert [p["PolicyName"] for p in names["ScalingPolicies"]] == ["p2"]

    aas.delete_scaling_policy(
        PolicyName="p1", ServiceNamespace=NS, ResourceId=r, ScalableDimension=DIM
    )
    left = aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=r)["ScalingPolicies"]
    assert [p["PolicyName"] for p in left] == ["p2"]
    aas.deregister_scalable_target(ServiceNamespace=NS, ResourceId=r, ScalableDimension=DIM)
    assert (
        aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=[r])["ScalableTargets"] == []
    )
    # deregistering removes the target's policies too
    assert aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=r)["ScalingPolicies"] == []


def test_validation_errors(aas: Any, endpoint: str) -> None:
    r = rid(endpoint)
    reg = aas.register_scalable_target
    base = {"ServiceNamespace": NS, "ResourceId": r, "ScalableDimension": DIM}
    cases: list[tuple[Callable[..., Any], dict[str, Any], str, str]] = [
        (reg, {**base, "ServiceNamespace": "ecs", "MinCapacity": 1, "MaxCapacity": 2},
         "ValidationException", "Unsupported service namespace"),
        (reg, {**base, "ResourceId": f"endpoint/{endpoint}", "MinCapacity": 1, "MaxCapacity": 2},
         "ValidationException", "Unsupported resource ID"),
        (reg, {**base, "ResourceId": rid("no-such-endpoint"), "MinCapacity": 1, "MaxCapacity": 2},
         "ValidationException", "does not exist"),
        (reg, {**base, "ResourceId": rid(endpoint, "Nope"), "MinCapacity": 1, "MaxCapacity": 2},
         "ValidationException", "does not exist"),
        (reg, {**base, "ScalableDimension": "ecs:service:DesiredCount", "MinCapacity": 1,
               "MaxCapacity": 2}, "ValidationException", "Unsupported scalable dimension"),
        (reg, {**base, "ScalableDimension": "sagemaker:variant:DesiredProvisionedConcurrency",
               "MinCapacity": 1, "MaxCapacity": 2}, "ValidationException", "serverless"),
        (reg, base, "ValidationException", "MinCapacity and MaxCapacity are required"),
        (reg, {**base, "MinCapacity": 3, "MaxCapacity": 2},
         "ValidationException", "cannot be greater than"),
        (reg, {**base, "MinCapacity": 0, "MaxCapacity": 2},
         "ValidationException", "asynchronous inference endpoints only"),
        (aas.deregister_scalable_target, base, "ObjectNotFoundException",
         "No scalable target found"),
        (aas.put_scaling_policy, {**base, "PolicyName": "p", "PolicyType":
         "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": tracking(5.0)},
         "ObjectNotFoundException", "No scalable target registered"),
        (aas.delete_scaling_policy, {**base, "PolicyName": "p"}, "ObjectNotFoundException",
         "No scaling policy found"),
        (aas.describe_scalable_targets, {"ServiceNamespace": "ecs"}, "ValidationException",
         "Unsupported service namespace"),
    ]  # fmt: skip
    for call, kwargs, code, text in cases:
        got = error(call, **kwargs)
        assert got[0] == code and text in got[1], (kwargs, got)

    reg(**base, MinCapacity=1, MaxCapacity=2)
    put = aas.put_scaling_policy
    pbase = {**base, "PolicyName": "bad", "PolicyType": "TargetTrackingScaling"}
    custom = {"MetricName": "CPUUtilization", "Namespace": "AWS/EC2", "Statistic": "Average"}
    both = {
        **tracking(5.0),
        "CustomizedMetricSpecification": {**custom, "Namespace": "AWS/SageMaker"},
    }
    policy_cases: list[tuple[dict[str, Any], str]] = [
        ({**pbase, "PolicyType": "StepScaling", "StepScalingPolicyConfiguration": {}},
         "AdjustmentType is required"),
        ({k: v for k, v in pbase.items() if k != "PolicyType"},
         "StepScalingPolicyConfiguration is required"),
        (pbase, "TargetTrackingScalingPolicyConfiguration is required"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 5.0}},
         "Exactly one of"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": both}, "Exactly one of"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 5.0,
          "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPU"
                                                                    "Utilization"}}},
         "Unsupported predefined metric type"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 5.0, "CustomizedMetricSpecification": custom}}, "Unsupported metric"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 5.0, "CustomizedMetricSpecification": {"MetricName": "Invocations"}}},
         "needs MetricName, Namespace and Statistic"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": tracking(0.0)},
         "must be greater than 0"),
        ({**pbase, "TargetTrackingScalingPolicyConfiguration": tracking(5.0, out_s=-1)},
         "ScaleOutCooldown must be at least 0"),
    ]  # fmt: skip
    try:
        for kwargs, text in policy_cases:
            got = error(put, **kwargs)
            assert got[0] == "ValidationException" and text in got[1], (kwargs, got)
        # the botocore model's own constraints: a missing required member
        code, message = error(reg, ServiceNamespace=NS, ResourceId=r, ScalableDimension="")
        assert code == "ValidationException", message
    finally:
        aas.deregister_scalable_target(**base)


def test_unknown_operation(fast: LiveServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fast.port, timeout=10)
    try:
        headers = {
            "X-Amz-Target": "AnyScaleFrontendService.PutScheduledAction",
            "Content-Type": "application/x-amz-json-1.1",
        }
        conn.request("POST", "/", b"{}", headers)
        answer = conn.getresponse()
        body = json.loads(answer.read())
    finally:
        conn.close()
    assert answer.status == 400
    assert body["__type"] == "UnknownOperationException"
    assert "not supported by modelhost yet" in body["message"]


def test_aws_cli_drives_the_scaling_api(fast: LiveServer, endpoint: str, tmp_path: Path) -> None:
    env = aws_env(tmp_path) | {"AWS_MAX_ATTEMPTS": "1"}

    def aws(*args: str) -> Any:
        out = subprocess.run(
            [str(AWS), "--endpoint-url", fast.url, "application-autoscaling", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    r = rid(endpoint)
    common = ["--service-namespace", NS, "--resource-id", r, "--scalable-dimension", DIM]
    aws("register-scalable-target", *common, "--min-capacity", "1", "--max-capacity", "2")
    config = json.dumps(tracking(1e9, 300, 300))
    put = aws(
        "put-scaling-policy", "--policy-name", "cli", "--policy-type", "TargetTrackingScaling",
        *common, "--target-tracking-scaling-policy-configuration", config,
    )  # fmt: skip
    assert put["PolicyARN"].endswith("policyName/cli")
    targets = aws("describe-scalable-targets", "--service-namespace", NS)["ScalableTargets"]
    assert r in [t["ResourceId"] for t in targets]
    policies = aws("describe-scaling-policies", "--service-namespace", NS, "--resource-id", r)
    assert [p["PolicyName"] for p in policies["ScalingPolicies"]] == ["cli"]
    aws("describe-scaling-activities", "--service-namespace", NS, "--resource-id", r)
    aws("delete-scaling-policy", "--policy-name", "cli", *common)
    aws("deregister-scalable-target", *common)


class Load:
    """Clients sending requests on keep-alive connections until stopped (at most ``limit_s``);
    each answer's status is kept. ``pause_s`` paces each client (light load)."""

    def __init__(self, fast: LiveServer, endpoint: str, clients: int, pause_s: float = 0.0):
        self.path = f"/endpoints/{endpoint}/invocations"
        self.port = fast.port
        self.pause_s = pause_s
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(30)

    def _client(self, limit_s: float = 120.0) -> None:
        deadline = time.monotonic() + limit_s
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"}
        try:
            while not self.stopped.is_set() and time.monotonic() < deadline:
                try:
                    conn.request("POST", self.path, b"[1]", headers)
                    answer = conn.getresponse()
                    body = answer.read()
                except OSError as exc:
                    self.failures.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    continue
                self.statuses.append(answer.status)
                if answer.status != 200:
                    self.failures.append(f"{answer.status} {body[:200]!r}")
                if self.pause_s:
                    self.stopped.wait(self.pause_s)  # pacing, not synchronisation
        finally:
            conn.close()


def test_load_scales_out_and_back_in_with_no_failed_request(
    fast: LiveServer, sm: Any, aas: Any
) -> None:
    name = unique("ep-load")
    assert deploy(sm, name, ECHO)["EndpointStatus"] == "InService"
    r = rid(name)
    common = {"ServiceNamespace": NS, "ResourceId": r, "ScalableDimension": DIM}
    try:
        aas.register_scalable_target(**common, MinCapacity=1, MaxCapacity=3)
        # 600 invocations a minute per instance = 10 a second: heavy load (hundreds a second)
        # asks for the maximum; light load (a few a second) for the minimum.
        aas.put_scaling_policy(
            PolicyName="track",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=tracking(600.0, out_s=0, in_s=2),
            **common,
        )

        def counts() -> tuple[int, int, str]:
            (v,) = sm.describe_endpoint(EndpointName=name)["ProductionVariants"]
            status = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
            return v["DesiredInstanceCount"], v.get("CurrentInstanceCount", 0), status

        seen_updating = False
        with Load(fast, name, clients=4) as heavy:

            def scaled_out() -> bool:
                nonlocal seen_updating
                desired, current, status = counts()
                seen_updating |= status == "Updating"
                return desired == 3 and current == 3 and status == "InService"

            wait_for(scaled_out, 60, "a scale-out to 3 instances")
        assert heavy.failures == [], heavy.failures[:5]
        assert seen_updating
        assert len(heavy.statuses) > 100

        # scale-in while light load goes on: the instances leaving drain first
        # 4 clients, each pausing 0.5 s: at most 480 a minute, 160 per instance of 3
        with Load(fast, name, clients=4, pause_s=0.5) as light:
            wait_for(lambda: counts() == (1, 1, "InService"), 60, "a scale-in to 1 instance")
            after = len(light.statuses)
            wait_for(lambda: len(light.statuses) > after + 8, 10, "requests after the scale-in")
        assert light.failures == [], light.failures[:5]

        def settled() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = aas.describe_scaling_activities(
                ServiceNamespace=NS, ResourceId=r
            )["ScalingActivities"]
            return got if got and all(a["StatusCode"] == "Successful" for a in got) else []

        activities = wait_for(settled, 10, "every scaling activity to succeed")
        newest, *_, oldest = activities
        assert oldest["Description"] == "Setting desired instance count to 3."
        assert "AlarmHigh" in oldest["Cause"] and "triggered policy track" in oldest["Cause"]
        assert newest["Description"] == "Setting desired instance count to 1."
        assert "AlarmLow" in newest["Cause"]
        assert all("EndTime" in a for a in activities)
        # never beyond the bounds
        wanted = [int(a["Description"].split()[-1].rstrip(".")) for a in activities]
        assert all(1 <= n <= 3 for n in wanted), wanted
    finally:
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)
    # DeleteEndpoint deregisters the endpoint's scalable targets (and their policies)
    wait_for(
        lambda: (
            not aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=[r])[
                "ScalableTargets"
            ]
        ),
        10,
        "the target of the deleted endpoint to be deregistered",
    )


def test_modelhost_scale_sets_a_target_tracking_policy(
    fast: LiveServer, aas: Any, endpoint: str, tmp_path: Path
) -> None:
    env = aws_env(tmp_path)

    def modelhost(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "modelhost.cli.main", "scale", endpoint, *args],
            env=env | {"PYTHONPATH": ":".join(sys.path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr + out.stdout
        return out.stdout

    r = rid(endpoint)
    said = modelhost("--min", "1", "--max", "2", "--target", "1e9", "--url", fast.url)
    assert "between 1 and 2 instances" in said
    (target,) = aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=[r])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    (policy,) = aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=r)["ScalingPolicies"]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 1e9
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert "is off" in modelhost("--off", "--url", fast.url)
    assert (
        aas.describe_scalable_targets(ServiceNamespace=NS, ResourceIds=[r])["ScalableTargets"] == []
    )


def test_update_endpoint_keeps_autoscaled_variants(sm: Any, aas: Any, endpoint: str) -> None:
    common = {"ServiceNamespace": NS, "ResourceId": rid(endpoint), "ScalableDimension": DIM}
    aas.register_scalable_target(**common, MinCapacity=1, MaxCapacity=2)
    try:
        for variant in (
            {"VariantName": "AllTraffic", "InstanceType": "ml.m5.xlarge"},  # another type
            {"VariantName": "Other", "InstanceType": "ml.m5.large"},  # AllTraffic removed
        ):
            config = unique("cfg-upd")
            sm.create_endpoint_config(
                EndpointConfigName=config,
                ProductionVariants=[{**variant, "ModelName": endpoint, "InitialInstanceCount": 1}],
            )
            code, message = error(
                sm.update_endpoint, EndpointName=endpoint, EndpointConfigName=config
            )
            assert code == "ValidationException" and "[AllTraffic]" in message, message
            assert "deregister" in message
    finally:
        aas.deregister_scalable_target(**common)
    assert sm.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService"
