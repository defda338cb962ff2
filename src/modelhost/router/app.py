"""The runtime API hot path, as a bare ASGI app (no framework routing, no per-request models).

``POST /endpoints/{name}/invocations``: pick a variant by weight (or TargetVariant), the
instance with the fewest requests in flight, forward over a pooled keep-alive connection, and
answer with the container's body, Content-Type and Custom-Attributes plus
``x-Amzn-Invoked-Production-Variant``. Errors use the runtime's rest-json shape.

``POST /endpoints/{name}/invocations-response-stream`` (InvokeEndpointWithResponseStream) routes
the same way but relays the container's body as an AWS event stream, one ``PayloadPart`` per
HTTP chunk as it arrives. Failures before the first byte are the usual errors (a non-2xx
container status is a 424 ModelError); after it, a ``ModelStreamError`` event ends the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from modelhost.api.serialize import rest_error
from modelhost.errors import ModelNotReadyException, ServiceError, ValidationError
from modelhost.http11 import Payload
from modelhost.metrics import Recorder
from modelhost.router.calls import CONNECT_RETRIES
from modelhost.router.checks import (
    FORWARDED,
    TARGET_CONTAINER,
    TARGET_VARIANT,
    async_only,
    direct_target,
    parse_path,
    too_busy,
    too_large,
)
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamStream,
)
from modelhost.router.invoke import INVOCATIONS, InvokePath
from modelhost.router.pipeline import DirectPool, last_container
from modelhost.router.routing import RouteTable, VariantRoute, pick_target
from modelhost.router.stream_relay import error_text, relay
from modelhost.settings import Settings
from modelhost.state.store import Store

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# (scope, receive, send, request id, endpoint name)
AsyncHandler = Callable[[Scope, Receive, Send, str, str], Awaitable[None]]
ASYNC_ACTION = "async-invocations"

# InvokeEndpointWithResponseStream: the headers that reach the container, plus
# X-Amzn-SageMaker-Accept, which reaches it as Accept.
STREAM_ACTION = "invocations-response-stream"
STREAM_FORWARDED = frozenset(
    {
        b"content-type",
        b"x-amzn-sagemaker-custom-attributes",
        b"x-amzn-sagemaker-inference-id",
        b"x-amzn-sagemaker-session-id",
    }
)
SAGEMAKER_ACCEPT = b"x-amzn-sagemaker-accept"
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
EVENT_STREAM = b"application/vnd.amazon.eventstream"
# The first byte must come within Settings.invocation_timeout_s; the whole stream within this.
STREAM_TIMEOUT_S = 480.0

log = logging.getLogger(__name__)


class RuntimeApp:
    """The runtime API for the front server: ``fast`` (invoke.py) takes InvokeEndpoint
    without ASGI; this ASGI app takes the rest, InvokeEndpointWithResponseStream included."""

    def __init__(
        self, routes: RouteTable, store: Store, settings: Settings, metrics: Recorder | None = None
    ) -> None:
        self.fast = InvokePath(routes, store, settings, metrics)
        self.routes = routes
        self.metrics = self.fast.metrics
        self.max_body = settings.max_payload_bytes
        self.timeout = settings.invocation_timeout_s
        self.stream_timeout = max(STREAM_TIMEOUT_S, self.timeout)
        # InvokeEndpointAsync, when the server serves it (api/async_invocations.py).
        self.async_handler: AsyncHandler | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = self.fast.new_rid().decode()
        try:
            await self._invoke(scope, receive, send, rid)
        except ServiceError as err:
            status, headers, body = rest_error(err, rid)
            await _respond(send, status, headers, body)

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = perf_counter()
        name, action = parse_path(scope["path"])
        if scope["method"] != "POST":
            raise ValidationError(f"Method {scope['method']} is not allowed here; use POST.")
        if action != "invocations":
            if action == STREAM_ACTION:
                return await self._invoke_stream(scope, receive, send, rid, name)
            if action == ASYNC_ACTION and self.async_handler is not None:
                return await self.async_handler(scope, receive, send, rid, name)
            raise ValidationError(f"{action} is not supported by modelhost yet.")
        headers, variant_name, declared = _request_headers(scope["headers"])
        body = await _read_body(receive, declared, self.max_body)
        container = next((v for k, v in scope["headers"] if k == TARGET_CONTAINER), None)
        route = self.routes.get(name)
        if route is None or not (route.direct or container is not None):
            variant = await self._variant(name, variant_name)
        answer: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

        def reply(head: bytes, payload: Payload) -> None:
            if not answer.done():
                body = payload if isinstance(payload, bytes) else b"".join(payload)
                answer.set_result((head, body))

        lines = b"".join(b"%b: %b\r\n" % pair for pair in headers)
        if route is not None and (route.direct or container is not None):
            wanted = None if variant_name is None else variant_name.encode("latin-1")
            self.fast.direct(route, wanted, container, lines, body, rid.encode(), started, reply)
        else:
            self.fast.invoke(name, variant, lines, body, rid.encode(), started, reply)
        head, payload = await answer
        status, out = _split_head(head)
        await _respond(send, status, out, payload)

    async def _variant(self, name: str, wanted: str | None) -> VariantRoute:
        route = self.routes.get(name)
        if route is None:
            raise await asyncio.to_thread(self.fast.missing, name)
        if route.name.lower() in self.routes.async_only:
            raise async_only(route.name)
        return self.fast.choose(route, wanted)

    # -- InvokeEndpointWithResponseStream -------------------------------------------------

    async def _invoke_stream(
        self, scope: Scope, receive: Receive, send: Send, rid: str, name: str
    ) -> None:
        headers, variant_name, declared = _request_headers(
            scope["headers"], STREAM_FORWARDED, {SAGEMAKER_ACCEPT: b"accept"}
        )
        body = await _read_body(receive, declared, self.max_body)
        variant = await self._variant(name, variant_name)
        container = next((v for k, v in scope["headers"] if k == TARGET_CONTAINER), None)
        route = self.routes.get(name)
        hostname = None
        if route is not None and (route.direct or container is not None):
            hostname = direct_target(route, container)  # ValidationError unless Direct
        upstream = await self._open_stream(variant, headers, body, name, hostname)
        try:
            out = [
                (b"content-type", EVENT_STREAM),
                (b"x-amzn-invoked-production-variant", variant.name.encode()),
                (b"x-amzn-requestid", rid.encode()),
            ]
            for key, value in upstream.headers:
                if key == b"content-type":
                    out.append((b"x-amzn-sagemaker-content-type", value))
                elif key == CUSTOM_ATTRIBUTES:
                    out.append((key, value))
            await send({"type": "http.response.start", "status": 200, "headers": out})
            await relay(upstream, receive, send, name)
        finally:
            await upstream.aclose()

    async def _open_stream(
        self,
        variant: VariantRoute,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        name: str,
        hostname: str | None = None,
    ) -> UpstreamStream:
        """The least-loaded instance's stream (of container ``hostname``, on a Direct
        endpoint); the retry rule and the errors are the fast path's (``_Call.done``,
        ``InvokePath.upstream_error``)."""
        fast = self.fast
        for attempt in range(CONNECT_RETRIES + 1):
            pool = pick_target(variant.targets, self.routes.next_start())
            if pool is None and attempt == 0 and variant.wakes:
                variant = await self._woken(name, variant)
                pool = pick_target(variant.targets, self.routes.next_start())
            if pool is None:
                break
            if pool.in_flight >= fast.per_instance and not attempt:
                raise too_busy(name, variant.name, fast.per_instance)
            target, container = _stream_target(pool, hostname, name)
            head = target.head(b"POST", INVOCATIONS, headers, len(body))
            try:
                upstream = await target.stream(head, body, self.stream_timeout, self.timeout)
            except UpstreamConnectError:
                if attempt == CONNECT_RETRIES:
                    break
                variant = fast.current(name, variant)
                continue
            except UpstreamError as exc:
                raise fast.upstream_error(name, exc) from None
            if upstream.status >= 300:
                text = await error_text(upstream)
                raise fast.model_error(name, upstream.status, text, container)
            return upstream
        raise ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")

    async def _woken(self, name: str, variant: VariantRoute) -> VariantRoute:
        """``variant`` once it has an instance, for a variant that scaled to zero (the route
        table holds the request and wakes it), within the invocation timeout."""
        ready: asyncio.Future[VariantRoute | None] = asyncio.get_running_loop().create_future()

        def resume(route: VariantRoute | None) -> None:
            if not ready.done():
                ready.set_result(route)

        if not self.routes.hold(name, variant, resume):
            return variant
        try:
            woken = await asyncio.wait_for(ready, self.timeout)
        except TimeoutError:
            self.routes.release(name, variant.name, resume)
            raise ModelNotReadyException(
                f"Endpoint {name} did not get an instance ready to serve within {self.timeout:g} s."
            ) from None
        if woken is None:
            raise await asyncio.to_thread(self.fast.missing, name)
        return woken


def _stream_target(pool: UpstreamPool, hostname: str | None, name: str) -> tuple[UpstreamPool, str]:
    """The pool a stream goes to, and the container its errors name: on a Direct endpoint the
    named container's own pool."""
    if not isinstance(pool, DirectPool) or hostname is None:
        return pool, last_container(pool)
    index = pool.index(hostname)
    if index is None:
        raise ValidationError(
            f"Container hostname {hostname} is not found in endpoint {name}; its containers "
            f"are {', '.join(pool.names)}."
        )
    return pool.members[index], hostname


def _request_headers(
    raw: list[tuple[bytes, bytes]],
    forwarded: frozenset[bytes] = FORWARDED,
    renamed: dict[bytes, bytes] | None = None,
) -> tuple[list[tuple[bytes, bytes]], str | None, int | None]:
    """The headers to forward (``renamed`` ones under their new name), the TargetVariant, and
    the declared Content-Length."""
    out = []
    variant = None
    declared = None
    for key, value in raw:
        if key in forwarded:
            out.append((key, value))
        elif key == TARGET_VARIANT:
            variant = value.decode("latin-1")
        elif key == b"content-length" and value.isdigit():
            declared = int(value)
        elif renamed is not None and key in renamed:
            out.append((renamed[key], value))
    return out, variant, declared


async def _read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise too_large(declared, limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _split_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """A fast-path reply's head (httpserver.head_bytes) as a status and headers."""
    lines = head.split(b"\r\n")
    out = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b": ")
            out.append((name, value))
    return int(lines[0].split(b" ", 2)[1]), out
