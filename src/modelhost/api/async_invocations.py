"""Asynchronous inference on the wire: InvokeEndpointAsync (``POST
/endpoints/{name}/async-invocations``, rest-json, the request in X-Amzn-SageMaker-* headers),
the AsyncInferenceConfig checks CreateEndpointConfig makes, and the translation of a deployed
config into the typed ``AsyncEndpointConfig`` the workers read. PascalCase stops here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine, MutableMapping
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any
from urllib.parse import unquote

from modelhost.api.serialize import rest_error
from modelhost.api.shapes import shapes_for
from modelhost.asyncinf.batches import Batches, GroupCommit
from modelhost.asyncinf.policy import result_locations
from modelhost.asyncinf.records import (
    DEFAULT_INVOCATION_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_TTL_S,
    AsyncEndpointConfig,
    AsyncRequest,
)
from modelhost.errors import InternalFailure, ServiceError, ValidationError, ValidationException
from modelhost.http11 import Payload, head_bytes
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.records import Endpoint
from modelhost.state.store import Store

log = logging.getLogger(__name__)

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

Reply = Callable[[bytes, Payload], None]  # the front server's (httpserver.py)
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
        on_queued: Callable[[str], None],
        account_id: str,
        clock: Callable[[], float] = time.time,
        known: Callable[[], dict[str, AsyncEndpointConfig]] | None = None,
        batches: Batches | None = None,
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
        # With the workers' ``batches``, that is the transaction of their endings and claims
        # made meanwhile (one commit instead of two); else a group commit of its own.
        self._queued: GroupCommit[AsyncRequest, None] = GroupCommit(
            self._enqueue, here=self._enqueue_here
        )
        self._batches = batches
        self._tasks: set[asyncio.Task[None]] = set()
        # The queue's keys: a random half per process and a counter (no system call each).
        self._id_prefix = os.urandom(8).hex()
        self._ids = itertools.count()

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, rid: str, name: str
    ) -> None:
        """InvokeEndpointAsync through ASGI (RuntimeApp): what the fast path does not take."""
        body, too_large = await _read_body(receive, MAX_INLINE_BODY)
        members = self._check(name, scope["headers"], body, too_large)
        config = self.known().get(name.lower())
        if config is None:  # not (yet) among the workers' endpoints: read the store
            config = await asyncio.to_thread(self._config, name)
        req = self._request(config, members, body or None)
        if self._batches is not None:  # committed: the request is durable from here on
            await self._batches.submit_request(req)
        else:
            await self._queued.submit(req)
        self.on_queued(req.endpoint)
        status, headers, payload = _accepted(req, rid.encode())
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def dispatch(
        self, rid: bytes, path: bytes, raw: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None:
        """InvokeEndpointAsync from the front server's fast path (router/invoke.py
        ``InvokePath.dispatch``): checked here, then answered by ``reply`` once the request is
        committed with the others of its batch; no ASGI cycle, and no task of its own when
        the workers know the endpoint."""
        try:
            name = _endpoint_name(path)
            whole = body if isinstance(body, bytes) else b"".join(body)
            too_large = len(whole) > MAX_INLINE_BODY
            members = self._check(name, raw, b"" if too_large else whole, too_large)
            config = self.known().get(name.lower())
            if config is None:  # not (yet) among the workers' endpoints: read the store
                self._spawn(self._dispatch_unknown(rid, name, members, whole, reply))
                return
            self._enqueue_then_reply(rid, self._request(config, members, whole or None), reply)
        except ServiceError as err:
            reply(*_error(err, rid))

    async def _dispatch_unknown(
        self, rid: bytes, name: str, members: dict[str, Any], body: bytes, reply: Reply
    ) -> None:
        try:
            config = await asyncio.to_thread(self._config, name)
            self._enqueue_then_reply(rid, self._request(config, members, body or None), reply)
        except ServiceError as err:
            reply(*_error(err, rid))
        except Exception:
            log.exception("InvokeEndpointAsync for %s failed", name)
            reply(*_error(InternalFailure("The request could not be queued."), rid))

    def _enqueue_then_reply(self, rid: bytes, req: AsyncRequest, reply: Reply) -> None:
        def committed(result: BaseException | None) -> None:
            if isinstance(result, BaseException):
                if not isinstance(result, asyncio.CancelledError):
                    log.error("InvokeEndpointAsync could not be queued: %r", result)
                reply(*_error(InternalFailure("The request could not be queued."), rid))
                return
            self.on_queued(req.endpoint)
            status, headers, payload = _accepted(req, rid)
            reply(head_bytes(status, headers), payload)

        if self._batches is not None:
            self._batches.queue_request(req, committed)
        else:
            self._queued.add(req, committed)

    def _check(
        self, name: str, raw: list[tuple[bytes, bytes]], body: bytes, too_large: bool
    ) -> dict[str, Any]:
        """The request's members (from its headers), checked as SageMaker checks them."""
        members = _members(raw)
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
        return members

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016x}"

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            request_id=self._new_id(),
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

    def _enqueue_here(self, reqs: list[AsyncRequest]) -> list[None] | None:
        """``_enqueue`` on the event loop when the store is free now (SQLite), else None."""
        with self.queue.here() as free:
            return self._enqueue(reqs) if free else None

    def _enqueue(self, reqs: list[AsyncRequest]) -> list[None]:
        """One batch of accepted requests, queued in one transaction (group commit)."""
        self.queue.enqueue_many(reqs)
        return [None] * len(reqs)


def _accepted(req: AsyncRequest, rid: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The 202 for a queued request: status, headers (no Content-Length) and body."""
    payload = b'{"InferenceId": %b}' % _json_string(req.inference_id).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-requestid", rid),
        (b"x-amzn-sagemaker-outputlocation", req.output_location.encode()),
        (b"x-amzn-sagemaker-failurelocation", req.failure_location.encode()),
    ]
    return 202, headers, payload


def _endpoint_name(path: bytes) -> str:
    """The endpoint of ``/endpoints/{name}/async-invocations`` (undecoded, as it came)."""
    text = path.decode("latin-1")
    parts = (unquote(text) if "%" in text else text).split("/")
    if len(parts) != 4 or parts[1] != "endpoints" or not parts[2]:
        raise ValidationError(f"Unknown path {text}.")
    return parts[2]


def _error(err: ServiceError, rid: bytes) -> tuple[bytes, bytes]:
    status, headers, body = rest_error(err, rid.decode())
    return head_bytes(status, headers), body


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
