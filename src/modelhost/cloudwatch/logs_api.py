"""CloudWatch Logs (awsJson1.1, ``X-Amz-Target: Logs_20140328.<Op>``) over ``LogCatalog``:
DescribeLogGroups, DescribeLogStreams, GetLogEvents and FilterLogEvents.

Requests are validated against botocore's ``logs`` model by the shared ``Dispatcher``; a
constraint failure is an ``InvalidParameterException``, as the Logs service answers it.

Tokens: GetLogEvents' ``f/<n>`` (the page after starts at event n) and ``b/<n>`` (the page
before ends before event n); at either end of a stream the token asked with comes back, which
is how the CLI and SDKs know to stop. FilterLogEvents and the Describe calls hand out opaque
base64 tokens naming where the next page starts.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import zlib
from pathlib import Path
from typing import Any

from modelhost.api.dispatch import Dispatcher
from modelhost.api.operations.context import Context, Handler
from modelhost.cloudwatch.logstore import Event, LogCatalog, Stream
from modelhost.cloudwatch.patterns import pattern_matcher
from modelhost.errors import (
    InvalidParameterException,
    ResourceNotFoundException,
    ServiceError,
    ValidationException,
)

TARGET_PREFIX = "Logs_20140328"
GROUPS_PAGE = 50
STREAMS_PAGE = 50
EVENTS_PAGE = 10_000
PAGE_BYTES = 1024 * 1024  # GetLogEvents and FilterLogEvents answer at most 1 MB of events


def logs_dispatcher(ctx: Context, catalog: LogCatalog) -> Dispatcher:
    api = LogsApi(catalog, ctx.settings.region, ctx.settings.account_id)
    handlers: dict[str, Handler] = {
        "DescribeLogGroups": lambda _ctx, req: api.describe_log_groups(req),
        "DescribeLogStreams": lambda _ctx, req: api.describe_log_streams(req),
        "GetLogEvents": lambda _ctx, req: api.get_log_events(req),
        "FilterLogEvents": lambda _ctx, req: api.filter_log_events(req),
    }
    return Dispatcher(ctx, "logs", TARGET_PREFIX, handlers, translate=_logs_error)


def _logs_error(err: ServiceError) -> ServiceError:
    if isinstance(err, ValidationException):
        return InvalidParameterException(err.message)
    return err


class LogsApi:
    def __init__(self, catalog: LogCatalog, region: str, account: str) -> None:
        self.catalog = catalog
        self.arn_base = f"arn:aws:logs:{region}:{account}:log-group:"

    # --- groups and streams ---------------------------------------------------------------

    def describe_log_groups(self, req: dict[str, Any]) -> dict[str, Any]:
        prefix, pattern = req.get("logGroupNamePrefix"), req.get("logGroupNamePattern")
        if prefix is not None and pattern is not None:
            raise InvalidParameterException(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters."
            )
        groups = self.catalog.groups()
        names = sorted(groups)
        if prefix is not None:
            names = [n for n in names if n.startswith(prefix)]
        if pattern:
            names = [n for n in names if pattern.lower() in n.lower()]
        if req.get("logGroupIdentifiers"):
            wanted = {self._group_name(i) for i in req["logGroupIdentifiers"]}
            names = [n for n in names if n in wanted]
        start = _start(req.get("nextToken"), names)
        page = names[start : start + req.get("limit", GROUPS_PAGE)]
        out: dict[str, Any] = {"logGroups": [self._group(n, groups[n]) for n in page]}
        if start + len(page) < len(names):
            out["nextToken"] = _token({"after": page[-1]})
        return out

    def _group(self, name: str, root: Path) -> dict[str, Any]:
        streams = self.catalog.streams(root)
        created = [s.creation for s in streams if s.creation]
        creation = min(created) if created else int(root.stat().st_mtime * 1000)
        return {
            "logGroupName": name,
            "creationTime": creation,
            "metricFilterCount": 0,
            "arn": f"{self.arn_base}{name}:*",
            "logGroupArn": f"{self.arn_base}{name}",
            "storedBytes": sum(s.size for s in streams),
            "logGroupClass": "STANDARD",
        }

    def describe_log_streams(self, req: dict[str, Any]) -> dict[str, Any]:
        name, streams = self._streams(req)
        prefix = req.get("logStreamNamePrefix")
        by_time = req.get("orderBy") == "LastEventTime"
        if prefix is not None and by_time:
            raise InvalidParameterException(
                "Cannot order by LastEventTime with a logStreamNamePrefix."
            )
        if prefix is not None:
            streams = [s for s in streams if s.name.startswith(prefix)]
        if by_time:
            streams.sort(key=lambda s: (s.stamps[-1] if s.stamps else 0, s.name))
        if req.get("descending"):
            streams.reverse()
        names = [s.name for s in streams]
        start = _start(req.get("nextToken"), names)
        page = streams[start : start + req.get("limit", STREAMS_PAGE)]
        out: dict[str, Any] = {"logStreams": [self._stream(name, s) for s in page]}
        if start + len(page) < len(streams):
            out["nextToken"] = _token({"after": page[-1].name})
        return out

    def _stream(self, group: str, s: Stream) -> dict[str, Any]:
        out: dict[str, Any] = {
            "logStreamName": s.name,
            "creationTime": s.creation,
            "arn": f"{self.arn_base}{group}:log-stream:{s.name}",
            "storedBytes": s.size,
        }
        if len(s):
            out["firstEventTimestamp"] = s.stamps[0]
            out["lastEventTimestamp"] = s.stamps[-1]
            out["lastIngestionTime"] = s.ingestion(len(s) - 1)
        return out

    # --- events ---------------------------------------------------------------------------

    def get_log_events(self, req: dict[str, Any]) -> dict[str, Any]:
        _, streams = self._streams(req)
        stream = next((s for s in streams if s.name == req["logStreamName"]), None)
        if stream is None:
            raise ResourceNotFoundException("The specified log stream does not exist.")
        lo, hi = stream.between(req.get("startTime"), req.get("endTime"))
        limit = req.get("limit", EVENTS_PAGE)
        token = req.get("nextToken")
        if token is None:
            forward = bool(req.get("startFromHead"))
            at = lo if forward else hi
        else:
            forward, at = _position(token)
        if forward:
            start = max(at, lo)
            end = _fill_forward(stream, start, min(hi, start + limit))
        else:
            end = min(at, hi)
            start = min(_fill_backward(stream, max(lo, end - limit), end), end)
        return {
            "events": [
                {"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion}
                for _, e in stream.events(start, end)
            ],
            "nextForwardToken": f"f/{end:056d}",
            "nextBackwardToken": f"b/{start:056d}",
        }

    def filter_log_events(self, req: dict[str, Any]) -> dict[str, Any]:
        _, streams = self._streams(req)
        names, prefix = req.get("logStreamNames"), req.get("logStreamNamePrefix")
        if names is not None and prefix is not None:
            raise InvalidParameterException(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters."
            )
        if names is not None:
            streams = [s for s in streams if s.name in set(names)]
        elif prefix is not None:
            streams = [s for s in streams if s.name.startswith(prefix)]
        match = pattern_matcher(req.get("filterPattern"))
        after = _after(req.get("nextToken"))
        limit = req.get("limit", EVENTS_PAGE)
        found: list[tuple[int, str, int, Event]] = []
        for s in streams:
            lo, hi = s.between(req.get("startTime"), req.get("endTime"))
            taken = 0
            for i, message in s.messages(max(lo, _first_after(s, after)), hi, match.needles):
                if match(message):
                    found.append((s.stamps[i], s.name, i, s.event(i, message)))
                    taken += 1
                    if taken > limit:  # each stream's first limit + 1 are all a page can use
                        break
        found.sort(key=lambda f: f[:3])
        page: list[tuple[int, str, int, Event]] = []
        size = 0
        for item in found[:limit]:
            size += len(item[3].message) + 26
            if page and size > PAGE_BYTES:
                break
            page.append(item)
        out: dict[str, Any] = {
            "events": [
                {
                    "logStreamName": name,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.ingestion,
                    "eventId": f"{zlib.crc32(name.encode()):010d}{i:012d}",
                }
                for _, name, i, e in page
            ],
            "searchedLogStreams": [
                {"logStreamName": s.name, "searchedCompletely": True} for s in streams
            ],
        }
        if len(page) < len(found):
            ts, name, i, _ = page[-1]
            out["nextToken"] = _token({"ts": ts, "stream": name, "i": i})
        return out

    # --- lookups --------------------------------------------------------------------------

    def _streams(self, req: dict[str, Any]) -> tuple[str, list[Stream]]:
        name, ident = req.get("logGroupName"), req.get("logGroupIdentifier")
        if name is not None and ident is not None:
            raise InvalidParameterException(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters."
            )
        if name is None and ident is None:
            raise InvalidParameterException("Should provide either name or ARN of LogGroup.")
        group = name if name is not None else self._group_name(str(ident))
        root = self.catalog.groups().get(group)
        if root is None:
            raise ResourceNotFoundException("The specified log group does not exist.")
        return group, self.catalog.streams(root)

    def _group_name(self, identifier: str) -> str:
        """A log group's name from its name or ARN (with or without the trailing ``:*``)."""
        if identifier.startswith("arn:"):
            name = identifier.split(":log-group:", 1)[-1]
            return name.removesuffix(":*")
        return identifier


def _first_after(s: Stream, after: tuple[int, str, int] | None) -> int:
    """The first line of ``s`` whose (timestamp, stream, index) comes after ``after``."""
    if after is None:
        return 0
    ts, name, i = after
    if s.name == name:
        return i + 1
    if s.name < name:
        return bisect.bisect_right(s.stamps, ts)
    return bisect.bisect_left(s.stamps, ts)


def _fill_forward(s: Stream, start: int, end: int) -> int:
    size = 0
    for i in range(start, end):
        size += s.line_bytes(i) + 26
        if size > PAGE_BYTES and i > start:
            return i
    return max(start, end)


def _fill_backward(s: Stream, start: int, end: int) -> int:
    size = 0
    for i in range(end - 1, start - 1, -1):
        size += s.line_bytes(i) + 26
        if size > PAGE_BYTES and i < end - 1:
            return i + 1
    return start


def _position(token: str) -> tuple[bool, int]:
    direction, _, number = token.partition("/")
    if direction not in ("f", "b") or not number.isdigit():
        raise InvalidParameterException("The specified nextToken is invalid.")
    return direction == "f", int(number)


def _token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _untoken(token: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error) as exc:
        raise InvalidParameterException("The specified nextToken is invalid.") from exc
    if not isinstance(data, dict):
        raise InvalidParameterException("The specified nextToken is invalid.")
    return data


def _start(token: str | None, names: list[str]) -> int:
    """Where a page starts: after the name the token names."""
    if token is None:
        return 0
    after = _untoken(token).get("after")
    if not isinstance(after, str):
        raise InvalidParameterException("The specified nextToken is invalid.")
    return next((i for i, n in enumerate(names) if n > after), len(names))


def _after(token: str | None) -> tuple[int, str, int] | None:
    if token is None:
        return None
    data = _untoken(token)
    try:
        return int(data["ts"]), str(data["stream"]), int(data["i"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidParameterException("The specified nextToken is invalid.") from exc
