"""CloudWatch Logs over instance log files: timestamps, tokens, filters and errors, through the
awsJson1.1 dispatcher as a client's request arrives (no server)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.operations.context import Context
from modelhost.cloudwatch.logs_api import logs_dispatcher
from modelhost.cloudwatch.logstore import LogCatalog, endpoint_groups, transform_job_groups
from modelhost.cloudwatch.patterns import pattern_matcher
from modelhost.errors import InvalidParameterException
from modelhost.names import Arns
from modelhost.settings import Settings

GROUP = "/aws/sagemaker/Endpoints/ep"
STREAM = "AllTraffic/i-1"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Any, Path, Clock]:
    settings = Settings(data_dir=tmp_path)
    clock = Clock()
    catalog = LogCatalog(
        [endpoint_groups(settings.logs_dir), transform_job_groups(tmp_path / "transform-logs")],
        clock,
    )
    ctx = Context(settings=settings, store=None, arns=Arns("us-east-1", "1"))  # type: ignore[arg-type]
    dispatcher = logs_dispatcher(ctx, catalog)

    def call(op: str, **req: Any) -> tuple[int, dict[str, Any]]:
        status, _, body = dispatcher.handle(f"Logs_20140328.{op}", json.dumps(req).encode())
        return status, json.loads(body)

    return call, settings.logs_dir / "ep" / "AllTraffic", clock


def write(path: Path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)
    os.utime(path, (mtime, mtime))


def test_lines_carry_the_time_they_were_written(setup: Any, tmp_path: Path) -> None:
    call, root, clock = setup
    log = root / "i-1.log"
    write(log, "one\ntwo\npart", T0 - 5)
    status, out = call("GetLogEvents", logGroupName=GROUP, logStreamName="AllTraffic/i-1")
    assert status == 200
    assert [(e["message"], e["timestamp"]) for e in out["events"]] == [
        ("one", int((T0 - 5) * 1000)),
        ("two", int((T0 - 5) * 1000)),
    ]
    assert out["events"][0]["ingestionTime"] == int(T0 * 1000)
    clock.now = T0 + 10
    write(log, "ial\nthree\n", T0 + 9)
    _, out = call("GetLogEvents", logGroupName=GROUP, logStreamName="AllTraffic/i-1")
    stamps = [(e["message"], e["timestamp"] // 1000) for e in out["events"]]
    assert stamps == [("one", T0 - 5), ("two", T0 - 5), ("partial", T0 + 9), ("three", T0 + 9)]

    # A new server (a new catalog) reads the same times back from the sidecar.
    settings = Settings(data_dir=tmp_path)
    again = LogCatalog([endpoint_groups(settings.logs_dir)], lambda: T0 + 100)
    (stream,) = again.streams(settings.logs_dir / "ep")
    assert [ts // 1000 for ts in stream.stamps] == [T0 - 5, T0 - 5, T0 + 9, T0 + 9]


def test_forward_and_backward_tokens(setup: Any) -> None:
    call, root, _ = setup
    write(root / "i-1.log", "".join(f"line {i}\n" for i in range(10)), T0)
    stream = {"logGroupName": GROUP, "logStreamName": "AllTraffic/i-1"}

    _, tail = call("GetLogEvents", **stream, limit=3)  # the newest, oldest first
    assert [e["message"] for e in tail["events"]] == ["line 7", "line 8", "line 9"]
    _, same = call("GetLogEvents", **stream, limit=3, nextToken=tail["nextForwardToken"])
    assert same["events"] == [] and same["nextForwardToken"] == tail["nextForwardToken"]

    _, before = call("GetLogEvents", **stream, limit=3, nextToken=tail["nextBackwardToken"])
    assert [e["message"] for e in before["events"]] == ["line 4", "line 5", "line 6"]

    _, head = call("GetLogEvents", **stream, limit=4, startFromHead=True)
    seen = [e["message"] for e in head["events"]]
    token = head["nextForwardToken"]
    for _ in range(10):  # page forward until the token comes back unchanged
        _, page = call("GetLogEvents", **stream, limit=4, nextToken=token)
        seen += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            break
        token = page["nextForwardToken"]
    assert seen == [f"line {i}" for i in range(10)]

    _, first = call("GetLogEvents", **stream, limit=4, startFromHead=True)
    _, start = call("GetLogEvents", **stream, nextToken=first["nextBackwardToken"])
    assert start["events"] == [] and start["nextBackwardToken"] == first["nextBackwardToken"]


def test_time_range(setup: Any) -> None:
    call, root, clock = setup
    log = root / "i-1.log"
    for i in range(3):
        clock.now = T0 + i * 60
        write(log, f"minute {i}\n", T0 + i * 60)
        call("DescribeLogStreams", logGroupName=GROUP)  # a look, as the background one
    ms = int(T0 * 1000)
    _, out = call(
        "GetLogEvents",
        logGroupName=GROUP,
        logStreamName="AllTraffic/i-1",
        startTime=ms + 60_000,
        endTime=ms + 120_000,
    )
    assert [e["message"] for e in out["events"]] == ["minute 1"]


def test_filter_log_events_interleaves_streams_and_pages(setup: Any) -> None:
    call, root, _ = setup
    write(root / "i-1.log", "a error 1\nb ok\n", T0)
    write(root / "i-2.log", "c error 2\n", T0 + 1)
    write(root.parent / "Other" / "i-3.log", "d error 3\n", T0 + 2)
    _, out = call("FilterLogEvents", logGroupName=GROUP, filterPattern="error", limit=2)
    assert [(e["logStreamName"], e["message"]) for e in out["events"]] == [
        ("AllTraffic/i-1", "a error 1"),
        ("AllTraffic/i-2", "c error 2"),
    ]
    _, rest = call(
        "FilterLogEvents", logGroupName=GROUP, filterPattern="error", nextToken=out["nextToken"]
    )
    assert [e["message"] for e in rest["events"]] == ["d error 3"]
    assert "nextToken" not in rest
    _, some = call("FilterLogEvents", logGroupName=GROUP, logStreamNamePrefix="Other/")
    assert [e["message"] for e in some["events"]] == ["d error 3"]
    ids = {e["eventId"] for e in out["events"] + rest["events"]}
    assert len(ids) == 3


def test_filter_pages_through_lines_written_together(setup: Any) -> None:
    """Many lines share a timestamp (one write, or one look): pages still cover each once."""
    call, root, _ = setup
    for n in (1, 2, 3):
        write(root / f"i-{n}.log", "".join(f"s{n} line {i}\n" for i in range(5)), T0)
    seen: list[str] = []
    req: dict[str, Any] = {"logGroupName": GROUP, "limit": 4}
    for _ in range(10):
        _, page = call("FilterLogEvents", **req)
        seen += [e["message"] for e in page["events"]]
        if "nextToken" not in page:
            break
        req["nextToken"] = page["nextToken"]
    assert seen == [f"s{n} line {i}" for n in (1, 2, 3) for i in range(5)]


def test_describe_groups_and_streams(setup: Any, tmp_path: Path) -> None:
    call, root, clock = setup
    clock.now = T0 + 10
    write(root / "i-2.log", "x\n", T0 + 5)
    write(root / "i-1.log", "y\n", T0)
    write(tmp_path / "transform-logs" / "job" / "i-9.log", "z\n", T0)
    _, groups = call("DescribeLogGroups")
    names = [g["logGroupName"] for g in groups["logGroups"]]
    assert names == [GROUP, "/aws/sagemaker/TransformJobs"]
    _, one = call("DescribeLogGroups", logGroupNamePrefix="/aws/sagemaker/Trans")
    assert [g["logGroupName"] for g in one["logGroups"]] == ["/aws/sagemaker/TransformJobs"]
    _, page = call("DescribeLogGroups", limit=1)
    _, page2 = call("DescribeLogGroups", limit=1, nextToken=page["nextToken"])
    assert [g["logGroupName"] for g in page2["logGroups"]] == ["/aws/sagemaker/TransformJobs"]

    _, streams = call("DescribeLogStreams", logGroupName=GROUP)
    assert [s["logStreamName"] for s in streams["logStreams"]] == [
        "AllTraffic/i-1",
        "AllTraffic/i-2",
    ]
    _, latest = call(
        "DescribeLogStreams",
        logGroupIdentifier=f"arn:aws:logs:us-east-1:1:log-group:{GROUP}",
        orderBy="LastEventTime",
        descending=True,
        limit=1,
    )
    assert [s["logStreamName"] for s in latest["logStreams"]] == ["AllTraffic/i-2"]
    assert latest["logStreams"][0]["lastEventTimestamp"] == int((T0 + 5) * 1000)
    _, jobs = call("DescribeLogStreams", logGroupName="/aws/sagemaker/TransformJobs")
    assert [s["logStreamName"] for s in jobs["logStreams"]] == ["job/i-9"]


@pytest.mark.parametrize(
    ("op", "req", "code", "text"),
    [
        ("DescribeLogStreams", {"logGroupName": "/aws/sagemaker/Endpoints/nope"},
         "ResourceNotFoundException", "log group does not exist"),
        ("GetLogEvents", {"logGroupName": GROUP, "logStreamName": "AllTraffic/nope"},
         "ResourceNotFoundException", "log stream does not exist"),
        ("GetLogEvents", {"logGroupName": GROUP, "logStreamName": "x", "limit": 0},
         "InvalidParameterException", "greater than or equal to 1"),
        ("GetLogEvents", {"logGroupName": GROUP, "logStreamName": STREAM, "nextToken": "zz"},
         "InvalidParameterException", "nextToken is invalid"),
        ("DescribeLogStreams", {}, "InvalidParameterException", "either name or ARN"),
        ("DescribeLogStreams", {"logGroupName": GROUP, "logStreamNamePrefix": "A",
                                "orderBy": "LastEventTime"},
         "InvalidParameterException", "Cannot order by LastEventTime"),
        ("FilterLogEvents", {"logGroupName": GROUP, "filterPattern": "{ $.a = 1 }"},
         "InvalidParameterException", "not supported"),
        ("FilterLogEvents", {"logGroupName": GROUP, "nextToken": "!!"},
         "InvalidParameterException", "nextToken is invalid"),
        ("PutLogEvents", {}, "UnknownOperationException", "not supported by modelhost"),
    ],
)  # fmt: skip
def test_errors_have_the_logs_shape(
    setup: Any, op: str, req: dict[str, Any], code: str, text: str
) -> None:
    call, root, _ = setup
    write(root / "i-1.log", "x\n", T0)
    status, body = call(op, **req)
    assert status == 400
    assert body["__type"] == code
    assert text in body["message"]


def test_filter_patterns() -> None:
    assert pattern_matcher(None)("anything")
    assert pattern_matcher("ERROR model")("ERROR in model x")
    assert not pattern_matcher("ERROR model")("ERROR in x")
    assert pattern_matcher('"in model"')("ERROR in model x")
    assert pattern_matcher("?WARN ?ERROR")("a WARN")
    assert not pattern_matcher("?WARN ?ERROR")("info")
    assert not pattern_matcher("ERROR -ignored")("ERROR ignored")
    assert pattern_matcher("%lat(ency)? [0-9]+%")("latency 12")
    with pytest.raises(InvalidParameterException):
        pattern_matcher("[ip, user]")


def test_lines_holding_a_term_are_found_in_any_block(setup: Any) -> None:
    call, root, _ = setup
    lines = [f"req {i} {'slow' if i % 1500 == 7 else 'ok'}" for i in range(10_000)]
    write(root / "i-1.log", "\n".join(lines) + "\n", T0)
    _, out = call("FilterLogEvents", logGroupName=GROUP, filterPattern="slow req")
    assert [e["message"] for e in out["events"]] == [m for m in lines if "slow" in m]
    _, none = call("FilterLogEvents", logGroupName=GROUP, filterPattern="slow -req")
    assert none["events"] == []


def test_the_background_look_notes_times_that_later_reads_use(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    clock = Clock()
    catalog = LogCatalog([endpoint_groups(settings.logs_dir)], clock)
    log = settings.logs_dir / "ep" / "AllTraffic" / "i-1.log"
    write(log, "first\n", T0)
    clock.now = T0 + 1
    catalog.refresh_all()
    write(log, "second\n", T0 + 60)
    clock.now = T0 + 61
    catalog.refresh_all()
    assert len(catalog.streams(settings.logs_dir / "ep", index=False)[0]) == 0  # not read yet
    (stream,) = catalog.streams(settings.logs_dir / "ep")
    assert [(e.message, e.timestamp // 1000) for _, e in stream.events(0, len(stream))] == [
        ("first", T0),
        ("second", T0 + 60),
    ]
