"""CloudWatch Logs and metrics on a live server, through boto3 (in each protocol botocore's
CloudWatch model lists) and the AWS CLI; the metric history survives a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.fixtures.server import CREDENTIALS, FIXTURE_MODELS, REGION, LiveServer, aws_env, deploy

pytestmark = pytest.mark.api

AWS = Path(sys.executable).parent / "aws"
ENDPOINT = "cw-echo"
GROUP = f"/aws/sagemaker/Endpoints/{ENDPOINT}"
CALLS = 5
DIMS = [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server sampling metrics every 0.2 s, with one endpoint invoked ``CALLS`` times."""
    env = {"MODELHOST_METRICS_SAMPLE_INTERVAL_S": "0.2"}
    with LiveServer(tmp_path_factory.mktemp("cw"), env=env) as server:
        sm = server.client("sagemaker")
        desc = deploy(sm, ENDPOINT, str((FIXTURE_MODELS / "echo").resolve()))
        assert desc["EndpointStatus"] == "InService", desc
        rt = server.client("sagemaker-runtime")
        for i in range(CALLS):
            rt.invoke_endpoint(EndpointName=ENDPOINT, ContentType="application/json", Body=f"[{i}]")
        yield server


def cloudwatch(server: LiveServer, protocol: str | None = None) -> Any:
    """A CloudWatch client; ``protocol`` forces one of those the model lists."""
    cfg = Config(retries={"max_attempts": 1, "mode": "standard"})
    session = boto3.Session(
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
    )
    if protocol is None:
        return session.client("cloudwatch", endpoint_url=server.url, config=cfg)
    with mock.patch("botocore.model.PRIORITY_ORDERED_SUPPORTED_PROTOCOLS", (protocol,)):
        client = session.client("cloudwatch", endpoint_url=server.url, config=cfg)
        assert client.meta.service_model.resolved_protocol == protocol
    return client


def statistics(cw: Any, metric: str, **extra: Any) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=DIMS,
        StartTime=now - timedelta(minutes=30),
        EndTime=now + timedelta(minutes=1),
        **({"Period": 3600, "Statistics": ["Sum", "SampleCount"]} | extra),
    )
    points: list[dict[str, Any]] = out["Datapoints"]
    return points


def wait_for_calls(cw: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        points = statistics(cw, "Invocations")
        if sum(p["Sum"] for p in points) >= CALLS or time.monotonic() > deadline:
            return points
        time.sleep(0.2)


def aws(server: LiveServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = aws_env(tmp_path) | {"AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run(
        [str(AWS), "--endpoint-url", server.url, *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# --- Logs ------------------------------------------------------------------------------------


def test_logs_through_boto3(live: LiveServer) -> None:
    logs = live.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/Endpoints/")
    assert GROUP in [g["logGroupName"] for g in groups["logGroups"]]
    (stream,) = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    assert stream["logStreamName"].startswith("AllTraffic/i-")

    out = logs.get_log_events(
        logGroupName=GROUP, logStreamName=stream["logStreamName"], startFromHead=True
    )
    assert out["events"], "the instance wrote its start-up line"
    first = out["events"][0]
    assert abs(first["timestamp"] / 1000 - time.time()) < 600
    again = logs.get_log_events(
        logGroupName=GROUP, logStreamName=stream["logStreamName"], nextToken=out["nextForwardToken"]
    )
    assert again["events"] == [] and again["nextForwardToken"] == out["nextForwardToken"]

    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=GROUP, limit=1)
    messages = [e["message"] for page in pages for e in page["events"]]
    assert messages == [e["message"] for e in out["events"]]

    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName="/aws/sagemaker/Endpoints/none", logStreamName="x")
    unchecked = live.client("logs", parameter_validation=False)  # the server's own check
    with pytest.raises(ClientError) as err:
        unchecked.get_log_events(logGroupName=GROUP, logStreamName="x", limit=0)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as err:
        unchecked.put_log_events(logGroupName=GROUP, logStreamName="x", logEvents=[])
    assert err.value.response["Error"]["Code"] == "UnknownOperationException"


def test_logs_through_the_aws_cli(live: LiveServer, tmp_path: Path) -> None:
    """AWS CLI v1 has no ``logs tail`` (a v2 command); these are the v1 equivalents."""
    out = aws(live, tmp_path, "logs", "describe-log-streams", "--log-group-name", GROUP)
    assert out.returncode == 0, out.stderr
    name = json.loads(out.stdout)["logStreams"][0]["logStreamName"]
    out = aws(live, tmp_path, "logs", "get-log-events", "--log-group-name", GROUP,
              "--log-stream-name", name, "--start-from-head")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["events"]
    out = aws(live, tmp_path, "logs", "filter-log-events", "--log-group-name", GROUP,
              "--filter-pattern", "serving")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert all("serving" in e["message"] for e in json.loads(out.stdout)["events"])
    out = aws(live, tmp_path, "logs", "describe-log-streams", "--log-group-name", "/none")
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr


def test_following_a_group_as_aws_logs_tail_does(live: LiveServer) -> None:
    """``aws logs tail --follow`` (CLI v2) polls FilterLogEvents from the newest timestamp it
    has seen and drops events it already printed by eventId; a line an instance writes shows
    up with the time it was written."""
    logs = live.client("logs")
    seen = {e["eventId"]: e for e in logs.filter_log_events(logGroupName=GROUP)["events"]}
    since = max(e["timestamp"] for e in seen.values())
    (log_file,) = (live.data_dir / "logs" / ENDPOINT).glob("*/*.log")
    written = time.time()
    with log_file.open("a") as f:  # as the instance process writes it
        f.write("a line written now\n")
    new: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not new and time.monotonic() < deadline:
        page = logs.filter_log_events(logGroupName=GROUP, startTime=since, interleaved=True)
        new = [e for e in page["events"] if e["eventId"] not in seen]
        time.sleep(0.1)
    assert [e["message"] for e in new] == ["a line written now"]
    assert abs(new[0]["timestamp"] / 1000 - written) < 2.5


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [None, "smithy-rpc-v2-cbor", "json", "query"])
def test_metrics_in_every_protocol(live: LiveServer, protocol: str | None) -> None:
    cw = cloudwatch(live, protocol)
    points = wait_for_calls(cw)
    assert sum(p["Sum"] for p in points) == CALLS
    latency = statistics(cw, "ModelLatency", Statistics=["Average", "Maximum"],
                         ExtendedStatistics=["p50", "p99.9"])  # fmt: skip
    assert latency and latency[0]["Unit"] == "Microseconds"
    assert 0 < latency[0]["ExtendedStatistics"]["p50"] <= latency[0]["Maximum"]

    now = datetime.now(UTC)
    stat = {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": "Invocations",
                       "Dimensions": DIMS}, "Period": 60, "Stat": "Sum"}  # fmt: skip
    data = cw.get_metric_data(
        MetricDataQueries=[{"Id": "calls", "MetricStat": stat}],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=1),
    )
    (result,) = data["MetricDataResults"]
    assert sum(result["Values"]) == CALLS
    assert all(isinstance(t, datetime) for t in result["Timestamps"])

    listed = cw.list_metrics(Namespace="AWS/SageMaker", MetricName="ModelLatency",
                             Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}])  # fmt: skip
    assert [m["Dimensions"] for m in listed["Metrics"]] == [DIMS]

    with pytest.raises(ClientError) as err:
        cw.get_metric_data(
            MetricDataQueries=[{"Id": "e1", "Expression": "SEARCH('{AWS/SageMaker}', 'Sum')"}],
            StartTime=now - timedelta(hours=1), EndTime=now,
        )  # fmt: skip
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "not supported" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        statistics(cw, "Invocations", Period=90)
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        cw.put_metric_data(Namespace="x", MetricData=[{"MetricName": "y", "Value": 1.0}])
    assert err.value.response["Error"]["Code"] == "InvalidAction"


def test_metrics_through_the_aws_cli(live: LiveServer, tmp_path: Path) -> None:
    wait_for_calls(cloudwatch(live))
    now = datetime.now(UTC)
    out = aws(live, tmp_path, "cloudwatch", "get-metric-statistics",
              "--namespace", "AWS/SageMaker", "--metric-name", "Invocations",
              "--dimensions", f"Name=EndpointName,Value={ENDPOINT}",
              "Name=VariantName,Value=AllTraffic",
              "--start-time", (now - timedelta(hours=1)).isoformat(),
              "--end-time", (now + timedelta(minutes=1)).isoformat(),
              "--period", "3600", "--statistics", "Sum")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sum(p["Sum"] for p in json.loads(out.stdout)["Datapoints"]) == CALLS
    out = aws(live, tmp_path, "cloudwatch", "list-metrics", "--namespace", "AWS/SageMaker")
    assert out.returncode == 0, out.stderr
    assert "ModelLatency" in {m["MetricName"] for m in json.loads(out.stdout)["Metrics"]}
    out = aws(live, tmp_path, "cloudwatch", "get-metric-statistics",
              "--namespace", "AWS/SageMaker", "--metric-name", "Invocations",
              "--start-time", now.isoformat(), "--end-time", now.isoformat(),
              "--period", "60", "--statistics", "Sum")  # fmt: skip
    assert out.returncode != 0 and "InvalidParameterValue" in out.stderr


def test_metric_history_survives_a_restart(live: LiveServer) -> None:
    """Last in this module: it restarts the module's server."""
    before = wait_for_calls(cloudwatch(live))
    live.stop()
    live.start()
    after = statistics(cloudwatch(live), "Invocations")
    assert sum(p["Sum"] for p in after) == sum(p["Sum"] for p in before) == CALLS
