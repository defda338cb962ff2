"""Alarms in the scaler's pass (controller/alarm_loop.py): a real store, an injected clock and
backlog; an alarm on HasBacklogWithoutCapacity runs a StepScaling policy from zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost.controller.alarm_loop import measure
from modelhost.controller.scaling_loop import Scaler
from modelhost.metrics import Recorder
from modelhost.state.alarms import AlarmStore, MetricAlarm
from modelhost.state.records import Endpoint, EndpointStatus, VariantState
from modelhost.state.scaling import ScalableTarget, ScalingPolicy, ScalingStore
from modelhost.state.store import Store

RID = "endpoint/ep/variant/v"
DIM = "sagemaker:variant:DesiredInstanceCount"
ARN = "arn:aws:autoscaling:us-east-1:1:scalingPolicy:u:resource/sagemaker/x:policyName/out"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def alarm(metric: str = "HasBacklogWithoutCapacity", **kw: Any) -> MetricAlarm:
    spec = {
        "MetricName": metric, "Namespace": "AWS/SageMaker", "Statistic": "Average",
        "Dimensions": [{"Name": "EndpointName", "Value": "EP"}], "Period": 60,
        "EvaluationPeriods": 2, "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold", "AlarmActions": [ARN],
    }  # fmt: skip
    spec.update(kw)
    return MetricAlarm("backlog", "arn:alarm", spec, 0.0)


def step_policy(cooldown: int = 30) -> ScalingPolicy:
    config = {
        "AdjustmentType": "ChangeInCapacity", "Cooldown": cooldown,
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
    }  # fmt: skip
    return ScalingPolicy(
        name="out", arn=ARN, namespace="sagemaker", resource_id=RID, dimension=DIM,
        policy_type="StepScaling", created=0.0, spec=config, metric="", per_instance=False,
        target=0.0, scale_out_cooldown_s=cooldown, scale_in_cooldown_s=cooldown,
        disable_scale_in=False,
    )  # fmt: skip


def endpoint(count: int) -> Endpoint:
    return Endpoint(
        "ep", "arn:ep", "cfg", EndpointStatus.IN_SERVICE, 0.0, 0.0,
        [VariantState("v", 1.0, count, 1.0, count)],
    )  # fmt: skip


def test_measure() -> None:
    eps = {"ep": endpoint(0)}
    assert measure(alarm(), eps, {"ep": 3}, {}) == 1.0
    assert measure(alarm(), eps, {}, {}) == 0.0
    assert measure(alarm(), {"ep": endpoint(2)}, {"ep": 3}, {}) == 0.0
    assert measure(alarm("ApproximateBacklogSize"), eps, {"ep": 3}, {}) == 3.0
    per = alarm("ApproximateBacklogSizePerInstance")
    assert measure(per, {"ep": endpoint(2)}, {"ep": 3}, {}) == 1.5
    dims = [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "v"}]
    inv = alarm("Invocations", Dimensions=dims, Period=120)
    assert measure(inv, eps, {}, {("ep", "v"): (30.0, 10.0)}) == 60.0  # a Sum over 2 minutes
    assert measure(alarm("InvocationsPerInstance", Dimensions=dims), eps, {}, {}) is None
    assert measure(alarm(Namespace="Other"), eps, {"ep": 3}, {}) is None
    assert measure(alarm("CPUUtilization"), eps, {"ep": 3}, {}) is None


def test_alarm_runs_the_step_policy_from_zero(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.add_endpoint(endpoint(0))
    scaling, alarms = ScalingStore(store), AlarmStore(store)
    scaling.put_target(ScalableTarget("sagemaker", RID, DIM, 0, 3, "arn:t", 0.0))
    scaling.put_policy(step_policy(cooldown=30))
    alarms.put(alarm())
    backlog = {"ep": 0}
    clock, wakes = Clock(), []
    scaler = Scaler(
        store, Recorder(), lambda: wakes.append(1), interval_s=1.0, window_s=10.0,
        clock=clock, timer=clock, backlogs=lambda: backlog,
    )  # fmt: skip

    def tick() -> str:
        scaler.evaluate({})
        clock.now += 1.0
        got = alarms.get("backlog")
        assert got is not None
        return got.state

    assert tick() == "OK" and not wakes
    backlog["ep"] = 2
    assert tick() == "OK"  # 1 of 2 datapoints
    assert tick() == "ALARM" and len(wakes) == 1
    ep = store.endpoint("ep")
    assert ep is not None and ep.status is EndpointStatus.UPDATING
    assert ep.variants[0].desired_count == 1
    (activity,) = scaling.activities()
    assert activity.cause == (
        "monitor alarm backlog in state ALARM triggered policy out changing the desired "
        "capacity from 0 to 1"
    )
    got = alarms.get("backlog")
    assert got is not None and "2 out of the last 2 datapoints" in got.reason
    assert '"recentDatapoints": [1.0, 1.0]' in got.reason_data

    def finish(count: int) -> None:
        def change(e: Endpoint) -> None:
            e.status = EndpointStatus.IN_SERVICE
            e.variants[0].current_count = count

        store.update_endpoint("ep", change)

    finish(0)  # back InService, still no instance: the cooldown holds the next +1
    assert tick() == "ALARM" and len(wakes) == 1
    clock.now += 30
    assert tick() == "ALARM" and len(wakes) == 2  # after the cooldown, +1 again
    ep = store.endpoint("ep")
    assert ep is not None and ep.variants[0].desired_count == 2
    finish(2)
    tick()
    assert tick() == "OK"  # capacity: no backlog without it
    alarms.delete(["backlog"])
    scaler.evaluate({})
    assert scaler.alarms.points == {}
