"""``modelhost logs``: every instance's log lines of an endpoint (or of a transform job),
read through the server's CloudWatch Logs API, optionally followed.

An endpoint's lines are group ``/aws/sagemaker/Endpoints/<name>`` (streams
``<variant>/<instance-id>``), a transform job's the streams ``<job>/<instance-id>`` of
``/aws/sagemaker/TransformJobs``. Each line is printed behind its stream's name. ``--follow``
asks again every ``FOLLOW_POLL_S`` for the events from a little before the newest one seen
(``OVERLAP_MS``: a line is stamped when the server first sees it, so a late one may carry an
earlier time) and prints those it has not printed yet (by event id).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import typer
from botocore.exceptions import ClientError

from modelhost.cli._aws import Server, fail
from modelhost.cloudwatch.logstore import ENDPOINTS_PREFIX, TRANSFORM_JOBS_GROUP

FOLLOW_POLL_S = 0.5
OVERLAP_MS = 10_000
MAX_PAGES = 100_000  # per ask: far more than any log holds at 1 MB a page


def _pages(logs: Any, group: str, prefix: str | None, start: int | None) -> Iterator[Any]:
    """Every event of ``group`` (streams starting with ``prefix``) from ``start`` (ms)."""
    request: dict[str, Any] = {"logGroupName": group}
    if prefix is not None:
        request["logStreamNamePrefix"] = prefix
    if start is not None:
        request["startTime"] = max(start, 0)
    for _ in range(MAX_PAGES):
        page = logs.filter_log_events(**request)
        yield from page.get("events", [])
        token = page.get("nextToken")
        if not token or token == request.get("nextToken"):
            return
        request["nextToken"] = token


def _source(logs: Any, server: Server, name: str) -> tuple[str, str | None]:
    """The log group (and stream prefix) holding ``name``'s lines: the endpoint's, else the
    transform job's."""
    try:
        logs.describe_log_streams(logGroupName=ENDPOINTS_PREFIX + name, limit=1)
        return ENDPOINTS_PREFIX + name, None
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    prefix = f"{name}/"
    try:
        found = logs.describe_log_streams(
            logGroupName=TRANSFORM_JOBS_GROUP, logStreamNamePrefix=prefix, limit=1
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        found = {}
    if not found.get("logStreams"):
        fail(f"No logs for endpoint or transform job {name} on the server at {server.url}.")
    return TRANSFORM_JOBS_GROUP, prefix


def show_logs(server: Server, name: str, follow: bool) -> None:
    """Print (and with ``follow``, keep printing) the lines of ``name``'s instances, each
    behind its stream's name."""
    logs = server.logs()
    group, prefix = _source(logs, server, name)
    seen: dict[str, int] = {}  # event id -> timestamp, of the events in the overlap
    newest: int | None = None
    while True:
        start = None if newest is None else newest - OVERLAP_MS
        for event in _pages(logs, group, prefix, start):
            key, stamp = str(event.get("eventId")), int(event.get("timestamp", 0))
            if key in seen:
                continue
            seen[key] = stamp
            newest = stamp if newest is None else max(newest, stamp)
            typer.echo(f"{event.get('logStreamName')} | {event.get('message', '')}")
        if not follow:
            return
        if newest is not None:
            seen = {k: t for k, t in seen.items() if t >= newest - OVERLAP_MS}
        time.sleep(FOLLOW_POLL_S)
