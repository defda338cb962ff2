"""CloudWatch Logs and metrics on the SageMaker API's port, and their background work.

``app.py`` routes to it: ``X-Amz-Target: Logs_20140328.*`` -> ``logs`` (awsJson1.1);
CloudWatch metrics in whichever protocol the client's botocore picks from the model
(rpc-v2-cbor, JSON 1.0 or awsQuery; ``owns_query`` tells its form posts from STS's).
``run`` is one background task: every second it timestamps new log lines (logstore.py); every
``metrics_sample_interval_s`` it samples the Recorder into the minute history and writes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from modelhost.api.dispatch import Dispatcher
from modelhost.api.operations.context import Context
from modelhost.api.query import FORM, Caller, QueryService
from modelhost.api.rpc import Reply, RpcService
from modelhost.cloudwatch.alarms_api import AlarmsApi
from modelhost.cloudwatch.history import History
from modelhost.cloudwatch.logs_api import logs_dispatcher
from modelhost.cloudwatch.logstore import (
    TRANSFORM_LOGS,
    LogCatalog,
    endpoint_groups,
    transform_job_groups,
)
from modelhost.cloudwatch.metrics_api import MetricsApi
from modelhost.metrics import Recorder
from modelhost.settings import Settings
from modelhost.state.alarms import AlarmStore

log = logging.getLogger(__name__)

LOG_LOOK_INTERVAL_S = 1.0
MINUTE_SLACK_S = 0.01  # the sample at a minute's start comes this long after it
QUERY_VERSION = b"Version=2010-08-01"
LOGS_TARGET = "Logs_20140328."


def transform_logs_dir(settings: Settings) -> Path:
    """Where batch transform's instances write ``<job>/<instance-id>.log`` (app.py's
    ``job_deps``): the streams of the ``/aws/sagemaker/TransformJobs`` log group."""
    return settings.logs_dir / TRANSFORM_LOGS


class CloudWatch:
    def __init__(
        self,
        settings: Settings,
        ctx: Context,
        recorder: Recorder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.clock = clock
        self.catalog = LogCatalog(
            [
                endpoint_groups(settings.logs_dir),
                transform_job_groups(transform_logs_dir(settings)),
            ],
            clock,
        )
        self.logs: Dispatcher = logs_dispatcher(ctx, self.catalog)
        self.history = History(settings.data_dir / "metrics.db", settings.metrics_retention_minutes)
        api = MetricsApi(self.history, clock)

        def op(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
            return lambda _caller, req: fn(req)

        handlers: dict[str, Callable[[Caller, dict[str, Any]], dict[str, Any]]] = {
            "GetMetricStatistics": op(api.get_metric_statistics),
            "GetMetricData": op(api.get_metric_data),
            "ListMetrics": op(api.list_metrics),
        }
        alarms = AlarmsApi(AlarmStore(ctx.store), ctx.arns.region, ctx.arns.account_id, clock)
        handlers |= {
            "PutMetricAlarm": op(alarms.put_metric_alarm),
            "DescribeAlarms": op(alarms.describe_alarms),
            "DeleteAlarms": op(alarms.delete_alarms),
            "SetAlarmState": op(alarms.set_alarm_state),
        }
        self.query = QueryService("cloudwatch", handlers)
        self.rpc = RpcService(self.query)
        self._task: asyncio.Task[None] | None = None

    def handler(
        self, target: str | None, headers: Mapping[str, str], body: bytes
    ) -> Callable[[], Reply] | None:
        """How to answer a ``POST /`` if it is for Logs or CloudWatch metrics, else None."""
        if target is None:
            if headers.get("content-type", "").startswith(FORM) and QUERY_VERSION in body:
                return lambda: self.query.handle(body, headers)  # STS's: Version=2011-06-15
            return None
        if target.startswith(LOGS_TARGET):
            return lambda: self.logs.handle(target, body)
        if target.startswith(self.rpc.prefix + "."):
            return lambda: self.rpc.handle_json(target, body, headers)
        return None

    def start(self) -> None:
        self.history.sample(self.recorder, self.clock())  # the first interval starts now
        self._task = asyncio.get_running_loop().create_task(self.run(), name="cloudwatch")

    async def run(self) -> None:
        """Every second a look at the logs; a metrics sample every interval and just after
        each minute starts (so what a sample folds in belongs to one minute)."""
        interval = self.settings.metrics_sample_interval_s
        next_sample = time.monotonic() + interval
        sampled_minute = int(self.clock() // 60)
        while True:
            to_minute = 60.0 - self.clock() % 60 + MINUTE_SLACK_S
            await asyncio.sleep(min(LOG_LOOK_INTERVAL_S, interval, to_minute))
            try:
                await asyncio.to_thread(self.catalog.refresh_all)
                minute = int(self.clock() // 60)
                if time.monotonic() >= next_sample or minute != sampled_minute:
                    next_sample, sampled_minute = time.monotonic() + interval, minute
                    await self.sample()
            except Exception:
                log.exception("CloudWatch background work failed; trying again")

    async def sample(self) -> None:
        now = self.clock()
        self.history.sample(self.recorder, now)  # on the loop: the Recorder's own thread
        await asyncio.to_thread(self.history.flush, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.sample()
        self.history.close()
