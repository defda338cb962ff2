"""PutScalingPolicy's StepScalingPolicyConfiguration, checked as Application Auto Scaling does
before anything is stored (the botocore shapes already checked types and enums; these are the
service's own rules). The decision it feeds is controller/step_scaling.py."""

from __future__ import annotations

import itertools
import math
from typing import Any

from modelhost.controller.step_scaling import EXACT, PERCENT
from modelhost.errors import ValidationException


def check_step_scaling(req: dict[str, Any]) -> dict[str, Any]:
    """The validated configuration (as requested, PascalCase) of a StepScaling request."""
    if req.get("TargetTrackingScalingPolicyConfiguration") is not None:
        raise ValidationException(
            "TargetTrackingScalingPolicyConfiguration is not allowed for a StepScaling policy."
        )
    config = req.get("StepScalingPolicyConfiguration")
    if config is None:
        raise ValidationException(
            "StepScalingPolicyConfiguration is required for a StepScaling policy."
        )
    kind = config.get("AdjustmentType")
    if kind is None:
        raise ValidationException("AdjustmentType is required for a StepScaling policy.")
    steps = config.get("StepAdjustments") or []
    if not steps:
        raise ValidationException("StepAdjustments must contain at least one step adjustment.")
    _check_steps(steps)
    if kind == EXACT and any(s["ScalingAdjustment"] < 0 for s in steps):
        raise ValidationException(
            "ScalingAdjustment cannot be negative when AdjustmentType is ExactCapacity."
        )
    magnitude = config.get("MinAdjustmentMagnitude")
    if magnitude is not None:
        if kind != PERCENT:
            raise ValidationException(
                "MinAdjustmentMagnitude is only supported with AdjustmentType "
                "PercentChangeInCapacity."
            )
        if magnitude < 1:
            raise ValidationException("MinAdjustmentMagnitude must be at least 1.")
    if config.get("Cooldown", 0) < 0:
        raise ValidationException("Cooldown must be at least 0 seconds.")
    return dict(config)


def _check_steps(steps: list[dict[str, Any]]) -> None:
    """The rules of Application Auto Scaling's StepAdjustment: intervals may not be empty,
    overlap or leave gaps; at most one is unbounded below (needed when a bound is negative)
    and at most one above (needed when a bound is positive); none is unbounded both ways."""
    spans = []
    for s in steps:
        lo, hi = s.get("MetricIntervalLowerBound"), s.get("MetricIntervalUpperBound")
        if lo is None and hi is None:
            raise ValidationException(
                "The upper and lower bound can't be null in the same step adjustment."
            )
        if lo is not None and hi is not None and lo >= hi:
            raise ValidationException(
                f"The lower bound {lo:g} of a step adjustment must be less than its upper "
                f"bound {hi:g}."
            )
        spans.append((-math.inf if lo is None else lo, math.inf if hi is None else hi))
    if sum(1 for lo, _ in spans if lo == -math.inf) > 1:
        raise ValidationException("At most one step adjustment may have a null lower bound.")
    if sum(1 for _, hi in spans if hi == math.inf) > 1:
        raise ValidationException("At most one step adjustment may have a null upper bound.")
    spans.sort()
    if spans[0][0] != -math.inf and any(lo < 0 for lo, _ in spans):
        raise ValidationException(
            "A step adjustment has a negative lower bound, so there must be a step adjustment "
            "with a null lower bound."
        )
    if spans[-1][1] != math.inf and any(hi > 0 for _, hi in spans):
        raise ValidationException(
            "A step adjustment has a positive upper bound, so there must be a step adjustment "
            "with a null upper bound."
        )
    for (lo1, hi1), (lo2, _hi2) in itertools.pairwise(spans):
        if lo2 < hi1:
            raise ValidationException(
                f"Step adjustment intervals may not overlap: [{lo1:g}, {hi1:g}) and [{lo2:g}, ...)."
            )
        if lo2 > hi1:
            raise ValidationException(
                f"Step adjustment intervals may not have a gap: between {hi1:g} and {lo2:g}."
            )
