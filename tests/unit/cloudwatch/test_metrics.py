"""CloudWatch metrics: the minute history sampled from the Recorder, its statistics, and the
three wires CloudWatch speaks (awsQuery, JSON 1.0, rpc-v2-cbor), in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from modelhost.api import cbor
from modelhost.api.query import QueryService
from modelhost.api.rpc import RpcService
from modelhost.cloudwatch.history import History
from modelhost.cloudwatch.metrics_api import MetricsApi
from modelhost.cloudwatch.stats import Minute, dist
from modelhost.metrics import Recorder

T0 = 1_800_000_000  # a multiple of 60
DIMS = [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "AllTraffic"}]


def make(path: Path, now: float = T0) -> tuple[History, RpcService]:
    history = History(path / "metrics.db", retention_minutes=60)
    api = MetricsApi(history, lambda: now)
    query = QueryService(
        "cloudwatch",
        {
            "GetMetricStatistics": lambda _c, r: api.get_metric_statistics(r),
            "GetMetricData": lambda _c, r: api.get_metric_data(r),
            "ListMetrics": lambda _c, r: api.list_metrics(r),
        },
    )
    return history, RpcService(query)


def call(rpc: RpcService, op: str, **req: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, headers, body = rpc.handle_json(
        f"GraniteServiceVersion20100801.{op}", json.dumps(req).encode(), {}
    )
    return status, json.loads(body), {k.decode(): v.decode() for k, v in headers}


def traffic(recorder: Recorder, latencies_us: list[float], errors: int = 0) -> None:
    for us in latencies_us:
        recorder.record_ok("ep", "AllTraffic", 2, us, us + 50)
    for _ in range(errors):
        recorder.record("ep", "AllTraffic", 2, 500, 0, 10)


def test_samples_fold_into_minutes_and_survive_a_restart(tmp_path: Path) -> None:
    recorder = Recorder()
    history, rpc = make(tmp_path)
    traffic(recorder, [1_000, 2_000])
    history.sample(recorder, T0 + 5)
    traffic(recorder, [3_000], errors=1)
    history.sample(recorder, T0 + 15)  # same minute
    history.sample(recorder, T0 + 60)  # the sample at the next minute's start
    traffic(recorder, [4_000])
    history.sample(recorder, T0 + 65)  # the next one
    history.sample(recorder, T0 + 75)  # nothing new: no change
    history.flush(T0 + 75)
    history.close()

    again, rpc = make(tmp_path)  # a restart
    status, out, _ = call(
        rpc, "GetMetricStatistics", Namespace="AWS/SageMaker", MetricName="Invocations",
        Dimensions=DIMS, StartTime=T0, EndTime=T0 + 120, Period=60,
        Statistics=["Sum", "SampleCount", "Average"],
    )  # fmt: skip
    assert status == 200, out
    points = [(p["Timestamp"], p["Sum"], p["SampleCount"]) for p in out["Datapoints"]]
    assert points == [(T0, 4.0, 4.0), (T0 + 60, 1.0, 1.0)]
    _, errors, _ = call(
        rpc, "GetMetricStatistics", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
        Dimensions=DIMS, StartTime=T0, EndTime=T0 + 120, Period=120, Statistics=["Sum", "Average"],
    )  # fmt: skip
    assert [(p["Sum"], p["Average"]) for p in errors["Datapoints"]] == [(1.0, 0.2)]
    again.close()


def test_a_counter_reset_counts_from_zero(tmp_path: Path) -> None:
    recorder = Recorder()
    history, _ = make(tmp_path)
    traffic(recorder, [1_000] * 3)
    history.sample(recorder, T0)
    recorder.forget("ep")  # deleted and made anew
    traffic(recorder, [1_000])
    history.sample(recorder, T0 + 10)
    ((_, minute),) = history.minutes(("ep", "AllTraffic"), 0, 2 * T0)
    assert minute.n == 4
    history.close()


def test_retention_drops_old_minutes(tmp_path: Path) -> None:
    recorder = Recorder()
    history, _ = make(tmp_path)
    traffic(recorder, [1_000])
    history.sample(recorder, T0)
    history.flush(T0 + 61 * 60)  # the history keeps 60 minutes
    assert history.keys() == []
    history.close()
    reopened, _ = make(tmp_path)
    assert reopened.keys() == []
    reopened.close()


def test_latency_statistics_are_exact_where_they_can_be() -> None:
    m = Minute()
    m.add(Minute(n=0))
    from modelhost.metrics import Histogram

    h = Histogram()
    for us in [120, 130, 140, 900, 40_000]:
        h.observe(us)
    m = Minute(n=5, model=h.counts, model_total=h.total)
    d = dist("ModelLatency", m)
    assert d is not None
    assert (d.value("SampleCount"), d.value("Sum")) == (5.0, 41_290.0)
    assert d.value("Average") == pytest.approx(8_258.0)
    assert 100 <= d.value("Minimum") <= 120
    assert 40_000 <= d.value("Maximum") <= 50_000
    assert d.value("p50") <= 250  # three of five under 250 us
    assert d.value("p99") >= 25_000
    one = Minute(n=1, model=[0] * 19, model_total=777.0)
    one.model[5] = 1
    single = dist("ModelLatency", one)
    assert single is not None and single.value("Minimum") == single.value("p90") == 777.0
    assert dist("ModelLatency", Minute()) is None


def _query(stat: str) -> dict[str, Any]:
    metric = {"MetricName": "Invocations"}
    return {"Id": "m1", "MetricStat": {"Metric": metric, "Period": 60, "Stat": stat}}


SEARCH = {"Id": "e1", "Expression": "SEARCH('x', 'Sum', 60)"}
CASES = [
    ("GetMetricStatistics", {"Period": 61, "Statistics": ["Sum"]}, "InvalidParameterValue"),
    ("GetMetricStatistics", {"Period": 60}, "InvalidParameterCombination"),
    ("GetMetricStatistics", {"Period": 60, "ExtendedStatistics": ["tm9"]}, "InvalidParameterValue"),
    ("GetMetricStatistics", {"Period": 60, "Statistics": ["Median"]}, "ValidationError"),
    ("GetMetricStatistics", {"Period": 60, "Statistics": ["Sum"], "EndTime": T0 - 60},
     "InvalidParameterValue"),
    ("GetMetricStatistics", {"Period": 60, "Statistics": ["Sum"], "EndTime": T0 + 2 * 86400},
     "InvalidParameterCombination"),
    ("GetMetricData", {"MetricDataQueries": [SEARCH]}, "InvalidParameterValue"),
    ("GetMetricData", {"MetricDataQueries": [_query("IQR")]}, "InvalidParameterValue"),
    ("GetMetricData", {"MetricDataQueries": [_query("Sum")], "NextToken": "x"}, "InvalidNextToken"),
    ("GetMetricData", {"MetricDataQueries": [_query("Sum"), _query("Sum")]}, "ValidationError"),
    ("ListMetrics", {"NextToken": "!!"}, "InvalidNextToken"),
    ("PutMetricData", {}, "InvalidAction"),
]  # fmt: skip


@pytest.mark.parametrize(("op", "req", "code"), CASES)
def test_errors_have_cloudwatch_codes_on_every_wire(
    tmp_path: Path, op: str, req: dict[str, Any], code: str
) -> None:
    history, rpc = make(tmp_path)
    if op == "GetMetricStatistics":
        req = {"Namespace": "AWS/SageMaker", "MetricName": "ModelLatency", "Dimensions": DIMS,
               "StartTime": T0, "EndTime": T0 + 600} | req  # fmt: skip
    if op == "GetMetricData":
        req = {"StartTime": T0, "EndTime": T0 + 600} | req
    status, body, headers = call(rpc, op, **req)
    assert status == 400, body
    assert headers["x-amzn-query-error"] == f"{code};Sender"
    assert body["__type"] == rpc.error_shapes.get(code, code)

    status, _, payload = rpc.handle_cbor("GraniteServiceVersion20100801", op, cbor.encode(req), {})
    assert status == 400
    assert cbor.decode(payload)["message"] == body["message"]
    history.close()


def test_the_query_wire_answers_xml(tmp_path: Path) -> None:
    recorder = Recorder()
    history, rpc = make(tmp_path)
    traffic(recorder, [1_000])
    history.sample(recorder, T0)
    form = {"Action": "ListMetrics", "Version": "2010-08-01", "Namespace": "AWS/SageMaker",
            "MetricName": "ModelLatency"}  # fmt: skip
    status, _, body = rpc.query.handle(urlencode(form).encode(), {})
    assert status == 200
    text = body.decode()
    assert "<ListMetricsResult><Metrics><member><Namespace>AWS/SageMaker</Namespace>" in text
    when = datetime.fromtimestamp(T0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    bad = {"Action": "GetMetricStatistics", "Version": "2010-08-01", "Namespace": "AWS/SageMaker",
           "MetricName": "ModelLatency", "StartTime": when, "EndTime": when, "Period": "60",
           "Statistics.member.1": "Sum"}  # fmt: skip
    status, _, body = rpc.query.handle(urlencode(bad).encode(), {})
    assert status == 400
    assert b"<Code>InvalidParameterValue</Code>" in body
    history.close()


def test_get_metric_data_pages_by_max_datapoints(tmp_path: Path) -> None:
    recorder = Recorder()
    history, rpc = make(tmp_path)
    history.sample(recorder, T0)
    for minute in range(3):  # minute m: m + 1 requests, folded in at the next minute's start
        traffic(recorder, [1_000] * (minute + 1))
        history.sample(recorder, T0 + 60 * (minute + 1))
    metric = {"Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": DIMS}
    queries = [
        {"Id": q, "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}} for q in ("a", "b")
    ]
    req: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": T0, "EndTime": T0 + 180,
                           "ScanBy": "TimestampAscending", "MaxDatapoints": 4}  # fmt: skip
    pages = []
    for _ in range(5):
        status, out, _ = call(rpc, "GetMetricData", **req)
        assert status == 200, out
        pages.append([(r["Id"], r["Values"], r["StatusCode"]) for r in out["MetricDataResults"]])
        if "NextToken" not in out:
            break
        req["NextToken"] = out["NextToken"]
    assert pages == [
        [("a", [1.0, 2.0, 3.0], "Complete"), ("b", [1.0], "PartialData")],
        [("a", [], "Complete"), ("b", [2.0, 3.0], "Complete")],
    ]
    history.close()
