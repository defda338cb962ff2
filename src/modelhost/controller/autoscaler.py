"""The autoscaling decision: a pure function of a target-tracking policy, the variant's capacity,
one metric value over the window, the target's bounds and when it last scaled.

No clock is read here: ``now`` is passed in (the loop in controller/scaling_loop.py injects
it). The rules, as Application Auto Scaling documents them for target tracking:

- desired = ceil(current * metric / target), clamped to [min, max];
- a capacity outside [min, max] (a target registered, or its bounds changed) is brought inside
  at once, whatever the cooldowns;
- scale-out waits ``scale_out_cooldown_s`` after the previous scale-out;
- scale-in waits ``scale_in_cooldown_s`` after the previous scaling activity of either kind
  (conservative: capacity just added is not taken away before it had a chance to count);
- ``disable_scale_in``: the policy only ever adds capacity;
- at zero capacity (async endpoints, MinCapacity 0) any positive metric asks for one instance;
- no metric (no full window yet, or a metric modelhost does not have): no change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_COOLDOWN_S = 300.0


@dataclass(frozen=True, slots=True)
class TargetTracking:
    target: float
    scale_out_cooldown_s: float = DEFAULT_COOLDOWN_S
    scale_in_cooldown_s: float = DEFAULT_COOLDOWN_S
    disable_scale_in: bool = False


@dataclass(frozen=True, slots=True)
class Bounds:
    min: int
    max: int


@dataclass(frozen=True, slots=True)
class History:
    """Monotonic times of the last scaling activities of this target (None: never)."""

    last_scale_out: float | None = None
    last_scale_in: float | None = None


class Why(StrEnum):
    BELOW_MIN = "below-min"
    ABOVE_MAX = "above-max"
    SCALE_OUT = "scale-out"
    SCALE_IN = "scale-in"


@dataclass(frozen=True, slots=True)
class Decision:
    desired: int
    why: Why


def clamp(value: int, bounds: Bounds) -> int:
    return max(bounds.min, min(bounds.max, value))


def wanted(policy: TargetTracking, current: int, metric: float) -> int:
    """Target tracking's capacity for ``metric`` (unclamped)."""
    if current <= 0:
        return 1 if metric > 0 else 0
    # Round before ceil so that float noise (3 * 70 / 70 = 3.0000000000000004) adds nothing.
    return math.ceil(round(current * metric / policy.target, 9))


def decide(
    policy: TargetTracking | None,
    current: int,
    metric: float | None,
    bounds: Bounds,
    history: History,
    now: float,
) -> Decision | None:
    """The capacity to set now, and why; None to leave it as it is."""
    if current < bounds.min:
        return Decision(bounds.min, Why.BELOW_MIN)
    if current > bounds.max:
        return Decision(bounds.max, Why.ABOVE_MAX)
    if policy is None or metric is None or policy.target <= 0:
        return None
    desired = clamp(wanted(policy, current, metric), bounds)
    if desired > current:
        if _cooling(history.last_scale_out, policy.scale_out_cooldown_s, now):
            return None
        return Decision(desired, Why.SCALE_OUT)
    if desired < current and not policy.disable_scale_in:
        last = max(
            (t for t in (history.last_scale_out, history.last_scale_in) if t is not None),
            default=None,
        )
        if _cooling(last, policy.scale_in_cooldown_s, now):
            return None
        return Decision(desired, Why.SCALE_IN)
    return None


def _cooling(last: float | None, cooldown_s: float, now: float) -> bool:
    return last is not None and now - last < cooldown_s


def decide_all(
    policies: list[tuple[TargetTracking, float | None]],
    current: int,
    bounds: Bounds,
    history: History,
    now: float,
) -> Decision | None:
    """Several policies on one target, as Application Auto Scaling combines them: the largest
    scale-out wins; scale-in only when every policy asks for it (then the largest of those)."""
    decisions = [decide(p, current, m, bounds, history, now) for p, m in policies]
    if not policies:
        decisions = [decide(None, current, None, bounds, history, now)]
    if any(d is not None and d.why in (Why.BELOW_MIN, Why.ABOVE_MAX) for d in decisions):
        return next(d for d in decisions if d is not None)
    outs = [d for d in decisions if d is not None and d.why is Why.SCALE_OUT]
    if outs:
        return max(outs, key=lambda d: d.desired)
    ins = [d for d in decisions if d is not None and d.why is Why.SCALE_IN]
    if ins and len(ins) == len(decisions):
        return max(ins, key=lambda d: d.desired)
    return None
