"""Notification messages and their delivery (retries with backoff, failures counted)."""

from __future__ import annotations

import asyncio
import base64
import json

from modelhost.asyncinf.notify import Notifier, probe_message, result_message
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest
from modelhost.asyncinf.stats import AsyncStats


def _req() -> AsyncRequest:
    return AsyncRequest(
        "r",
        "ep",
        "inf-1",
        "s3://b/in",
        "s3://b/out/inf-1.out",
        "s3://b/f/inf-1-error.out",
        1700000000.0,
        1700000060.0,
        900.0,
        content_type="application/json",
    )


def test_success_message() -> None:
    msg = result_message("eu-west-1", _req(), 1700000001.5, b"out", "text/plain", True)
    assert msg == {
        "awsRegion": "eu-west-1",
        "eventTime": "2023-11-14T22:13:21.500Z",
        "receivedTime": "2023-11-14T22:13:20.000Z",
        "invocationStatus": "Completed",
        "requestParameters": {
            "contentType": "application/json",
            "endpointName": "ep",
            "inputLocation": "s3://b/in",
        },
        "responseParameters": {
            "contentType": "text/plain",
            "outputLocation": "s3://b/out/inf-1.out",
        },
        "responseBody": {"content": base64.b64encode(b"out").decode(), "encoding": "BASE64"},
        "inferenceId": "inf-1",
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    big = result_message("r", _req(), 0.0, b"x" * (128 * 1024 + 1), None, True)
    assert "responseBody" not in big


def test_failure_message() -> None:
    req = _req()
    req.reason = "boom"
    msg = result_message("r", req, 0.0, None, None, False)
    assert msg["invocationStatus"] == "Failed"
    assert msg["failureReason"] == "boom"
    assert msg["responseParameters"] == {"failureLocation": "s3://b/f/inf-1-error.out"}
    assert probe_message()["eventName"] == "TestNotification"


class Receiver:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[tuple[str, dict[str, object]]] = []
        self.waits: list[float] = []

    def post(self, url: str, body: bytes) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("connection refused")
        self.got.append((url, json.loads(body)))

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _notifier(receiver: Receiver, stats: AsyncStats, attempts: int = 4) -> Notifier:
    return Notifier(
        "us-east-1",
        stats,
        post=receiver.post,
        attempts=attempts,
        backoff_s=0.5,
        sleep=receiver.sleep,
        clock=lambda: 1700000001.0,
    )


def test_delivery_retries_with_backoff() -> None:
    receiver, stats = Receiver(failures=2), AsyncStats()
    config = AsyncEndpointConfig("ep", "s3://b/out", success_topic="http://hook/ok")
    asyncio.run(_notifier(receiver, stats).result(config, _req(), b"out", None))
    assert receiver.waits == [0.5, 1.0]
    [(url, msg)] = receiver.got
    assert url == "http://hook/ok" and msg["invocationStatus"] == "Completed"
    assert "responseBody" not in msg  # not asked for
    assert stats.counts["ep"]["NotificationFailures"] == 0


def test_delivery_that_never_succeeds_is_counted() -> None:
    receiver, stats = Receiver(failures=10), AsyncStats()
    config = AsyncEndpointConfig("ep", "s3://b/out", error_topic="http://hook/err")
    asyncio.run(_notifier(receiver, stats, attempts=3).result(config, _req(), None, None))
    assert receiver.waits == [0.5, 1.0] and receiver.got == []
    assert stats.counts["ep"]["NotificationFailures"] == 1


def test_no_topic_no_message_and_sns_needs_an_endpoint() -> None:
    receiver, stats = Receiver(failures=0), AsyncStats()
    notifier = _notifier(receiver, stats, attempts=1)
    asyncio.run(notifier.result(AsyncEndpointConfig("ep", "s3://b/o"), _req(), b"x", None))
    assert receiver.got == []
    sns = AsyncEndpointConfig("ep", "s3://b/o", success_topic="arn:aws:sns:us-east-1:1:t")
    asyncio.run(notifier.announce(sns))
    assert stats.counts["ep"]["NotificationFailures"] == 1
