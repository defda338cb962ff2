"""Provisioned concurrency autoscaling (controller/scaling_loop.py): the pure utilization
metric and window mean, and the scaler setting a serverless variant's ProvisionedConcurrency
(bounds at once, target tracking over concurrency, an activity Successful at once, the
endpoint staying InService)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from modelhost.controller.alarm_loop import Fired
from modelhost.controller.autoscaler import Bounds, History, TargetTracking, decide
from modelhost.controller.scaling_loop import Sample, Scaler, rates, utilization
from modelhost.metrics import Recorder
from modelhost.state.alarms import MetricAlarm
from modelhost.state.records import (
    DeployedVariant,
    Deployment,
    Endpoint,
    EndpointStatus,
    Resource,
    VariantState,
)
from modelhost.state.scaling import ScalableTarget, ScalingPolicy, ScalingStore
from modelhost.state.store import Store

RID = "endpoint/ep/variant/v"
DIM = "sagemaker:variant:DesiredProvisionedConcurrency"


def test_utilization_is_concurrency_over_provisioned() -> None:
    assert utilization(3.0, 2) == 1.5
    assert utilization(0.0, 4) == 0.0
    assert utilization(2.0, 0) == 2.0  # at zero: any request asks for some


def test_rates_average_the_concurrency_over_the_window() -> None:
    samples = deque(Sample(float(t), 0, 0.0, c) for t, c in enumerate([9, 1, 2, 3]))
    r = rates(samples, 3.0)
    assert r is not None and r.concurrency == 2.0  # the samples after the oldest one


def test_target_tracking_on_utilization_asks_concurrency_over_target() -> None:
    policy = TargetTracking(0.5, 0.0, 0.0)
    bounds, history = Bounds(0, 5), History()
    out = decide(policy, 1, utilization(2.0, 1), bounds, history, 0.0)
    assert out is not None and out.desired == 4  # 2 in flight / 0.5
    capped = decide(policy, 2, utilization(9.0, 2), bounds, history, 0.0)
    assert capped is not None and capped.desired == 5  # 18 wanted, the maximum is 5
    down = decide(policy, 2, utilization(0.0, 2), bounds, history, 0.0)
    assert down is not None and down.desired == 0
    up = decide(policy, 0, utilization(1.0, 0), bounds, history, 0.0)
    assert up is not None and up.desired == 1  # out of zero: one first, then by the ratio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serverless_endpoint(provisioned: int | None) -> Endpoint:
    config = Resource("cfg", "arn:cfg", 0.0, {"ProductionVariants": []})
    dv = DeployedVariant("v", "m", None, serverless_memory_mb=1024, provisioned_concurrency=1)
    state = VariantState("v", 1.0, 1, 1.0, 1, provisioned)
    deployment = Deployment(config, {}, variants=(dv,))
    return Endpoint("ep", "arn:ep", "cfg", EndpointStatus.IN_SERVICE, 0.0, 0.0, [state], deployment)


def test_endpoint_provisioned_falls_back_to_the_deployment() -> None:
    assert serverless_endpoint(None).provisioned("v") == 1  # a row from before the field
    assert serverless_endpoint(3).provisioned("v") == 3
    assert serverless_endpoint(0).provisioned("v") == 0
    ep = serverless_endpoint(0)
    ep.deployment = None
    ep.variants[0].provisioned_concurrency = None
    assert ep.provisioned("v") is None  # not serverless


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'state.db'}")
    s.add_endpoint(serverless_endpoint(0))
    return s


def policy(target: float = 0.5) -> ScalingPolicy:
    return ScalingPolicy(
        name="p", arn="arn:p", namespace="sagemaker", resource_id=RID, dimension=DIM,
        policy_type="TargetTrackingScaling", created=0.0, spec={},
        metric="ProvisionedConcurrencyUtilization", per_instance=False, target=target,
        scale_out_cooldown_s=0.0, scale_in_cooldown_s=0.0, disable_scale_in=False,
        alarms=[{"AlarmName": f"TargetTracking-{RID}-AlarmHigh-x", "AlarmARN": "a"},
                {"AlarmName": f"TargetTracking-{RID}-AlarmLow-y", "AlarmARN": "b"}],
    )  # fmt: skip


def target(lo: int, hi: int) -> ScalableTarget:
    return ScalableTarget("sagemaker", RID, DIM, lo, hi, "arn:t", 0.0, "role", {})


class Rig:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.clock = Clock()
        self.in_flight = 0
        self.wakes = 0
        self.scaler = Scaler(
            store, Recorder(), self.wake, interval_s=1.0, window_s=5.0, clock=self.clock,
            timer=self.clock, concurrency=lambda endpoint, variant: self.in_flight,
        )  # fmt: skip

    def wake(self) -> None:
        self.wakes += 1

    def load(self, in_flight: int, seconds: int) -> None:
        self.in_flight = in_flight
        for _ in range(seconds):
            self.clock.now += 1.0
            self.scaler.sample()
        self.step()

    def step(self) -> None:
        window = self.scaler.window_s
        now = {k: r for k, s in self.scaler.samples.items() if (r := rates(s, window))}
        self.scaler._watched = self.scaler.evaluate(now)

    def provisioned(self) -> int | None:
        ep = self.store.endpoint("ep")
        assert ep is not None and ep.status is EndpointStatus.IN_SERVICE
        return ep.provisioned("v")


def test_scaler_sets_provisioned_concurrency(store: Store) -> None:
    rig = Rig(store)
    scaling = ScalingStore(store)
    scaling.put_target(target(1, 4))
    rig.step()  # below the minimum: raised at once, no metric needed
    assert rig.provisioned() == 1 and rig.wakes == 1
    (activity,) = scaling.activities()
    assert activity.status == "Successful" and activity.end is not None
    assert "provisioned concurrency" in activity.description
    assert activity.cause == "minimum capacity was set to 1"

    scaling.put_policy(policy(0.5))
    rig.load(0, 1)  # watched from now on
    rig.load(3, 6)  # 3 in flight over 1 provisioned: 6 wanted, clamped to 4
    assert rig.provisioned() == 4
    (out,) = [a for a in scaling.activities() if a.desired == 4]
    assert "ProvisionedConcurrencyUtilization" in out.cause and "AlarmHigh" in out.cause

    scaling.put_target(target(0, 4))
    rig.load(0, 6)  # idle: down to zero (the variant may then scale to zero)
    assert rig.provisioned() == 0
    assert sorted(a.desired or 0 for a in scaling.activities()) == [0, 1, 4]
    assert all(a.status == "Successful" for a in scaling.activities())


def test_step_scaling_sets_provisioned_concurrency(store: Store) -> None:
    """A StepScaling policy run by an alarm (controller/alarm_loop.py) acts on it too."""
    rig = Rig(store)
    scaling = ScalingStore(store)
    scaling.put_target(target(0, 3))
    config = {
        "AdjustmentType": "ChangeInCapacity",
        "Cooldown": 0,
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 2}],
    }
    step = ScalingPolicy(
        name="s", arn="arn:s", namespace="sagemaker", resource_id=RID, dimension=DIM,
        policy_type="StepScaling", created=0.0, spec=config, metric="", per_instance=False,
        target=0.0, scale_out_cooldown_s=0.0, scale_in_cooldown_s=0.0, disable_scale_in=False,
        alarms=[],
    )  # fmt: skip
    scaling.put_policy(step)
    alarm = MetricAlarm("busy", "arn:alarm", {"Threshold": 1.0}, 0.0, state="ALARM")
    rig.scaler._step(Fired(alarm, 2.0, "arn:s"), step)
    assert rig.provisioned() == 2
    rig.clock.now += 1.0
    rig.scaler._step(Fired(alarm, 2.0, "arn:s"), step)
    assert rig.provisioned() == 3  # clamped to the maximum
    causes = sorted(a.cause for a in scaling.activities())
    assert ["from 0 to 2" in causes[0], "from 2 to 3" in causes[1]] == [True, True], causes
