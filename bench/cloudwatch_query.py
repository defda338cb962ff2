"""GetMetricData latency: one endpoint over the last hour, with 10 endpoints of history.

Fills a fresh data directory's metrics.db with --endpoints endpoints x --minutes minutes of
per-minute history (every minute busy: counters and both latency histograms), starts
`modelhost serve` on it (free 127.0.0.1 port, no embedded S3), then times --calls boto3
`get_metric_data` calls (5 queries: Invocations Sum, ModelLatency Average/p50/p99/Maximum, 60 s
period, last hour) for one endpoint, after --warmup calls. Prints p50/p90/p99 in ms, measured in
the client (botocore serialization, HTTP, parsing included). Goal: p50 <= 20 ms.
  .venv/bin/python bench/cloudwatch_query.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Server

from modelhost.cloudwatch.history import History
from modelhost.metrics import Recorder


def fill(data_dir: Path, endpoints: int, minutes: int) -> None:
    history = History(data_dir / "metrics.db", retention_minutes=minutes + 10)
    recorder = Recorder()
    now = time.time()
    for m in range(minutes, 0, -1):
        for e in range(endpoints):
            for i in range(20):
                recorder.record_ok(f"ep-{e}", "AllTraffic", 2, 500 + 300 * i, 800 + 300 * i)
        history.sample(recorder, now - m * 60)
    history.flush(now)
    history.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--minutes", type=int, default=360)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    server = Server(env={"MODELHOST_EMBEDDED_S3": "false"})
    fill(server.data_dir, args.endpoints, args.minutes)
    with server:
        cw: Any = boto3.client(
            "cloudwatch", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}),
        )  # fmt: skip
        dims = [{"Name": "EndpointName", "Value": "ep-3"},
                {"Name": "VariantName", "Value": "AllTraffic"}]  # fmt: skip

        def query(qid: str, metric: str, stat: str) -> dict[str, Any]:
            metric_spec = {"Namespace": "AWS/SageMaker", "MetricName": metric, "Dimensions": dims}
            return {"Id": qid, "MetricStat": {"Metric": metric_spec, "Period": 60, "Stat": stat}}

        queries = [query("calls", "Invocations", "Sum"), query("avg", "ModelLatency", "Average"),
                   query("p50", "ModelLatency", "p50"), query("p99", "ModelLatency", "p99"),
                   query("max", "ModelLatency", "Maximum")]  # fmt: skip
        times = []
        points = 0
        for i in range(args.warmup + args.calls):
            now = datetime.now(UTC)
            start = time.perf_counter()
            out = cw.get_metric_data(
                MetricDataQueries=queries, StartTime=now - timedelta(hours=1), EndTime=now
            )
            elapsed = (time.perf_counter() - start) * 1000
            if i >= args.warmup:
                times.append(elapsed)
                points = sum(len(r["Values"]) for r in out["MetricDataResults"])
        times.sort()
        result = {
            "endpoints": args.endpoints,
            "minutes": args.minutes,
            "calls": args.calls,
            "datapoints_per_call": points,
            "p50_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(0.9 * len(times))], 2),
            "p99_ms": round(times[int(0.99 * len(times)) - 1], 2),
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
