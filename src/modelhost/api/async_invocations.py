"""Asynchronous inference on the wire: InvokeEndpointAsync (``POST
/endpoints/{name}/async-invocations``, rest-json, the request in X-Amzn-SageMaker-* headers),
the AsyncInferenceConfig checks CreateEndpointConfig makes, and the translation of a deployed
config into the typed ``AsyncEndpointConfig`` the workers read. PascalCase stops here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, MutableMapping
from typing import Any

from modelhost.api.shapes import shapes_for
from modelhost.asyncinf.batches import GroupCommit
from modelhost.asyncinf.policy import result_locations
from modelhost.asyncinf.records import (
    DEFAULT_INVOCATION_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_TTL_S,
    AsyncEndpointConfig,
    AsyncRequest,
)
from modelhost.errors import ValidationError, ValidationException
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.records import Endpoint
from modelhost.state.store import Store

OPERATION = "InvokeEndpointAsync"
MAX_INLINE_BODY = 128000  # the Body member's limit; larger inputs go through InputLocation
# Request headers -> members of InvokeEndpointAsyncInput.
_HEADERS = {
    b"x-amzn-sagemaker-content-type": "ContentType",
    b"x-amzn-sagemaker-accept": "Accept",
    b"x-amzn-sagemaker-custom-attributes": "CustomAttributes",
    b"x-amzn-sagemaker-inference-id": "InferenceId",
    b"x-amzn-sagemaker-inputlocation": "InputLocation",
    b"x-amzn-sagemaker-s3outputpathextension": "S3OutputPathExtension",
    b"x-amzn-sagemaker-filename": "Filename",
    b"x-amzn-sagemaker-requestttlseconds": "RequestTTLSeconds",
    b"x-amzn-sagemaker-invocationtimeoutseconds": "InvocationTimeoutSeconds",
}
_INTEGERS = frozenset({"RequestTTLSeconds", "InvocationTimeoutSeconds"})
_SUCCESS, _ERROR = "SUCCESS_NOTIFICATION_TOPIC", "ERROR_NOTIFICATION_TOPIC"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[MutableMapping[str, Any]], Any]


# --- CreateEndpointConfig ----------------------------------------------------------------


def check_async_config(config: dict[str, Any]) -> None:
    """What CreateEndpointConfig checks of an AsyncInferenceConfig beyond its shape."""
    output = config["OutputConfig"]
    if not output.get("S3OutputPath"):
        raise ValidationException(
            "AsyncInferenceConfig.OutputConfig.S3OutputPath is required: asynchronous "
            "inference writes its results there."
        )
    notification = output.get("NotificationConfig", {})
    for wanted in notification.get("IncludeInferenceResponseIn", []):
        topic = "SuccessTopic" if wanted == _SUCCESS else "ErrorTopic"
        if not notification.get(topic):
            raise ValidationException(
                f"IncludeInferenceResponseIn names {wanted}, but NotificationConfig has no {topic}."
            )


def check_async_update(ep: Endpoint, spec: dict[str, Any]) -> None:
    """UpdateEndpoint keeps an endpoint asynchronous or real-time, as SageMaker does."""
    was = bool(ep.deployment and ep.deployment.config.spec.get("AsyncInferenceConfig"))
    if was and not spec.get("AsyncInferenceConfig"):
        raise ValidationException(
            f"The AsyncInferenceConfig parameter cannot be removed from this endpoint {ep.name}. "
            "To change the endpoint to a real-time endpoint, delete it and create it again."
        )
    if not was and spec.get("AsyncInferenceConfig"):
        raise ValidationException(
            f"The AsyncInferenceConfig parameter cannot be added to this endpoint {ep.name}. "
            "To change the endpoint to an asynchronous endpoint, delete it and create it again."
        )


def async_config(ep: Endpoint) -> AsyncEndpointConfig | None:
    """The endpoint's AsyncInferenceConfig as deployed, typed; None for a real-time one."""
    spec = ep.deployment.config.spec if ep.deployment else {}
    raw = spec.get("AsyncInferenceConfig")
    if not raw:
        return None
    output = raw.get("OutputConfig", {})
    notification = output.get("NotificationConfig", {})
    return AsyncEndpointConfig(
        endpoint=ep.name,
        output_path=output.get("S3OutputPath", ""),
        failure_path=output.get("S3FailurePath"),
        max_concurrent=raw.get("ClientConfig", {}).get(
            "MaxConcurrentInvocationsPerInstance", DEFAULT_MAX_CONCURRENT
        ),
        success_topic=notification.get("SuccessTopic"),
        error_topic=notification.get("ErrorTopic"),
        include_response_in=frozenset(
            ("success" if t == _SUCCESS else "error")
            for t in notification.get("IncludeInferenceResponseIn", [])
        ),
    )


def async_endpoint_configs(store: Store) -> dict[str, AsyncEndpointConfig]:
    """Every asynchronous endpoint's config, by name (what the workers refresh)."""
    out = {}
    for ep in store.endpoints():
        config = async_config(ep)
        if config is not None:
            out[ep.name] = config
    return out


# --- InvokeEndpointAsync -----------------------------------------------------------------


class AsyncInvocations:
    """The runtime API's InvokeEndpointAsync (``RuntimeApp.async_handler``)."""

    def __init__(
        self,
        store: Store,
        queue: AsyncQueue,
        on_queued: Callable[[], None],
        account_id: str,
        clock: Callable[[], float] = time.time,
        known: Callable[[], dict[str, AsyncEndpointConfig]] | None = None,
    ) -> None:
        self.store = store
        # The async endpoints the workers know (lower-cased names; refreshed each second):
        # a request for one of them skips reading the endpoint from the store.
        self.known = known or dict
        self.queue = queue
        self.on_queued = on_queued
        self.account_id = account_id
        self.clock = clock
        self._shapes = shapes_for("sagemaker-runtime")
        # Requests accepted together share one transaction; each 202 waits for its commit.
        self._queued = GroupCommit(self._enqueue)

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, rid: str, name: str
    ) -> None:
        members = _members(scope["headers"])
        body, too_large = await _read_body(receive, MAX_INLINE_BODY)
        if too_large:
            raise ValidationError(
                "1 validation error detected: Value at 'body' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_INLINE_BODY}"
            )
        try:
            self._shapes.parse_input(OPERATION, {"EndpointName": name, **members})
        except ValidationException as exc:
            raise ValidationError(exc.message) from None
        if "InputLocation" not in members and not body:
            raise ValidationError(
                "1 validation error detected: Value null at 'inputLocation' failed to satisfy "
                "constraint: Member must not be null (or give the input in the body)"
            )
        if "InputLocation" in members and body:
            raise ValidationError("Give the input in InputLocation or in the body, not both.")
        config = self.known().get(name.lower())
        if config is None:  # not (yet) among the workers' endpoints: read the store
            config = await asyncio.to_thread(self._config, name)
        req = self._request(config, members, body or None)
        await self._queued.submit(req)  # committed: the request is durable from here on
        self.on_queued()
        payload = json.dumps({"InferenceId": req.inference_id}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"x-amzn-requestid", rid.encode()),
            (b"x-amzn-sagemaker-outputlocation", req.output_location.encode()),
            (b"x-amzn-sagemaker-failurelocation", req.failure_location.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _config(self, name: str) -> AsyncEndpointConfig:
        """The endpoint's async config from the store (off the event loop: it is synchronous)."""
        ep = self.store.endpoint(name)
        if ep is None:
            raise ValidationError(f"Endpoint {name} of account {self.account_id} not found.")
        config = async_config(ep)
        if config is None:
            raise ValidationError(
                f"Endpoint {ep.name} is not an asynchronous inference endpoint (its "
                "endpoint config has no AsyncInferenceConfig); use InvokeEndpoint."
            )
        return config

    def _request(
        self, config: AsyncEndpointConfig, members: dict[str, Any], body: bytes | None
    ) -> AsyncRequest:
        inference_id = members.get("InferenceId") or str(uuid.uuid4())
        output, failure = result_locations(
            config, inference_id, members.get("S3OutputPathExtension"), members.get("Filename")
        )
        now = self.clock()
        req = AsyncRequest(
            request_id=uuid.uuid4().hex,
            endpoint=config.endpoint,
            inference_id=inference_id,
            input_location=members.get("InputLocation", ""),
            output_location=output,
            failure_location=failure,
            created=now,
            expires=now + members.get("RequestTTLSeconds", DEFAULT_TTL_S),
            timeout_s=float(members.get("InvocationTimeoutSeconds", DEFAULT_INVOCATION_TIMEOUT_S)),
            content_type=members.get("ContentType"),
            accept=members.get("Accept"),
            custom_attributes=members.get("CustomAttributes"),
            body=body,
        )
        return req

    def _enqueue(self, reqs: list[AsyncRequest]) -> list[None]:
        """One batch of accepted requests, queued in one transaction (group commit)."""
        self.queue.enqueue_many(reqs)
        return [None] * len(reqs)


def _members(raw: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for key, value in raw:
        member = _HEADERS.get(key)
        if member is None:
            continue
        text = value.decode("latin-1")
        if member in _INTEGERS:
            try:
                members[member] = int(text)
            except ValueError:
                raise ValidationError(
                    f"1 validation error detected: Value '{text}' at "
                    f"'{member[0].lower()}{member[1:]}' failed to satisfy constraint: Member "
                    "must be an integer"
                ) from None
        else:
            members[member] = text
    return members


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body (the inline input), and whether it was over ``limit`` (then read to
    its end and dropped)."""
    chunks: list[bytes] = []
    size = 0
    for _ in range(1 << 20):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if chunk and size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return (b"".join(chunks), False) if size <= limit else (b"", True)
