"""CloudWatch metric alarms: PutMetricAlarm, DescribeAlarms, DeleteAlarms, SetAlarmState.

Wire-neutral like metrics_api.py (botocore shapes' dicts in and out; ``QueryError`` codes, which
api/query.py maps to HTTP for awsQuery, JSON 1.0 and rpc-v2-cbor). Alarms are stored
(state/alarms.py); the scaler's alarm pass (controller/alarm_loop.py) evaluates them and
runs their AlarmActions that name a StepScaling policy. An alarm on a metric modelhost does not
have is accepted (as CloudWatch accepts any metric) and stays INSUFFICIENT_DATA.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modelhost.api.query import QueryError
from modelhost.cloudwatch.alarm_eval import OPERATORS
from modelhost.cloudwatch.metrics_api import _page_start, _page_token
from modelhost.state.alarms import AlarmStore, MetricAlarm

TREAT_MISSING = ("breaching", "notBreaching", "ignore", "missing")
HIGH_RESOLUTION_PERIODS = (10, 20, 30)
MAX_ALARM_WINDOW_S = 7 * 86400  # Period x EvaluationPeriods
# The members of PutMetricAlarm kept as the alarm's configuration (MetricAlarm's names).
CONFIG = (
    "AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions", "InsufficientDataActions",
    "MetricName", "Namespace", "Statistic", "ExtendedStatistic", "Dimensions", "Period", "Unit",
    "EvaluationPeriods", "DatapointsToAlarm", "Threshold", "ComparisonOperator",
    "TreatMissingData", "EvaluateLowSampleCountPercentile",
)  # fmt: skip


def _error(message: str) -> QueryError:
    return QueryError("ValidationError", message)


class AlarmsApi:
    def __init__(self, alarms: AlarmStore, region: str, account: str, clock: Callable[[], float]):
        self.alarms = alarms
        self.region, self.account = region, account
        self.clock = clock

    def put_metric_alarm(self, req: dict[str, Any]) -> dict[str, Any]:
        _check(req)
        name = req["AlarmName"]
        now = self.clock()
        old = self.alarms.get(name)
        spec = {k: req[k] for k in CONFIG if req.get(k) is not None}
        spec.setdefault("ActionsEnabled", True)
        if old is None:
            arn = f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:{name}"
            alarm = MetricAlarm(name, arn, spec, now, state_updated=now, transitioned=now)
            alarm.created = now
        else:  # the configuration is replaced; the state stays, as on CloudWatch
            alarm = old
            alarm.spec, alarm.updated = spec, now
        self.alarms.put(alarm)
        return {}

    def describe_alarms(self, req: dict[str, Any]) -> dict[str, Any]:
        names, prefix = req.get("AlarmNames"), req.get("AlarmNamePrefix")
        if names and prefix:
            raise QueryError(
                "InvalidParameterCombination",
                "AlarmNames and AlarmNamePrefix cannot be specified together.",
            )
        if req.get("ChildrenOfAlarmName") or req.get("ParentsOfAlarmName"):
            raise QueryError(
                "InvalidParameterCombination",
                "ChildrenOfAlarmName and ParentsOfAlarmName apply to composite alarms, which "
                "modelhost does not have.",
            )
        found = self.alarms.all()
        if "MetricAlarm" not in (req.get("AlarmTypes") or ["MetricAlarm"]):
            found = []
        if names:
            found = [a for a in found if a.name in names]
        if prefix:
            found = [a for a in found if a.name.startswith(prefix)]
        if state := req.get("StateValue"):
            found = [a for a in found if a.state == state]
        if action := req.get("ActionPrefix"):
            found = [a for a in found if any(x.startswith(action) for x in _all_actions(a))]
        start = _page_start(req.get("NextToken"))
        size = req.get("MaxRecords") or 50
        out: dict[str, Any] = {
            "MetricAlarms": [_out(a) for a in found[start : start + size]],
            "CompositeAlarms": [],
        }
        if start + size < len(found):
            out["NextToken"] = _page_token(start + size)
        return out

    def delete_alarms(self, req: dict[str, Any]) -> dict[str, Any]:
        missing = self.alarms.delete(list(dict.fromkeys(req["AlarmNames"])))
        if missing:
            raise QueryError(
                "ResourceNotFound", f"{len(missing)} of the alarms [{', '.join(missing)}] "
                "do not exist; no alarm was deleted."
            )  # fmt: skip
        return {}

    def set_alarm_state(self, req: dict[str, Any]) -> dict[str, Any]:
        """Sets the state until the next evaluation (every autoscaling interval) says again."""
        alarm = self.alarms.get(req["AlarmName"])
        if alarm is None:
            raise QueryError("ResourceNotFound", f"Alarm {req['AlarmName']} does not exist.")
        now = self.clock()
        if alarm.state != req["StateValue"]:
            alarm.transitioned = now
        alarm.state, alarm.reason = req["StateValue"], req["StateReason"]
        alarm.reason_data, alarm.state_updated = req.get("StateReasonData") or "", now
        self.alarms.put(alarm)
        return {}


def _check(req: dict[str, Any]) -> None:
    if req.get("Metrics"):
        raise _error("Metric math alarms (Metrics) are not supported by modelhost.")
    for key in ("MetricName", "Namespace", "Period", "EvaluationPeriods", "Threshold"):
        if req.get(key) is None:
            raise QueryError("MissingParameter", f"The parameter {key} is required.")
    if req.get("ComparisonOperator") not in OPERATORS:
        raise _error(
            f"ComparisonOperator must be one of {', '.join(OPERATORS)} (modelhost has no "
            "anomaly detection bands)."
        )
    if (req.get("Statistic") is None) == (req.get("ExtendedStatistic") is None):
        raise QueryError(
            "InvalidParameterCombination",
            "Exactly one of Statistic and ExtendedStatistic must be specified.",
        )
    _check_evaluation(req)
    for kind in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        for arn in req.get(kind) or []:
            if not arn.startswith("arn:") or len(arn.split(":")) < 6:
                raise _error(f"Invalid arn syntax: {arn}")


def _check_evaluation(req: dict[str, Any]) -> None:
    period, periods = req["Period"], req["EvaluationPeriods"]
    if period not in HIGH_RESOLUTION_PERIODS and period % 60:
        raise _error("Period must be 10, 20, 30 or a multiple of 60.")
    if period * periods > MAX_ALARM_WINDOW_S:
        raise _error("The evaluation period (Period x EvaluationPeriods) must not exceed 7 days.")
    if (to_alarm := req.get("DatapointsToAlarm")) is not None and to_alarm > periods:
        raise _error("DatapointsToAlarm must be less than or equal to EvaluationPeriods.")
    if req.get("TreatMissingData", "missing") not in TREAT_MISSING:
        raise _error(f"TreatMissingData must be one of {', '.join(TREAT_MISSING)}.")


def _all_actions(a: MetricAlarm) -> list[str]:
    return [
        x
        for kind in ("AlarmActions", "OKActions", "InsufficientDataActions")
        for x in a.spec.get(kind) or []
    ]


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _out(a: MetricAlarm) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AlarmName": a.name,
        "AlarmArn": a.arn,
        "AlarmConfigurationUpdatedTimestamp": _dt(a.updated),
        "OKActions": [],
        "AlarmActions": [],
        "InsufficientDataActions": [],
        "Dimensions": [],
        **a.spec,
        "StateValue": a.state,
        "StateReason": a.reason,
        "StateUpdatedTimestamp": _dt(a.state_updated),
        "StateTransitionedTimestamp": _dt(a.transitioned),
    }
    if a.reason_data:
        out["StateReasonData"] = a.reason_data
    return out
