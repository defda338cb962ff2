"""CloudWatch alarms, evaluated in the scaler's pass (controller/scaling_loop.py), and the
StepScaling policies their AlarmActions name.

Datapoints: each pass (every ``MODELHOST_AUTOSCALING_INTERVAL_S``) gives every alarm one
datapoint, the value of its metric then, from what modelhost measures:

- ``AWS/SageMaker`` by EndpointName: ``ApproximateBacklogSize`` (requests queued or running),
  ``ApproximateBacklogSizePerInstance`` (divided by the instance count, when there is one),
  ``HasBacklogWithoutCapacity`` (1 when there is a backlog and no instance, else 0);
- by EndpointName and VariantName: ``Invocations`` and ``InvocationsPerInstance``, the scaler's
  rate over its window expressed as a Sum over the alarm's Period.

Every statistic reads that one value. EvaluationPeriods and DatapointsToAlarm count passes, not
Periods: "2 out of 2" means two passes in a row (10 s at the default interval rather than
CloudWatch's two minutes), which makes a scale-out from zero quick. Anything else (another
namespace, an endpoint that does not exist) is missing data. The state is written when it
changes (and at an alarm's first evaluation); the datapoints are kept in memory (a restart
starts them afresh).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modelhost.cloudwatch.alarm_eval import Rule, evaluate, reason_data
from modelhost.state.alarms import ALARMING, AlarmStore, MetricAlarm
from modelhost.state.records import Endpoint
from modelhost.state.store import Store

NAMESPACE = "AWS/SageMaker"
UNCHECKED = "Unchecked:"  # a new alarm's reason until its first evaluation
MAX_POINTS = 100  # datapoints kept per alarm (EvaluationPeriods beyond this see only these)
# (endpoint lower-cased, variant) -> (invocations per minute, per instance per minute)
RateTable = Mapping[tuple[str, str], tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Fired:
    """An alarm in ALARM whose AlarmActions names a scaling policy."""

    alarm: MetricAlarm
    value: float  # the newest datapoint (the threshold when it is missing)
    policy_arn: str


def rule_of(a: MetricAlarm) -> Rule:
    s = a.spec
    periods = int(s["EvaluationPeriods"])
    return Rule(
        s["ComparisonOperator"],
        float(s["Threshold"]),
        periods,
        int(s.get("DatapointsToAlarm") or periods),
        s.get("TreatMissingData", "missing"),
    )


def measure(
    a: MetricAlarm, endpoints: Mapping[str, Endpoint], backlogs: Mapping[str, int], rates: RateTable
) -> float | None:
    """The alarm's metric now; None when modelhost has no such datapoint (pure)."""
    s = a.spec
    dims = {d["Name"]: d.get("Value", "") for d in s.get("Dimensions") or []}
    ep = endpoints.get(str(dims.get("EndpointName", "")).lower())
    if s.get("Namespace") != NAMESPACE or ep is None:
        return None
    key, metric = ep.name.lower(), s.get("MetricName")
    instances = sum(v.current_count or 0 for v in ep.variants)
    backlog = backlogs.get(key, 0)
    if metric == "HasBacklogWithoutCapacity":
        return 1.0 if backlog > 0 and instances == 0 else 0.0
    if metric == "ApproximateBacklogSize":
        return float(backlog)
    if metric == "ApproximateBacklogSizePerInstance":
        return backlog / instances if instances else float(backlog)
    if metric in ("Invocations", "InvocationsPerInstance"):
        rate = rates.get((key, str(dims.get("VariantName", ""))))
        if rate is None:
            return None
        per_minute = rate[1] if metric == "InvocationsPerInstance" else rate[0]
        return per_minute * int(s["Period"]) / 60.0
    return None


class AlarmEvaluator:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.alarms = AlarmStore(store)
        self.clock = clock
        self.points: dict[str, deque[float | None]] = {}

    def evaluate(self, value_of: Callable[[MetricAlarm], float | None]) -> list[Fired]:
        """One datapoint for every alarm, its state, and the policy actions to run."""
        fired: list[Fired] = []
        alarms = self.alarms.all()
        for a in alarms:
            series = self.points.setdefault(a.name, deque(maxlen=MAX_POINTS))
            value = value_of(a)
            series.append(value)
            rule = rule_of(a)
            verdict = evaluate(rule, list(series), a.state)
            if verdict.state != a.state or a.reason.startswith(UNCHECKED):
                self._transition(a, verdict.state, verdict.reason, rule, list(series))
            if verdict.state == ALARMING:
                point = rule.threshold if value is None else value
                fired += [Fired(a, point, x) for x in a.actions if ":scalingPolicy:" in x]
        for gone in set(self.points) - {a.name for a in alarms}:
            del self.points[gone]
        return fired

    def _transition(
        self, a: MetricAlarm, state: str, reason: str, rule: Rule, series: list[float | None]
    ) -> None:
        now = self.clock()
        window = series[-rule.evaluation_periods :]
        stat = str(a.spec.get("Statistic") or a.spec.get("ExtendedStatistic"))
        data = reason_data(rule, stat, int(a.spec["Period"]), window)

        def change(current: MetricAlarm) -> MetricAlarm:
            if current.state != state:
                current.transitioned = now
            current.state, current.reason, current.reason_data = state, reason, data
            current.state_updated = now
            return current

        with self.alarms.store._lock:  # PutMetricAlarm may have changed it meanwhile
            latest = self.alarms.get(a.name)
            if latest is not None:
                self.alarms.put(change(latest))
        a.state = state
