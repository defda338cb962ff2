"""Asynchronous inference notifications: SageMaker's messages (CONTRACT.md 7) delivered to an
endpoint's SuccessTopic / ErrorTopic.

A topic is an ``http(s)://`` URL (a webhook: the message is POSTed as JSON, modelhost's
extension) or an ``arn:aws:sns:...`` topic, published through the SNS-compatible endpoint the
server is configured with (``MODELHOST_SNS_ENDPOINT_URL``). Delivery is tried up to
``attempts`` times with exponential backoff; one that never succeeds counts in
NotificationFailures. The message builders are pure functions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest
from modelhost.asyncinf.stats import AsyncStats

log = logging.getLogger(__name__)

ATTEMPTS = 5
BACKOFF_S = 0.5  # then 1, 2, 4 s
POST_TIMEOUT_S = 10.0
MAX_INCLUDED_BYTES = 128 * 1024  # IncludeInferenceResponseIn embeds responses up to this


class NotificationError(Exception):
    pass


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def probe_message() -> dict[str, Any]:
    """What SageMaker sends to an endpoint's topics when it is created or updated."""
    return {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}


def result_message(
    region: str,
    req: AsyncRequest,
    now: float,
    output: bytes | None,
    response_type: str | None,
    include_response: bool,
) -> dict[str, Any]:
    """The InferenceResult message of a request that ended: ``output`` None for a failure."""
    message: dict[str, Any] = {
        "awsRegion": region,
        "eventTime": _iso(now),
        "receivedTime": _iso(req.created),
        "invocationStatus": "Completed" if output is not None else "Failed",
        "requestParameters": {
            "contentType": req.content_type or "application/octet-stream",
            "endpointName": req.endpoint,
            "inputLocation": req.input_location,
        },
        "inferenceId": req.inference_id,
        "eventVersion": "1.0",
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
    }
    if output is not None:
        message["responseParameters"] = {
            "contentType": response_type or "application/octet-stream",
            "outputLocation": req.output_location,
        }
        if include_response and len(output) <= MAX_INCLUDED_BYTES:
            message["responseBody"] = {
                "content": base64.b64encode(output).decode(),
                "encoding": "BASE64",
            }
    else:
        message["failureReason"] = req.reason or ""
        message["responseParameters"] = {"failureLocation": req.failure_location}
    return message


Post = Callable[[str, bytes], None]


class Notifier:
    def __init__(
        self,
        region: str,
        stats: AsyncStats,
        *,
        sns_endpoint_url: str | None = None,
        post: Post | None = None,
        clock: Callable[[], float] = time.time,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.region = region
        self.stats = stats
        self.sns_endpoint_url = sns_endpoint_url
        self._post = post or _http_post
        self._clock = clock
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._sns: Any = None

    async def result(
        self,
        config: AsyncEndpointConfig,
        req: AsyncRequest,
        output: bytes | None,
        response_type: str | None,
    ) -> None:
        """Tell the endpoint's topic how a request ended (nothing without a topic)."""
        success = output is not None
        topic = config.success_topic if success else config.error_topic
        if not topic:
            return
        include = ("success" if success else "error") in config.include_response_in
        message = result_message(self.region, req, self._clock(), output, response_type, include)
        await self.deliver(req.endpoint, topic, message)

    async def announce(self, config: AsyncEndpointConfig) -> None:
        """The TestNotification to each of a created or updated endpoint's topics."""
        for topic in {t for t in (config.success_topic, config.error_topic) if t}:
            await self.deliver(config.endpoint, topic, probe_message())

    async def deliver(self, endpoint: str, topic: str, message: dict[str, Any]) -> bool:
        body = json.dumps(message).encode()
        for attempt in range(self.attempts):
            try:
                await asyncio.to_thread(self._send, topic, body)
                return True
            except Exception as exc:
                log.warning(
                    "notification to %s failed (attempt %d of %d): %s",
                    topic,
                    attempt + 1,
                    self.attempts,
                    exc,
                )
            if attempt + 1 < self.attempts:
                await self._sleep(self.backoff_s * 2**attempt)
        self.stats.notification_failed(endpoint)
        return False

    def _send(self, topic: str, body: bytes) -> None:
        if topic.startswith(("http://", "https://")):
            self._post(topic, body)
            return
        if self.sns_endpoint_url is None:
            raise NotificationError(
                f"cannot publish to {topic}: no SNS endpoint is configured "
                "(MODELHOST_SNS_ENDPOINT_URL)"
            )
        if self._sns is None:
            import boto3

            region = topic.split(":")[3] or self.region
            self._sns = boto3.client("sns", endpoint_url=self.sns_endpoint_url, region_name=region)
        self._sns.publish(TopicArn=topic, Message=body.decode())


def _http_post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as resp:
        if not 200 <= resp.status < 300:
            raise NotificationError(f"{url} answered {resp.status}")
