"""An alarm's state from its newest datapoints: a pure function (no clock, no store).

``points`` are the newest datapoints, oldest first, one per evaluation (None: no data). Of the
last EvaluationPeriods of them, DatapointsToAlarm breaching ones put the alarm in ALARM.
TreatMissingData: ``breaching`` and ``notBreaching`` count a missing datapoint as such;
``ignore`` keeps the current state when every datapoint is missing; ``missing`` (the default)
goes to INSUFFICIENT_DATA then. Otherwise the alarm is OK.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

from modelhost.state.alarms import ALARMING, INSUFFICIENT, OK

OPERATORS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", operator.ge),
    "GreaterThanThreshold": ("greater than", operator.gt),
    "LessThanThreshold": ("less than", operator.lt),
    "LessThanOrEqualToThreshold": ("less than or equal to", operator.le),
}


@dataclass(frozen=True, slots=True)
class Rule:
    operator: str
    threshold: float
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing: str = "missing"


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str
    reason: str
    breaching: int


def breaches(rule: Rule, value: float) -> bool:
    return OPERATORS[rule.operator][1](value, rule.threshold)


def evaluate(rule: Rule, points: list[float | None], current: str) -> Verdict:
    window = points[-rule.evaluation_periods :]
    present = [p for p in window if p is not None]
    missing = len(window) - len(present)
    count = sum(1 for p in present if breaches(rule, p))
    if rule.treat_missing == "breaching":
        count += missing
    if count >= rule.datapoints_to_alarm:
        return Verdict(ALARMING, _reason(rule, window, count, "ALARM"), count)
    if not present and rule.treat_missing in ("missing", "ignore"):
        if rule.treat_missing == "ignore":
            return Verdict(current, "Unchanged: every datapoint is missing (ignore).", 0)
        return Verdict(
            INSUFFICIENT,
            f"Insufficient Data: {len(window)} datapoint{'s' if len(window) != 1 else ''} "
            "were unknown.",
            0,
        )
    return Verdict(OK, _reason(rule, window, len(window) - count, "OK"), count)


def _reason(rule: Rule, window: list[float | None], count: int, state: str) -> str:
    words = OPERATORS[rule.operator][0]
    shown = ", ".join("missing" if p is None else f"{p:g}" for p in reversed(window))
    verb = "were" if state == "ALARM" else "were not"
    return (
        f"Threshold Crossed: {count} out of the last {len(window)} datapoints [{shown}] {verb} "
        f"{words} the threshold ({rule.threshold:g}) (minimum {rule.datapoints_to_alarm} "
        f"datapoint{'s' if rule.datapoints_to_alarm != 1 else ''} for "
        f"{'OK -> ALARM' if state == 'ALARM' else 'ALARM -> OK'} transition)."
    )


def reason_data(rule: Rule, statistic: str, period: int, window: list[float | None]) -> str:
    """StateReasonData: CloudWatch's JSON document about the evaluation."""
    recent = [p for p in reversed(window) if p is not None and math.isfinite(p)]
    return json.dumps(
        {
            "version": "1.0",
            "statistic": statistic,
            "period": period,
            "recentDatapoints": recent,
            "threshold": rule.threshold,
        }
    )
