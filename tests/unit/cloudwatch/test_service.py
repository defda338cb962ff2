"""Which POST / requests CloudWatch takes (the rest go to STS or SageMaker), and its
background work over a running event loop."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from modelhost.api.operations.context import Context
from modelhost.cloudwatch.service import CloudWatch
from modelhost.metrics import Recorder
from modelhost.names import Arns
from modelhost.settings import Settings

FORM = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


def make(tmp_path: Path, recorder: Recorder | None = None) -> CloudWatch:
    settings = Settings(data_dir=tmp_path, metrics_sample_interval_s=0.05)
    ctx = Context(settings=settings, store=None, arns=Arns("us-east-1", "1"))  # type: ignore[arg-type]
    return CloudWatch(settings, ctx, recorder or Recorder(), clock=lambda: 1_800_000_000.0)


def test_routing(tmp_path: Path) -> None:
    cw = make(tmp_path)
    assert cw.handler(None, FORM, b"Action=ListMetrics&Version=2010-08-01") is not None
    assert cw.handler(None, FORM, b"Action=GetCallerIdentity&Version=2011-06-15") is None
    assert cw.handler("Logs_20140328.DescribeLogGroups", {}, b"{}") is not None
    assert cw.handler("GraniteServiceVersion20100801.ListMetrics", {}, b"{}") is not None
    assert cw.handler("SageMaker.ListEndpoints", {}, b"{}") is None
    assert cw.handler(None, {"content-type": "application/json"}, b"{}") is None
    logs = cw.handler("Logs_20140328.DescribeLogGroups", {}, b"{}")
    assert logs is not None
    status, _, body = logs()
    assert (status, json.loads(body)) == (200, {"logGroups": []})
    cw.history.close()


def test_background_work_samples_and_stops(tmp_path: Path) -> None:
    recorder = Recorder()
    cw = make(tmp_path, recorder)
    recorder.record_ok("ep", "v", 1, 100.0, 200.0)

    async def scenario() -> None:
        cw.start()
        for _ in range(200):  # poll, bounded: the first sample comes within ~0.05 s
            if cw.history.keys():
                break
            await asyncio.sleep(0.01)
        recorder.record_ok("ep", "v", 1, 100.0, 200.0)
        await cw.stop()  # takes a last sample

    asyncio.run(scenario())
    again = make(tmp_path)
    ((key, _),) = again.history.keys()
    ((_, minute),) = again.history.minutes(key, 0, 2**40)
    assert key == ("ep", "v") and minute.n == 2
    again.history.close()


def test_a_sample_is_taken_as_each_minute_starts(tmp_path: Path) -> None:
    """Requests counted before a minute ends land in that minute, though the next regular
    sample (60 s here) is far off."""
    started = time.monotonic()
    minute = 30_000_000  # the clock starts 0.2 s before the end of this minute
    recorder = Recorder()
    settings = Settings(data_dir=tmp_path, metrics_sample_interval_s=60)
    ctx = Context(settings=settings, store=None, arns=Arns("us-east-1", "1"))  # type: ignore[arg-type]
    cw = CloudWatch(
        settings, ctx, recorder, clock=lambda: minute * 60 + 59.8 + time.monotonic() - started
    )

    async def scenario() -> None:
        cw.start()
        recorder.record_ok("ep", "v", 1, 100.0, 200.0)
        for _ in range(300):  # poll, bounded: the sample comes 0.2 s from now
            if cw.history.keys():
                break
            await asyncio.sleep(0.01)
        await cw.stop()

    asyncio.run(scenario())
    again = make(tmp_path)
    assert [m for m, _ in again.history.minutes(("ep", "v"), 0, 2**40)] == [minute]
    again.history.close()
