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
import random
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

from modelhost.api.serialize import rest_error
from modelhost.errors import (
    InternalFailure,
    ModelError,
    ModelNotReadyException,
    ServiceError,
    ValidationError,
)
from modelhost.metrics import Recorder
from modelhost.names import Arns
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamStream,
    UpstreamTimeout,
)
from modelhost.router.routing import EndpointRoute, RouteTable, VariantRoute, pick_target
from modelhost.router.stream_relay import ERROR_TEXT_LIMIT, error_text, relay
from modelhost.settings import Settings
from modelhost.state.store import Store

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Request headers that reach the container (everything else is stripped, as SageMaker does).
FORWARDED = frozenset(
    {
        b"content-type",
        b"accept",
        b"x-amzn-sagemaker-custom-attributes",
        b"x-amzn-sagemaker-inference-id",
        b"x-amzn-sagemaker-target-model",
        b"x-amzn-sagemaker-enable-explanations",
        b"x-amzn-sagemaker-session-id",
    }
)
TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
RETURNED = (
    b"content-type",
    b"x-amzn-sagemaker-custom-attributes",
    b"x-amzn-sagemaker-new-session-id",
    b"x-amzn-sagemaker-closed-session-id",
)
INVOCATIONS = b"/invocations"
CONNECT_RETRIES = 2

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

Reply = Callable[[int, list[tuple[bytes, bytes]], bytes], None]


@dataclass(slots=True)
class _Call:
    """One InvokeEndpoint in flight on the fast path."""

    name: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    rid: str
    started: float
    reply: Reply


class RuntimeApp:
    def __init__(
        self, routes: RouteTable, store: Store, settings: Settings, metrics: Recorder | None = None
    ) -> None:
        self.metrics = metrics or Recorder()
        self.routes = routes
        self.store = store
        self.settings = settings
        self.arns = Arns(settings.region, settings.account_id)
        self.max_body = settings.max_payload_bytes
        self.timeout = settings.invocation_timeout_s
        self.stream_timeout = max(STREAM_TIMEOUT_S, self.timeout)
        self._rid = random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = f"{self._rid.getrandbits(128):032x}"
        try:
            await self._invoke(scope, receive, send, rid)
        except ServiceError as err:
            status, headers, body = rest_error(err, rid)
            await _respond(send, status, headers, body)

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        started = perf_counter()
        name, action = _parse_path(scope["path"])
        if scope["method"] != "POST":
            raise ValidationError(f"Method {scope['method']} is not allowed here; use POST.")
        if action != "invocations":
            if action == STREAM_ACTION:
                return await self._invoke_stream(scope, receive, send, rid, name)
            raise ValidationError(f"{action} is not supported by modelhost yet.")
        headers, variant_name, declared = _request_headers(scope["headers"])
        body = await _read_body(receive, declared, self.max_body)
        status, out, payload = await self._invocation(
            name, headers, variant_name, body, rid, started
        )
        await _respond(send, status, out, payload)

    # -- the front server's fast path (httpserver.FastPath): no ASGI messages, no task ------

    def accepts(self, method: bytes, path: bytes) -> bool:
        """InvokeEndpoint requests, which the front server hands to ``dispatch`` directly."""
        return method == b"POST" and path.startswith(b"/endpoints/") and path.endswith(INVOCATIONS)

    def dispatch(
        self, path: bytes, raw_headers: list[tuple[bytes, bytes]], body: bytes, reply: Reply
    ) -> None:
        """One InvokeEndpoint from the front server; ``reply`` gets the answer, once. With a
        pooled connection to the instance at hand, this runs on callbacks alone."""
        started = perf_counter()
        rid = f"{self._rid.getrandbits(128):032x}"
        try:
            name, action = _parse_path(path.decode("latin-1"))
            if action != "invocations":
                raise ValidationError(f"Unknown path {path.decode('latin-1')}.")
            headers, variant_name, declared = _request_headers(raw_headers)
            size = max(declared or 0, len(body))
            if size > self.max_body:
                raise _too_large(size, self.max_body)
        except ServiceError as err:
            reply(*rest_error(err, rid))
            return
        self._start(name, headers, variant_name, body, rid, started, reply)

    async def _invocation(
        self,
        name: str,
        headers: list[tuple[bytes, bytes]],
        variant_name: str | None,
        body: bytes,
        rid: str,
        started: float,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``_start`` for the ASGI path: await the answer."""
        answer: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] = (
            asyncio.get_running_loop().create_future()
        )

        def reply(status: int, out: list[tuple[bytes, bytes]], payload: bytes) -> None:
            if not answer.done():
                answer.set_result((status, out, payload))

        self._start(name, headers, variant_name, body, rid, started, reply)
        return await answer

    def _start(
        self,
        name: str,
        headers: list[tuple[bytes, bytes]],
        variant_name: str | None,
        body: bytes,
        rid: str,
        started: float,
        reply: Reply,
    ) -> None:
        """Pick the variant, then send (``_send``); errors go to ``reply`` in SageMaker's shape."""
        route = self.routes.get(name)
        if route is None:  # unknown, or not serving yet: ask the store, off the loop
            self._spawn(self._reply_missing(name, rid, reply))
            return
        try:
            variant = _variant(route, variant_name, self._rid.random(), name)
        except ServiceError as err:
            reply(*rest_error(err, rid))
            return
        call = _Call(name, headers, body, rid, started, reply)
        self._send(call, variant, 0)

    def _send(self, call: _Call, variant: VariantRoute, attempt: int) -> None:
        """Send to the least-loaded instance of ``variant``; an instance that went away
        (connection refused) is retried on another; other failures become SageMaker's errors."""
        target = pick_target(variant.targets, self.routes.next_start())
        sent = perf_counter()
        if target is None:
            err = ModelNotReadyException(f"Endpoint {call.name} has no instance ready to serve.")
            self._record(call.name, variant, err.status, call.started, sent, False)
            call.reply(*rest_error(err, call.rid))
            return

        def done(result: UpstreamResponse | UpstreamError) -> None:
            try:
                if isinstance(result, UpstreamConnectError) and attempt < CONNECT_RETRIES:
                    # The instance went away: an update or scale-in may have swapped the fleet
                    # since this request picked it, so pick again from the current route.
                    self._send(call, self._current(call.name, variant), attempt + 1)
                    return
                call.reply(*self._answer(call, variant, sent, result))
            except Exception:
                log.exception("answering an invocation of endpoint %s failed", call.name)
                failure = InternalFailure("The invocation failed inside modelhost; see its log.")
                call.reply(*rest_error(failure, call.rid))

        target.pool.submit(b"POST", INVOCATIONS, call.headers, call.body, self.timeout, done)

    def _answer(
        self,
        call: _Call,
        variant: VariantRoute,
        sent: float,
        result: UpstreamResponse | UpstreamError,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The caller's answer for the instance's response (or failure), recorded."""
        name = call.name
        if isinstance(result, UpstreamResponse) and result.status < 300:
            self._record(name, variant, 200, call.started, sent, False, perf_counter())
            out = [
                (b"x-amzn-invoked-production-variant", variant.name.encode()),
                (b"x-amzn-requestid", call.rid.encode()),
            ]
            for key, value in result.headers:
                if key in RETURNED:
                    out.append((key, value))
            return 200, out, result.body
        err: ServiceError
        if isinstance(result, UpstreamResponse):
            text = result.body.decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
            err = self._model_error(name, result.status, text)
        elif isinstance(result, UpstreamConnectError):
            err = ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")
        elif isinstance(result, UpstreamTimeout):
            err = self._model_error(name, 0, _TIMEOUT_TEXT)
        else:
            err = self._model_error(name, 0, f"connection to the container failed: {result.reason}")
        self._record(name, variant, err.status, call.started, sent, isinstance(err, ModelError))
        return rest_error(err, call.rid)

    async def _reply_missing(self, name: str, rid: str, reply: Reply) -> None:
        err = await asyncio.to_thread(self._missing, name)
        reply(*rest_error(err, rid))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(
        self,
        name: str,
        variant: VariantRoute,
        status: int,
        started: float,
        sent: float,
        model_error: bool,
        answered: float | None = None,
    ) -> None:
        done = perf_counter()
        model_us = ((answered or done) - sent) * 1e6
        self.metrics.record(
            name,
            variant.name,
            len(variant.targets),
            status,
            model_us,
            (done - started) * 1e6,
            model_error,
        )

    async def _upstream(
        self, variant: VariantRoute, name: str, call: Callable[[UpstreamPool], Awaitable[T]]
    ) -> T:
        """Send to the least-loaded instance; an instance that went away (connection refused)
        is retried on another; other failures become SageMaker's errors."""
        for attempt in range(CONNECT_RETRIES + 1):
            target = pick_target(variant.targets, self.routes.next_start())
            if target is None:
                break
            try:
                return await call(target.pool)
            except UpstreamConnectError:
                if attempt == CONNECT_RETRIES:
                    break
                # The instance went away: an update or scale-in may have swapped the fleet
                # since this request picked it, so pick again from the current route.
                variant = self._current(name, variant)
            except UpstreamTimeout:
                raise self._model_error(name, 0, _TIMEOUT_TEXT) from None
            except UpstreamError as exc:
                raise self._model_error(
                    name, 0, f"connection to the container failed: {exc.reason}"
                ) from None
        raise ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")

    # -- InvokeEndpointWithResponseStream -------------------------------------------------

    async def _invoke_stream(
        self, scope: Scope, receive: Receive, send: Send, rid: str, name: str
    ) -> None:
        headers, variant_name, declared = _request_headers(
            scope["headers"], STREAM_FORWARDED, {SAGEMAKER_ACCEPT: b"accept"}
        )
        body = await _read_body(receive, declared, self.max_body)
        route = self.routes.get(name)
        if route is None:
            raise await asyncio.to_thread(self._missing, name)
        variant = _variant(route, variant_name, self._rid.random(), name)
        upstream = await self._open_stream(variant, headers, body, name)
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
        self, variant: VariantRoute, headers: list[tuple[bytes, bytes]], body: bytes, name: str
    ) -> UpstreamStream:
        upstream = await self._upstream(
            variant,
            name,
            lambda pool: pool.stream(
                b"POST", INVOCATIONS, headers, body, self.stream_timeout, self.timeout
            ),
        )
        if upstream.status >= 300:
            raise self._model_error(name, upstream.status, await error_text(upstream))
        return upstream

    def _current(self, name: str, variant: VariantRoute) -> VariantRoute:
        route = self.routes.get(name)
        if route is None:
            return variant
        return route.variant(variant.name) or route.pick_variant(self._rid.random()) or variant

    def _model_error(self, name: str, status: int, text: str) -> ModelError:
        kind = "client" if 400 <= status < 500 else "server"
        log_group = self.arns.log_group(name)
        return ModelError(
            f'Received {kind} error ({status}) from primary with message "{text}". '
            f"See the instance log (modelhost logs {name}) for more information.",
            OriginalStatusCode=status,
            OriginalMessage=text,
            LogStreamArn=log_group,
        )

    def _missing(self, name: str) -> ServiceError:
        ep = self.store.endpoint(name)
        if ep is None:
            return ValidationError(
                f"Endpoint {name} of account {self.settings.account_id} not found."
            )
        return ModelNotReadyException(
            f"Endpoint {name} is {ep.status.value} and has no instance ready to serve yet."
        )


_TIMEOUT_TEXT = (
    "Your invocation timed out while waiting for a response from container primary. "
    "Review the latency of the model, resolve the issue, and try again."
)


def _parse_path(path: str) -> tuple[str, str]:
    parts = path.split("/")
    if len(parts) != 4 or parts[1] != "endpoints" or not parts[2]:
        raise ValidationError(f"Unknown path {path}.")
    return parts[2], parts[3]


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


def _variant(route: EndpointRoute, wanted: str | None, u: float, name: str) -> VariantRoute:
    if wanted is None:
        chosen = route.pick_variant(u)
        if chosen is None:
            raise ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")
        return chosen
    variant = route.variant(wanted)
    if variant is None:
        raise ValidationError(
            f"The variant {wanted} does not exist in endpoint {name}; its variants are "
            f"{', '.join(v.name for v in route.variants)}."
        )
    return variant


async def _read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> ValidationError:
    return ValidationError(
        f"Request payload of {size} bytes exceeds the InvokeEndpoint limit of {limit} bytes "
        f"({limit / 2**20:.0f} MB)."
    )


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
