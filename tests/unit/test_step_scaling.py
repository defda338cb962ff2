"""The step-scaling decision (controller/step_scaling.py), its validation
(api/operations/step_scaling.py) and the alarm evaluation (cloudwatch/alarm_eval.py): pure."""

from __future__ import annotations

from typing import Any

import pytest

from modelhost.api.operations.step_scaling import check_step_scaling
from modelhost.cloudwatch.alarm_eval import Rule, evaluate
from modelhost.controller.autoscaler import Bounds
from modelhost.controller.step_scaling import (
    Step,
    StepPolicy,
    decide_step,
    percent_change,
    step_for,
)
from modelhost.errors import ValidationException

B = Bounds(0, 10)
# Around a threshold: [-inf, -5) remove 2, [-5, 0) remove 1, [0, 10) add 1, [10, inf) add 3.
STEPS = (Step(None, -5, -2), Step(-5, 0, -1), Step(0, 10, 1), Step(10, None, 3))


def change(*steps: Step, cooldown: float = 60.0) -> StepPolicy:
    return StepPolicy("ChangeInCapacity", steps or STEPS, None, cooldown)


def test_intervals_are_relative_to_the_threshold() -> None:
    p = change()
    assert step_for(p, 0.0) == STEPS[2]  # at the threshold: lower bound inclusive
    assert step_for(p, 9.99) == STEPS[2]
    assert step_for(p, 10.0) == STEPS[3]
    assert step_for(p, -5.0) == STEPS[0]  # below: the upper bound is inclusive
    assert step_for(p, -4.0) == STEPS[1]
    assert step_for(p, 0.0 - 1e-9) == STEPS[1]
    # threshold 1: a metric of 1 breaches by 0 (step 3, +1); 12 by 11 (+3)
    assert decide_step(p, 2, 1.0, 1.0, B, None, 0.0) == 3
    assert decide_step(p, 2, 12.0, 1.0, B, None, 0.0) == 5
    assert decide_step(p, 2, -10.0, 1.0, B, None, 0.0) == 0
    assert step_for(change(Step(0, 5, 1)), 7.0) is None


def test_adjustment_types() -> None:
    exact = StepPolicy("ExactCapacity", (Step(0, None, 4),))
    assert decide_step(exact, 1, 2.0, 1.0, B, None, 0.0) == 4
    assert decide_step(exact, 4, 2.0, 1.0, B, None, 0.0) is None  # no change, no decision
    pct = StepPolicy("PercentChangeInCapacity", (Step(0, None, 50),))
    assert decide_step(pct, 4, 1.0, 1.0, B, None, 0.0) == 6
    assert decide_step(pct, 1, 1.0, 1.0, B, None, 0.0) == 2  # 0.5 rounds up to 1
    assert decide_step(pct, 3, 1.0, 1.0, B, None, 0.0) == 4  # 1.5 truncates to 1
    assert percent_change(10, -25, None) == -2  # -2.5 truncates toward zero
    assert percent_change(4, 10, 3) == 3  # MinAdjustmentMagnitude
    assert percent_change(4, -10, 3) == -3
    from_zero = change(Step(0, None, 1))
    assert decide_step(from_zero, 0, 1.0, 1.0, B, None, 0.0) == 1


def test_clamped_to_min_and_max() -> None:
    p = change()
    assert decide_step(p, 9, 50.0, 0.0, B, None, 0.0) == 10
    assert decide_step(p, 10, 50.0, 0.0, B, None, 0.0) is None
    assert decide_step(p, 1, -50.0, 0.0, Bounds(1, 10), None, 0.0) is None
    assert decide_step(p, 3, -50.0, 0.0, Bounds(2, 10), None, 0.0) == 2


def test_cooldown() -> None:
    p = change(cooldown=60.0)
    assert decide_step(p, 1, 1.0, 0.0, B, 100.0, 159.0) is None
    assert decide_step(p, 1, 1.0, 0.0, B, 100.0, 160.0) == 2
    assert decide_step(change(cooldown=0.0), 1, 1.0, 0.0, B, 100.0, 100.0) == 2
    assert StepPolicy.of({"StepAdjustments": [{"ScalingAdjustment": 1}]}).cooldown_s == 300.0


def config(**kw: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "AdjustmentType": "ChangeInCapacity",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
    }
    c.update(kw)
    return {"StepScalingPolicyConfiguration": c}


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({}, "StepScalingPolicyConfiguration is required"),
        ({**config(), "TargetTrackingScalingPolicyConfiguration": {}}, "not allowed"),
        (config(AdjustmentType=None), "AdjustmentType is required"),
        (config(StepAdjustments=[]), "at least one step adjustment"),
        (config(StepAdjustments=[{"ScalingAdjustment": 1}]), "can't be null in the same step"),
        (
            config(StepAdjustments=[{"MetricIntervalLowerBound": -1, "ScalingAdjustment": 1}]),
            "must be a step adjustment with a null lower bound",
        ),
        (
            config(
                StepAdjustments=[
                    {
                        "MetricIntervalLowerBound": 0,
                        "MetricIntervalUpperBound": 5,
                        "ScalingAdjustment": 1,
                    }
                ]
            ),
            "must be a step adjustment with a null upper bound",
        ),
        (
            config(
                StepAdjustments=[
                    {
                        "MetricIntervalLowerBound": 5,
                        "MetricIntervalUpperBound": 1,
                        "ScalingAdjustment": 1,
                    }
                ]
            ),
            "must be less than its upper bound",
        ),
        (
            config(
                StepAdjustments=[
                    {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1},
                    {"MetricIntervalLowerBound": 5, "ScalingAdjustment": 2},
                ]
            ),
            "null upper bound",
        ),
        (
            config(
                StepAdjustments=[
                    {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
                    {"MetricIntervalUpperBound": 5, "ScalingAdjustment": 2},
                ]
            ),
            "null lower bound",
        ),
        (
            config(
                StepAdjustments=[
                    {
                        "MetricIntervalLowerBound": 0,
                        "MetricIntervalUpperBound": 5,
                        "ScalingAdjustment": 1,
                    },
                    {"MetricIntervalLowerBound": 3, "ScalingAdjustment": 2},
                ]
            ),
            "may not overlap",
        ),
        (
            config(
                StepAdjustments=[
                    {
                        "MetricIntervalLowerBound": 0,
                        "MetricIntervalUpperBound": 5,
                        "ScalingAdjustment": 1,
                    },
                    {"MetricIntervalLowerBound": 6, "ScalingAdjustment": 2},
                ]
            ),
            "may not have a gap",
        ),
        (
            config(
                AdjustmentType="ExactCapacity",
                StepAdjustments=[{"MetricIntervalLowerBound": 0, "ScalingAdjustment": -1}],
            ),
            "cannot be negative",
        ),
        (config(MinAdjustmentMagnitude=2), "only supported with AdjustmentType"),
        (
            config(AdjustmentType="PercentChangeInCapacity", MinAdjustmentMagnitude=0),
            "at least 1",
        ),
        (config(Cooldown=-1), "Cooldown must be at least 0"),
    ],
)
def test_validation(req: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationException, match=message):
        check_step_scaling(req)


def test_valid_configuration_is_kept_as_given() -> None:
    req = config(
        AdjustmentType="PercentChangeInCapacity",
        MinAdjustmentMagnitude=2,
        Cooldown=120,
        MetricAggregationType="Maximum",
        StepAdjustments=[
            {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -10},
            {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 20},
        ],
    )
    assert check_step_scaling(req) == req["StepScalingPolicyConfiguration"]


def test_alarm_evaluation() -> None:
    rule = Rule("GreaterThanOrEqualToThreshold", 1.0, 3, 2)
    assert evaluate(rule, [None], "INSUFFICIENT_DATA").state == "INSUFFICIENT_DATA"
    assert evaluate(rule, [0.0], "INSUFFICIENT_DATA").state == "OK"
    assert evaluate(rule, [0.0, 1.0], "OK").state == "OK"  # 1 of 2, needs 2
    v = evaluate(rule, [1.0, 0.0, 1.0], "OK")  # 2 of the last 3
    assert v.state == "ALARM" and v.breaching == 2
    assert "2 out of the last 3 datapoints [1, 0, 1] were greater than or equal to" in v.reason
    assert evaluate(rule, [1.0, 0.0, 1.0, 0.0], "ALARM").state == "OK"  # 1 of the last 3
    lt = Rule("LessThanThreshold", 1.0, 1, 1)
    assert evaluate(lt, [0.0], "OK").state == "ALARM"
    assert evaluate(Rule("GreaterThanThreshold", 1.0, 1, 1), [1.0], "OK").state == "OK"
    assert evaluate(Rule("LessThanOrEqualToThreshold", 1.0, 1, 1), [1.0], "OK").state == "ALARM"
    assert evaluate(Rule(rule.operator, 1.0, 2, 2, "breaching"), [None, 1.0], "OK").state == (
        "ALARM"
    )
    assert evaluate(Rule(rule.operator, 1.0, 1, 1, "notBreaching"), [None], "ALARM").state == "OK"
    assert evaluate(Rule(rule.operator, 1.0, 1, 1, "ignore"), [None], "ALARM").state == "ALARM"
