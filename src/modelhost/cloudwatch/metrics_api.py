"""CloudWatch metrics operations over the ``History``: GetMetricStatistics, GetMetricData
(MetricStat queries; SEARCH and metric math are refused) and ListMetrics, in namespace
``AWS/SageMaker`` with the EndpointName and VariantName dimensions, at 1-minute resolution.

Wire-neutral: requests and results are the botocore shapes' dicts (datetimes for timestamps);
errors are ``QueryError`` codes, which api/query.py's table maps to HTTP for every wire
CloudWatch speaks (awsQuery, JSON 1.0, rpc-v2-cbor: it is an awsQueryCompatible service).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from modelhost.api.query import QueryError
from modelhost.cloudwatch.history import History, Key
from modelhost.cloudwatch.stats import (
    BASIC,
    DIMENSIONS,
    METRICS,
    NAMESPACE,
    Dist,
    Minute,
    dist,
    percentile_of,
    unit,
)

MAX_DATAPOINTS = 1440  # GetMetricStatistics' limit per call
DEFAULT_MAX_DATAPOINTS = 100_800  # GetMetricData's page, unless MaxDatapoints says otherwise
LIST_PAGE = 500
RECENT_S = 3 * 3600  # ListMetrics' RecentlyActive=PT3H


def _invalid(message: str) -> QueryError:
    return QueryError("InvalidParameterValue", message)


class MetricsApi:
    def __init__(self, history: History, clock: Callable[[], float]) -> None:
        self.history = history
        self.clock = clock

    # --- GetMetricStatistics ---------------------------------------------------------------

    def get_metric_statistics(self, req: dict[str, Any]) -> dict[str, Any]:
        stats = list(req.get("Statistics") or [])
        extended = list(req.get("ExtendedStatistics") or [])
        if not stats and not extended:
            raise QueryError(
                "InvalidParameterCombination", "Must specify either Statistics or "
                "ExtendedStatistics, but not both."
            )  # fmt: skip
        for p in extended:
            if percentile_of(p) is None:
                raise _invalid(
                    f"The value {p} for parameter ExtendedStatistics is not supported "
                    "(modelhost answers percentiles pNN and pNN.NN)."
                )
        start, end = _seconds(req["StartTime"]), _seconds(req["EndTime"])
        period = _period(req["Period"], "Period")
        _check_range(start, end)
        windows = (end - start) // period + 1
        if windows > MAX_DATAPOINTS:
            raise QueryError(
                "InvalidParameterCombination",
                f"You have requested up to {windows} datapoints, which exceeds the limit of "
                f"{MAX_DATAPOINTS}. You may reduce the datapoints requested by increasing "
                "Period, or decreasing the time range.",
            )
        metric = req["MetricName"]
        key = _key(req["Namespace"], metric, req.get("Dimensions") or [])
        wanted_unit = req.get("Unit")
        points = []
        if key is not None and (wanted_unit is None or wanted_unit == unit(metric)):
            for ts, d in self._series(key, metric, start, end, period):
                point: dict[str, Any] = {"Timestamp": _dt(ts), "Unit": unit(metric)}
                point.update({s: d.value(s) for s in stats})
                if extended:
                    point["ExtendedStatistics"] = {p: d.value(p) for p in extended}
                points.append(point)
        return {"Label": metric, "Datapoints": points}

    # --- GetMetricData ---------------------------------------------------------------------

    def get_metric_data(self, req: dict[str, Any]) -> dict[str, Any]:
        offset = _page_start(req.get("NextToken"))
        budget = req.get("MaxDatapoints", DEFAULT_MAX_DATAPOINTS)
        start, end = _seconds(req["StartTime"]), _seconds(req["EndTime"])
        _check_range(start, end)
        queries = req["MetricDataQueries"]
        ids = [q["Id"] for q in queries]
        if len(set(ids)) != len(ids):
            raise QueryError("ValidationError", "The values for parameter Id must be unique.")
        descending = req.get("ScanBy", "TimestampDescending") == "TimestampDescending"
        results = []
        first_offset, returned, more = offset, 0, False
        for q in queries:
            if q.get("Expression") is not None:
                raise _invalid(
                    f"The Expression of query {q['Id']!r} is not supported: modelhost answers "
                    "MetricStat queries only (no SEARCH, no metric math)."
                )
            ms = q.get("MetricStat")
            if ms is None:
                raise QueryError(
                    "ValidationError", f"Query {q['Id']!r} must have a MetricStat or Expression."
                )
            stat = ms["Stat"]
            if stat not in BASIC and percentile_of(stat) is None:
                raise _invalid(
                    f"The statistic {stat!r} of query {q['Id']!r} is not supported by "
                    "modelhost (SampleCount, Average, Sum, Minimum, Maximum, pNN)."
                )
            period = _period(ms["Period"], f"MetricStat.Period of query {q['Id']!r}")
            metric = ms["Metric"]
            name = metric.get("MetricName", "")
            key = _key(metric.get("Namespace", ""), name, metric.get("Dimensions") or [])
            series: list[tuple[int, Dist]] = []
            if key is not None and ms.get("Unit") in (None, unit(name)):
                series = self._series(key, name, start, end, period)
            if descending:
                series.reverse()
            if q.get("ReturnData", True):
                # The page: datapoints [offset, offset + budget) of all results in order.
                lo = min(len(series), offset)
                hi = min(len(series), lo + budget)
                offset, budget = offset - lo, budget - (hi - lo)
                results.append(
                    {
                        "Id": q["Id"],
                        "Label": q.get("Label") or name,
                        "Timestamps": [_dt(ts) for ts, _ in series[lo:hi]],
                        "Values": [d.value(stat) for _, d in series[lo:hi]],
                        "StatusCode": "Complete" if hi == len(series) else "PartialData",
                    }
                )
                returned += hi - lo
                more = more or hi < len(series)
        out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
        if more:
            out["NextToken"] = _page_token(first_offset + returned)
        return out

    # --- ListMetrics -----------------------------------------------------------------------

    def list_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        namespace, name = req.get("Namespace"), req.get("MetricName")
        filters = req.get("Dimensions") or []
        recent = req.get("RecentlyActive")
        cutoff = (self.clock() - RECENT_S) // 60 if recent == "PT3H" else None
        found = []
        if namespace in (None, NAMESPACE):
            for (endpoint, variant), latest in sorted(self.history.keys()):
                if cutoff is not None and latest < cutoff:
                    continue
                values = {"EndpointName": endpoint, "VariantName": variant}
                if not all(
                    f["Name"] in values and f.get("Value", values[f["Name"]]) == values[f["Name"]]
                    for f in filters
                ):
                    continue
                dims = [{"Name": d, "Value": values[d]} for d in DIMENSIONS]
                found += [
                    {"Namespace": NAMESPACE, "MetricName": m, "Dimensions": dims}
                    for m in METRICS
                    if name in (None, m)
                ]
        start = _page_start(req.get("NextToken"))
        out: dict[str, Any] = {"Metrics": found[start : start + LIST_PAGE]}
        if start + LIST_PAGE < len(found):
            out["NextToken"] = _page_token(start + LIST_PAGE)
        if req.get("IncludeLinkedAccounts"):
            out["OwningAccounts"] = []
        return out

    # --- shared ----------------------------------------------------------------------------

    def _series(
        self, key: Key, metric: str, start: int, end: int, period: int
    ) -> list[tuple[int, Dist]]:
        """(window start, samples) for each window of ``period`` seconds with any, aligned to
        multiples of the period, from the window holding ``start`` up to ``end``."""
        first = start // period * period
        windows: dict[int, Minute] = {}
        for minute, bucket in self.history.minutes(key, first // 60, -(-end // 60)):
            window = minute * 60 // period * period
            total = windows.get(window)
            if total is None:
                total = windows[window] = Minute()
            total.add(bucket)
        out = []
        for window, total in sorted(windows.items()):
            d = dist(metric, total)
            if d is not None:
                out.append((window, d))
        return out


def _key(namespace: str, metric: str, dimensions: list[dict[str, Any]]) -> Key | None:
    """The (endpoint, variant) a metric names, or None when it names none modelhost has."""
    if namespace != NAMESPACE or metric not in METRICS:
        return None
    dims = {d["Name"]: d.get("Value") for d in dimensions}
    if set(dims) != set(DIMENSIONS):
        return None
    return str(dims["EndpointName"]), str(dims["VariantName"])


def _period(value: int, name: str) -> int:
    if value < 60 or value % 60:
        raise _invalid(f"The parameter {name} must be a multiple of 60 (1-minute resolution).")
    return value


def _check_range(start: int, end: int) -> None:
    if start >= end:
        raise _invalid("The parameter StartTime must be less than the parameter EndTime.")


def _seconds(value: datetime) -> int:
    return int(value.timestamp())


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _page_token(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _page_start(token: str | None) -> int:
    if token is None:
        return 0
    try:
        return max(0, int(base64.b64decode(token, validate=True).decode()))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise QueryError("InvalidNextToken", "The NextToken is not valid.") from exc


__all__ = ["MetricsApi"]
