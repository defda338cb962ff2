"""The step-scaling decision: a pure function of a StepScaling policy, the variant's capacity, the
alarm's metric value and threshold, the target's bounds and when the policy last acted.

No clock is read here (``now`` is passed in). The rules, as Application Auto Scaling documents
them for step scaling:

- a step's bounds are relative to the alarm's threshold: the step that applies is the one whose
  [MetricIntervalLowerBound, MetricIntervalUpperBound) holds ``metric - threshold`` (a missing
  lower bound is minus infinity, a missing upper bound plus infinity; at or above the threshold
  the lower bound is inclusive, below it the upper bound is);
- ChangeInCapacity adds the step's ScalingAdjustment; ExactCapacity sets it;
  PercentChangeInCapacity adds that percentage of the current capacity, truncated toward zero
  but at least 1 in magnitude, and at least MinAdjustmentMagnitude when one is given;
- the result is clamped to [min, max]; no change, no decision;
- after the policy acted it waits ``cooldown_s`` before acting again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from modelhost.controller.autoscaler import Bounds, clamp

DEFAULT_COOLDOWN_S = 300.0
CHANGE = "ChangeInCapacity"
EXACT = "ExactCapacity"
PERCENT = "PercentChangeInCapacity"


@dataclass(frozen=True, slots=True)
class Step:
    lower: float | None  # relative to the threshold; None: minus infinity
    upper: float | None  # None: plus infinity
    adjustment: int

    def holds(self, breach: float) -> bool:
        lo = -math.inf if self.lower is None else self.lower
        hi = math.inf if self.upper is None else self.upper
        if breach >= 0:
            return lo <= breach < hi
        return lo < breach <= hi


@dataclass(frozen=True, slots=True)
class StepPolicy:
    adjustment_type: str
    steps: tuple[Step, ...]
    min_adjustment_magnitude: int | None = None
    cooldown_s: float = DEFAULT_COOLDOWN_S

    @classmethod
    def of(cls, config: dict[str, Any]) -> StepPolicy:
        """From a validated StepScalingPolicyConfiguration (PascalCase, as requested)."""
        steps = tuple(
            Step(
                s.get("MetricIntervalLowerBound"),
                s.get("MetricIntervalUpperBound"),
                int(s["ScalingAdjustment"]),
            )
            for s in config.get("StepAdjustments") or []
        )
        return cls(
            config.get("AdjustmentType", CHANGE),
            steps,
            config.get("MinAdjustmentMagnitude"),
            float(config.get("Cooldown", DEFAULT_COOLDOWN_S)),
        )


def step_for(policy: StepPolicy, breach: float) -> Step | None:
    """The step whose interval holds ``metric - threshold``; None when none does."""
    return next((s for s in policy.steps if s.holds(breach)), None)


def percent_change(current: int, percent: int, min_magnitude: int | None) -> int:
    change = current * percent / 100.0
    if change == 0 and percent == 0:
        return 0
    magnitude = max(1, math.floor(abs(round(change, 9))), min_magnitude or 0)
    return magnitude if percent > 0 else -magnitude


def wanted(policy: StepPolicy, current: int, step: Step) -> int:
    """The step's capacity (unclamped)."""
    if policy.adjustment_type == EXACT:
        return step.adjustment
    if policy.adjustment_type == PERCENT:
        return current + percent_change(current, step.adjustment, policy.min_adjustment_magnitude)
    return current + step.adjustment


def decide_step(
    policy: StepPolicy,
    current: int,
    metric: float,
    threshold: float,
    bounds: Bounds,
    last_acted: float | None,
    now: float,
) -> int | None:
    """The capacity to set now when the alarm is in ALARM; None to leave it as it is."""
    if last_acted is not None and now - last_acted < policy.cooldown_s:
        return None
    step = step_for(policy, metric - threshold)
    if step is None:
        return None
    desired = clamp(wanted(policy, current, step), bounds)
    return None if desired == current else desired
