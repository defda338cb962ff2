"""StepScaling policies and the CloudWatch alarms that run them, on a live server with a fast
scaler: SageMaker's documented scale-out from zero for an async endpoint (target tracking scales
it in to zero; an alarm on HasBacklogWithoutCapacity runs a ChangeInCapacity +1 step policy when
requests queue), the alarm API on every CloudWatch wire, persistence across a restart, the
validation errors, and the AWS CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api.test_cloudwatch import AWS, cloudwatch
from tests.e2e.async_helpers import deploy_async, local_path, wait_file
from tests.fixtures.server import LiveServer, aws_env, unique
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.api

NS = "sagemaker"
DIM = "sagemaker:variant:DesiredInstanceCount"
STEP = {
    "AdjustmentType": "ChangeInCapacity",
    "MetricAggregationType": "Average",
    "Cooldown": 5,
    "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
}
WIRES = ("smithy-rpc-v2-cbor", "json", "query")


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"MODELHOST_AUTOSCALING_INTERVAL_S": "0.2", "MODELHOST_AUTOSCALING_WINDOW_S": "2"}
    with LiveServer(tmp_path_factory.mktemp("step"), env=env) as live:
        yield live


@pytest.fixture(scope="module")
def endpoint(fast: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    sm = fast.client("sagemaker")
    name = unique("ep-step")
    deploy_async(sm, name, "echo", f"file://{tmp_path_factory.mktemp('step-out')}")
    yield name
    sm.delete_endpoint(EndpointName=name)


def error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response["Error"]
    return str(err["Code"]), str(err["Message"])


def alarm_args(name: str, policy_arn: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {
        "AlarmName": name,
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": "AWS/SageMaker",
        "Statistic": "Average",
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
        "Period": 60,
        "AlarmActions": [policy_arn],
        **extra,
    }


def test_step_policy_validation_errors(fast: LiveServer, endpoint: str) -> None:
    aas = fast.client("application-autoscaling")
    rid = f"endpoint/{endpoint}/variant/AllTraffic"
    base = {"ServiceNamespace": NS, "ResourceId": rid, "ScalableDimension": DIM}
    put = {**base, "PolicyName": "bad", "PolicyType": "StepScaling"}
    code, _ = error(aas.put_scaling_policy, **put, StepScalingPolicyConfiguration=STEP)
    assert code == "ObjectNotFoundException"  # no scalable target yet
    aas.register_scalable_target(**base, MinCapacity=1, MaxCapacity=2)
    one = {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "StepScalingPolicyConfiguration is required"),
        ({"StepScalingPolicyConfiguration": {"StepAdjustments": [one]}},
         "AdjustmentType is required"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": []}},
         "at least one step adjustment"),
        ({"StepScalingPolicyConfiguration": STEP,
          "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 1.0}}, "not allowed"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"MetricIntervalLowerBound": 2.0, "MetricIntervalUpperBound": 1.0,
             "ScalingAdjustment": 1}]}}, "must be less than its upper bound"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"ScalingAdjustment": 1}]}}, "can't be null in the same step adjustment"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"MetricIntervalLowerBound": -1.0, "ScalingAdjustment": 1}]}},
         "must be a step adjustment with a null lower bound"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"MetricIntervalLowerBound": 0.0, "MetricIntervalUpperBound": 1.0,
             "ScalingAdjustment": 1}]}}, "must be a step adjustment with a null upper bound"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            one, {"MetricIntervalLowerBound": 1.0, "ScalingAdjustment": 2}]}}, "null upper bound"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"MetricIntervalUpperBound": 0.0, "ScalingAdjustment": -1},
            {"MetricIntervalUpperBound": 2.0, "ScalingAdjustment": 2}]}}, "null lower bound"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"MetricIntervalLowerBound": 0.0, "MetricIntervalUpperBound": 2.0,
             "ScalingAdjustment": 1},
            {"MetricIntervalLowerBound": 1.0, "ScalingAdjustment": 2}]}}, "may not overlap"),
        ({"StepScalingPolicyConfiguration": {**STEP, "StepAdjustments": [
            {"MetricIntervalLowerBound": 0.0, "MetricIntervalUpperBound": 1.0,
             "ScalingAdjustment": 1},
            {"MetricIntervalLowerBound": 2.0, "ScalingAdjustment": 2}]}}, "may not have a gap"),
        ({"StepScalingPolicyConfiguration": {**STEP, "AdjustmentType": "ExactCapacity",
          "StepAdjustments": [{**one, "ScalingAdjustment": -1}]}}, "cannot be negative"),
        ({"StepScalingPolicyConfiguration": {**STEP, "MinAdjustmentMagnitude": 1}},
         "only supported with AdjustmentType PercentChangeInCapacity"),
        ({"StepScalingPolicyConfiguration": {**STEP, "Cooldown": -1}},
         "Cooldown must be at least 0"),
        ({"StepScalingPolicyConfiguration": {**STEP, "AdjustmentType": "Doubling"}},
         "stepScalingPolicyConfiguration.adjustmentType"),  # the model's enum
    ]  # fmt: skip
    try:
        for extra, text in cases:
            got = error(aas.put_scaling_policy, **put, **extra)
            assert got[0] == "ValidationException" and text in got[1], (extra, got)
        assert (
            aas.describe_scaling_policies(ServiceNamespace=NS, ResourceId=rid)["ScalingPolicies"]
            == []
        )  # nothing stored
        code, _ = error(aas.delete_scaling_policy, **base, PolicyName="bad")
        assert code == "ObjectNotFoundException"
    finally:
        aas.deregister_scalable_target(**base)


def test_async_endpoint_scales_out_from_zero_on_a_backlog_alarm(
    fast: LiveServer, endpoint: str, tmp_path: Path
) -> None:
    sm, rt = fast.client("sagemaker"), fast.client("sagemaker-runtime")
    aas, cw = fast.client("application-autoscaling"), cloudwatch(fast)
    rid = f"endpoint/{endpoint}/variant/AllTraffic"
    base = {"ServiceNamespace": NS, "ResourceId": rid, "ScalableDimension": DIM}
    aas.register_scalable_target(**base, MinCapacity=0, MaxCapacity=2)
    aas.put_scaling_policy(
        **base,
        PolicyName="backlog-tracking",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 0,
            "ScaleOutCooldown": 0,
        },
    )
    put = aas.put_scaling_policy(
        **base, PolicyName="from-zero", PolicyType="StepScaling",
        StepScalingPolicyConfiguration=STEP,
    )  # fmt: skip
    arn = put["PolicyARN"]
    assert arn.endswith(f"resource/sagemaker/{rid}:policyName/from-zero") and put["Alarms"] == []
    alarm = unique("has-backlog")
    assert cw.put_metric_alarm(**alarm_args(alarm, arn, endpoint))["ResponseMetadata"]

    def count() -> int | None:
        desc = sm.describe_endpoint(EndpointName=endpoint)
        if desc["EndpointStatus"] != "InService":
            return None
        current: int = desc["ProductionVariants"][0]["CurrentInstanceCount"]
        return current

    wait_for(lambda: count() == 0, 30, "the idle endpoint to scale in to zero")

    def described() -> dict[str, Any]:
        (a,) = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
        return dict(a)

    quiet = wait_for(lambda: (a := described())["StateValue"] == "OK" and a, 10, "OK")
    assert "[0] were not greater than or equal to the threshold (1)" in (quiet["StateReason"])
    policies = aas.describe_scaling_policies(
        ServiceNamespace=NS, ResourceId=rid, PolicyNames=["from-zero"]
    )["ScalingPolicies"]
    assert policies == [
        {
            "PolicyARN": arn, "PolicyName": "from-zero", "ServiceNamespace": NS,
            "ResourceId": rid, "ScalableDimension": DIM, "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": STEP,
            "Alarms": [{"AlarmName": alarm, "AlarmARN": quiet["AlarmArn"]}],
            "CreationTime": policies[0]["CreationTime"],
        }
    ]  # fmt: skip

    outputs = []
    for i in range(3):
        src = tmp_path / f"in-{i}.json"
        src.write_text(f'{{"n": {i}}}')
        out = rt.invoke_endpoint_async(
            EndpointName=endpoint, InputLocation=f"file://{src}", ContentType="application/json"
        )
        outputs.append(local_path(out["OutputLocation"]))
    for i, path in enumerate(outputs):
        assert wait_file(path, 60) == f'{{"n": {i}}}'.encode()

    activities = aas.describe_scaling_activities(ServiceNamespace=NS, ResourceId=rid)
    [out_of_zero] = [
        a for a in activities["ScalingActivities"]
        if a["Description"] == "Setting desired instance count to 1."
    ]  # fmt: skip
    assert out_of_zero["Cause"] == (
        f"monitor alarm {alarm} in state ALARM triggered policy from-zero changing the desired "
        "capacity from 0 to 1"
    )
    # OK -> ALARM -> OK: back to OK, transitioned again since.
    again = wait_for(lambda: (a := described())["StateValue"] == "OK" and a, 10, "OK again")
    assert again["StateTransitionedTimestamp"] > quiet["StateTransitionedTimestamp"]
    assert cw.describe_alarms(StateValue="ALARM", AlarmNamePrefix=alarm)["MetricAlarms"] == []
    data = json.loads(again["StateReasonData"])
    assert data["recentDatapoints"] == [0.0, 1.0] and data["threshold"] == 1.0  # newest first
    for key in (
        "AlarmDescription",
        "Unit",
        "ExtendedStatistic",
        "EvaluateLowSampleCountPercentile",
    ):
        assert key not in again  # not given, not shown
    assert again["AlarmConfigurationUpdatedTimestamp"] and again["StateUpdatedTimestamp"]
    assert (again["ActionsEnabled"], again["OKActions"], again["InsufficientDataActions"]) == (
        True, [], []
    )  # fmt: skip
    cw.delete_alarms(AlarmNames=[alarm])
    aas.deregister_scalable_target(**base)


@pytest.mark.parametrize("wire", WIRES)
def test_alarm_api_on_every_wire(fast: LiveServer, wire: str) -> None:
    cw = cloudwatch(fast, wire)
    policy = "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x:resource/a:policyName/p"
    names = [f"{wire}-alarm-{i}" for i in range(3)]
    for name in names:
        extra = {"EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Unit": "Count"}
        cw.put_metric_alarm(
            **alarm_args(name, policy, "no-such-endpoint", **extra, AlarmDescription="d")
        )
    got = cw.describe_alarms(AlarmNamePrefix=f"{wire}-alarm-")["MetricAlarms"]
    assert [a["AlarmName"] for a in got] == names
    first = got[0]
    assert first["AlarmArn"].endswith(f":alarm:{names[0]}") and first["AlarmDescription"] == "d"
    assert first["Dimensions"] == [{"Name": "EndpointName", "Value": "no-such-endpoint"}]
    assert first["AlarmActions"] == [policy] and first["Unit"] == "Count"
    assert (first["Threshold"], first["Period"], first["EvaluationPeriods"]) == (1.0, 60, 1)
    # an endpoint modelhost does not have: no data
    stuck = wait_for(
        lambda: (a := cw.describe_alarms(AlarmNames=[names[0]])["MetricAlarms"][0])["StateReason"]
        != "Unchecked: Initial alarm creation" and a, 10, "an evaluation",
    )  # fmt: skip
    assert (
        stuck["StateValue"] == "INSUFFICIENT_DATA" and "Insufficient Data" in stuck["StateReason"]
    )
    # paging
    page = cw.describe_alarms(AlarmNamePrefix=f"{wire}-alarm-", MaxRecords=2)
    assert [a["AlarmName"] for a in page["MetricAlarms"]] == names[:2]
    rest = cw.describe_alarms(AlarmNamePrefix=f"{wire}-alarm-", NextToken=page["NextToken"])
    assert [a["AlarmName"] for a in rest["MetricAlarms"]] == names[2:] and "NextToken" not in rest
    # filters
    assert cw.describe_alarms(AlarmNames=names[1:2])["MetricAlarms"][0]["AlarmName"] == names[1]
    assert cw.describe_alarms(AlarmNames=names, StateValue="OK")["MetricAlarms"] == []
    assert len(cw.describe_alarms(AlarmNames=names, ActionPrefix=policy[:30])["MetricAlarms"]) == 3
    assert cw.describe_alarms(AlarmNames=names, AlarmTypes=["CompositeAlarm"])["MetricAlarms"] == []
    cw.set_alarm_state(AlarmName=names[2], StateValue="ALARM", StateReason="testing")
    # an update replaces the configuration and keeps the state
    cw.put_metric_alarm(**alarm_args(names[0], policy, "no-such-endpoint", Threshold=3.0))
    (updated,) = cw.describe_alarms(AlarmNames=[names[0]])["MetricAlarms"]
    assert updated["Threshold"] == 3.0 and "AlarmDescription" not in updated
    # errors
    bad = alarm_args("bad", policy, "x")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({**bad, "DatapointsToAlarm": 3}, "ValidationError", "DatapointsToAlarm"),
        ({**bad, "Period": 45}, "ValidationError", "multiple of 60"),
        ({**bad, "ExtendedStatistic": "p99"}, "InvalidParameterCombination", "Exactly one of"),
        ({**bad, "AlarmActions": ["not-an-arn"]}, "ValidationError", "Invalid arn"),
        ({**bad, "ComparisonOperator": "LessThanLowerOrGreaterThanUpperThreshold"},
         "ValidationError", "ComparisonOperator"),
        ({k: v for k, v in bad.items() if k != "MetricName"}, "MissingParameter", "MetricName"),
        ({**bad, "TreatMissingData": "sometimes"}, "ValidationError", "TreatMissingData"),
        ({**bad, "Period": 86400, "EvaluationPeriods": 8, "DatapointsToAlarm": 1},
         "ValidationError", "7 days"),
    ]  # fmt: skip
    for kwargs, code, text in cases:
        got = error(cw.put_metric_alarm, **kwargs)
        assert got[0] == code and text in got[1], (kwargs, got)
    assert cw.describe_alarms(AlarmNames=["bad"])["MetricAlarms"] == []  # nothing stored
    code, _ = error(cw.describe_alarms, AlarmNames=names, AlarmNamePrefix="x")
    assert code == "InvalidParameterCombination"
    assert error(cw.describe_alarms, NextToken="!!")[0] == "InvalidNextToken"
    code, message = error(cw.delete_alarms, AlarmNames=[names[0], "missing"])
    assert code == "ResourceNotFound" and "missing" in message
    assert len(cw.describe_alarms(AlarmNames=names)["MetricAlarms"]) == 3  # none deleted
    assert (
        error(cw.set_alarm_state, AlarmName="missing", StateValue="OK", StateReason="r")[0]
        == "ResourceNotFound"
    )
    cw.delete_alarms(AlarmNames=names)
    assert cw.describe_alarms(AlarmNamePrefix=f"{wire}-alarm-")["MetricAlarms"] == []


def test_alarms_survive_a_restart_and_the_aws_cli(tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data").start()
    try:
        env = aws_env(tmp_path) | {"AWS_MAX_ATTEMPTS": "1"}

        def aws(*args: str) -> Any:
            out = subprocess.run(
                [str(AWS), "--endpoint-url", live.url, "cloudwatch", *args],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout) if out.stdout.strip() else None

        aws(
            "put-metric-alarm", "--alarm-name", "cli-backlog", "--metric-name",
            "HasBacklogWithoutCapacity", "--namespace", "AWS/SageMaker", "--statistic",
            "Average", "--period", "60", "--evaluation-periods", "2", "--datapoints-to-alarm",
            "2", "--threshold", "1", "--comparison-operator", "GreaterThanOrEqualToThreshold",
            "--dimensions", "Name=EndpointName,Value=some-endpoint",
        )  # fmt: skip
        live.stop()
        live.start()
        (alarm,) = aws("describe-alarms", "--alarm-names", "cli-backlog")["MetricAlarms"]
        assert alarm["MetricName"] == "HasBacklogWithoutCapacity" and alarm["Threshold"] == 1.0
        aws("delete-alarms", "--alarm-names", "cli-backlog")
        assert aws("describe-alarms")["MetricAlarms"] == []
    finally:
        live.stop()
