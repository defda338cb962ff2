"""InvokeEndpoint's hot path: the front server's fast path (httpserver.FastPath), on callbacks.

One request costs the router a few microseconds of Python, so everything per request is done
once and in one place: the route is found by the raw request path (cached), the instance's
request is written as bytes while the client's headers are filtered, the instance's pool
(forwarder.py) sends it on an open connection and answers ``Call.done``, and the answer's head
is joined from precomputed lines. No task, future or coroutine is made. An instance that went
away (connection refused) is retried on the current route; every other failure becomes
SageMaker's error in ``fail`` (the errors themselves: checks.py, for both invoke paths). A call
in flight is calls.py's ``Call``.

``RuntimeApp`` (app.py) holds an ``InvokePath`` and adds the ASGI side:
InvokeEndpointWithResponseStream and the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Coroutine
from time import perf_counter
from typing import Any

from modelhost.api.serialize import http_status
from modelhost.auth.gate import Gate
from modelhost.errors import (
    InternalFailure,
    ModelError,
    ServiceError,
)
from modelhost.fastpath import Reply
from modelhost.http11 import Payload, payload_size
from modelhost.metrics import Recorder
from modelhost.names import Arns
from modelhost.router.calls import AsyncDispatch, Call, DirectCall, MultiModelDispatch
from modelhost.router.checks import (
    FORWARDED,
    RETURNED,
    TARGET_CONTAINER,
    TARGET_VARIANT,
    TARGETING,
    async_only,
    choose_variant,
    direct_target,
    endpoint_name,
    error_reply,
    missing,
    model_error,
    no_instance,
    not_multi_model,
    not_woken,
    over_concurrency,
    too_busy,
    too_large,
    upstream_error,
)
from modelhost.router.forwarder import UpstreamError, UpstreamResponse
from modelhost.router.pipeline import MultiContainerPool, container_of
from modelhost.router.routing import EndpointRoute, RouteTable, VariantRoute, pick_target
from modelhost.router.stream_relay import ERROR_TEXT_LIMIT
from modelhost.settings import Settings
from modelhost.splice import SplicedBody
from modelhost.state.store import Store

log = logging.getLogger(__name__)

INVOCATIONS = b"/invocations"
ASYNC_INVOCATIONS = b"/async-invocations"
PREFIX = b"/endpoints/"

_OK = b"HTTP/1.1 200 OK\r\n"
_POST = b"POST /invocations HTTP/1.1\r\n"
_SCRAMBLE = 0x9E3779B97F4A7C15  # odd: multiplying by it permutes 64-bit numbers
_MASK64 = (1 << 64) - 1
_RID = b"x-amzn-requestid: "


class InvokePath:
    """InvokeEndpoint as the front server's fast path (``accepts`` and ``dispatch``)."""

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
        # Back-pressure: requests one instance may hold (in flight at it plus waiting for
        # it); one over on the least-loaded instance means every instance is full. 0: none.
        self.per_instance = settings.max_requests_per_instance or 1 << 62
        self._random = random.Random()
        # Request ids: a random half per process, and a counter scrambled by an odd multiplier
        # (a bijection on 64 bits) for the other: unique, cheaper than 128 random bits each.
        self._rid_prefix = os.urandom(8).hex().encode()
        self._rid_count = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        routes.container_sink = self.metrics.record_container
        # Request signing (auth/gate.py), when the server checks it: set by app.py.
        self.gate: Gate | None = None
        # Multi-model endpoints' road (multimodel/manager.py), when the server has one.
        self.multi_model: MultiModelDispatch | None = None
        # InvokeEndpointAsync, when the server serves it: unsigned requests come this way
        # (signed ones go through the ASGI app, its middleware checks them).
        self.async_path: AsyncDispatch | None = None

    def new_rid(self) -> bytes:
        self._rid_count += 1
        return b"%b%016x" % (self._rid_prefix, (self._rid_count * _SCRAMBLE) & _MASK64)

    # -- the front server's fast path ---------------------------------------------------

    def accepts(self, method: bytes, path: bytes) -> bool:
        """InvokeEndpoint requests, which the front server hands to ``dispatch`` directly
        (and InvokeEndpointAsync, for ``async_path``)."""
        return (
            method == b"POST"
            and path.startswith(PREFIX)
            and (path.endswith(INVOCATIONS) or (path.endswith(ASYNC_INVOCATIONS) and self._async()))
        )

    def _async(self) -> bool:
        gate = self.gate
        return self.async_path is not None and (gate is None or not gate.required())

    def splices(self, path: bytes, raw_headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether a large body for ``path`` may stay in the client's socket and be spliced
        into the instance's (splice.py): a single-model route seen before, no request
        signing (it hashes the body), no container or model named."""
        route = self.routes.by_path.get(path)
        if route is None or any(
            isinstance(pool, MultiContainerPool) for v in route.variants for pool in v.targets
        ):
            return False  # an inference pipeline sends the body on from container to container
        gate = self.gate
        if gate is not None and gate.required():
            return False
        return not any(key in TARGETING and key != TARGET_VARIANT for key, _ in raw_headers)

    def dispatch(
        self,
        path: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: Payload | SplicedBody,
        reply: Reply,
    ) -> None:
        """One InvokeEndpoint from the front server; ``reply`` gets the answer, once. With a
        pooled connection to the instance at hand, this runs on callbacks alone. A
        ``SplicedBody`` comes only when ``splices`` said yes (its size is within the limit)."""
        started = perf_counter()
        rid = self.new_rid()
        gate = self.gate
        if (
            (gate is not None and gate.required()) or not path.endswith(INVOCATIONS)
        ) and self._diverted(gate, path, raw_headers, body, rid, reply):
            return
        lines: list[bytes] = []
        wanted = container = target = None
        for key, value in raw_headers:
            if key in FORWARDED:
                lines += (key, b": ", value, b"\r\n")
            elif key in TARGETING:
                if key == TARGET_VARIANT:
                    wanted = value
                elif key == TARGET_CONTAINER:
                    container = value
                else:
                    target = value
        route = self.routes.by_path.get(path)
        if (
            route is None
            or container is not None
            or target is not None
            or type(body) is list
            or (type(body) is bytes and len(body) > self.max_body)
        ):
            assert not isinstance(body, SplicedBody)
            route = self._check(path, raw_headers, body, rid, reply)
            if route is None:
                return
            if container is not None or target is not None or route.direct or route.multi_model:
                joined = b"".join(lines)
                self.elsewhere(route, wanted, container, target, joined, body, rid, started, reply)
                return
        variants = route.variants
        if wanted is None and len(variants) == 1:
            variant = variants[0]
        else:
            try:
                variant = self.choose(route, wanted)
            except ServiceError as err:
                reply(*error_reply(err, rid))
                return
        call = Call(self, route.name, variant, b"".join(lines), body, rid, started, reply)
        self.send(call, variant)

    def _diverted(
        self,
        gate: Gate | None,
        path: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: Payload | SplicedBody,
        rid: bytes,
        reply: Reply,
    ) -> bool:
        """Whether the request went elsewhere: InvokeEndpointAsync to ``async_path``, or a
        refusal of its signature."""
        if isinstance(body, SplicedBody):
            # Keys were turned on after ``splices`` said yes: the head alone is checked, so a
            # signature over the body is refused (the client's retry is read whole).
            body = b""
        if not path.endswith(INVOCATIONS):  # /async-invocations (``accepts`` took it)
            assert self.async_path is not None
            self.async_path.dispatch(rid, path, raw_headers, body, reply)
            return True
        return gate is not None and not self._allowed(gate, path, raw_headers, body, rid, reply)

    def _allowed(
        self,
        gate: Gate,
        path: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: Payload,
        rid: bytes,
        reply: Reply,
    ) -> bool:
        """Whether the request is signed by a key that may invoke this endpoint (else it is
        answered with the refusal)."""
        try:
            name = endpoint_name(path)
            whole = body if isinstance(body, bytes) else b"".join(body)
            gate.check_invoke(path, raw_headers, whole, name)
        except ServiceError as err:
            reply(*error_reply(err, rid))
            return False
        return True

    def elsewhere(
        self,
        route: EndpointRoute,
        wanted: bytes | None,
        container: bytes | None,
        target: bytes | None,
        lines: bytes,
        body: Payload,
        rid: bytes,
        started: float,
        reply: Reply,
    ) -> None:
        """A request off the single-model road: Direct multi-container, multi-model, or a
        TargetModel where there is no multi-model variant (SageMaker's error)."""
        if container is not None or route.direct:
            self.direct(route, wanted, container, lines, body, rid, started, reply)
            return
        if not route.multi_model:
            reply(*error_reply(not_multi_model(route.name), rid))
            return
        call = Call(self, route.name, route.variants[0], lines, body, rid, started, reply)
        if self.multi_model is not None:
            self.multi_model.dispatch(self, route, wanted, target, call)
            return
        try:
            variant = self.choose(route, wanted)
        except ServiceError as err:
            reply(*error_reply(err, rid))
            return
        self.send(call, variant)

    def _check(
        self,
        path: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        body: Payload,
        rid: bytes,
        reply: Reply,
    ) -> EndpointRoute | None:
        """The route for a path not seen before (or None, answered), and the size limit."""
        try:
            name = endpoint_name(path)
            size = payload_size(body)
            if size > self.max_body:
                for key, value in raw_headers:
                    if key == b"content-length" and value.isdigit():
                        size = max(size, int(value))
                raise too_large(size, self.max_body)
        except ServiceError as err:
            reply(*error_reply(err, rid))
            return None
        route = self.routes.get(name)
        if route is None:  # unknown, or not serving yet: ask the store, off the loop
            self._spawn(self._reply_missing(name, rid, reply))
            return None
        if route.name.lower() in self.routes.async_only:  # never cached: refused each time
            reply(*error_reply(async_only(route.name), rid))
            return None
        if not route.direct and not route.multi_model:
            self.routes.remember(path, route)
        return route

    # -- one call, through the upstream pool ----------------------------------------------

    def invoke(
        self,
        name: str,
        variant: VariantRoute,
        lines: bytes,
        body: bytes,
        rid: bytes,
        started: float,
        reply: Reply,
    ) -> None:
        """The fast path's road for a request that arrived another way (the ASGI side):
        ``lines`` are the forwarded header lines; ``reply`` gets the answer, once."""
        self.send(Call(self, name, variant, lines, body, rid, started, reply), variant)

    def send(self, call: Call, variant: VariantRoute) -> None:
        """Send to the least-loaded instance of ``variant``; the pool answers ``call.done``."""
        if variant.max_concurrency and self.limited(call, variant):
            return
        targets = variant.targets
        if len(targets) == 1:
            pool = targets[0]
        else:
            chosen = pick_target(targets, self.routes.next_start())
            if chosen is None and self.hold(call, variant):
                return
            if chosen is None:
                self.refuse(call, no_instance(call.name), variant)
                return
            pool = chosen
        if pool.in_flight >= self.per_instance and not call.attempt:
            self.saturated(call, variant)
            return
        call.variant = variant
        call.sent = perf_counter()
        pool.send(_POST + call.lines + pool.head_end(call.size), call.body, self.timeout, call.done)

    def hold(self, call: Call, variant: VariantRoute) -> bool:
        """Hold a request for a variant that scaled to zero until an instance is ready (the
        controller is asked for one), at most the invocation timeout; False: not held."""
        loop = self._loop or asyncio.get_running_loop()
        first = not self.routes.waiting.get((call.name.lower(), variant.name))
        held_at = perf_counter()

        def resume(ready: VariantRoute | None) -> None:
            timer.cancel()
            if first and ready is not None:  # the request that woke it: ModelSetupTime
                self.metrics.record_setup(call.name, ready.name, (perf_counter() - held_at) * 1e6)
            if ready is None:  # the endpoint is no longer routed (deleted, or failed)
                self._spawn(self._reply_missing(call.name, call.rid, call.reply))
            else:
                self.send(call, ready)

        def expire() -> None:
            if self.routes.release(call.name, variant.name, resume):
                self.refuse(call, not_woken(call.name, self.timeout), variant)

        if not self.routes.hold(call.name, variant, resume):
            return False
        timer = loop.call_later(self.timeout, expire)
        return True

    def direct(
        self,
        route: EndpointRoute,
        wanted: bytes | None,
        container: bytes | None,
        lines: bytes,
        body: Payload,
        rid: bytes,
        started: float,
        reply: Reply,
    ) -> None:
        """An InvokeEndpoint with TargetContainerHostname, or to a Direct endpoint."""
        try:
            hostname = direct_target(route, container)
            variant = self.choose(route, wanted)
        except ServiceError as err:
            reply(*error_reply(err, rid))
            return
        call = DirectCall(self, route.name, variant, lines, body, rid, started, reply)
        call.container = hostname
        call.send(variant)

    def limited(self, call: Call, variant: VariantRoute) -> bool:
        """A serverless variant's limits (off the path of other variants): the payload size,
        and MaxConcurrency (ThrottlingException, as SageMaker answers). True: answered."""
        if call.attempt:  # sent again after its instance went away: admitted already
            return False
        err: ServiceError | None = None
        if call.size > variant.max_payload:
            err = too_large(call.size, variant.max_payload)
        elif sum(t.in_flight for t in variant.targets) >= variant.max_concurrency:
            err = over_concurrency(call.name, variant.max_concurrency)
        if err is None:
            return False
        self.refuse(call, err, variant)
        return True

    def refuse(self, call: Call, err: ServiceError, variant: VariantRoute | None = None) -> None:
        """Answer ``call`` with ``err``, recorded against ``variant`` (else the call's)."""
        self._record(call, variant or call.variant, http_status(err), perf_counter(), False)
        call.error(err)

    def saturated(self, call: Call, variant: VariantRoute) -> None:
        """Every instance of ``variant`` holds its limit of requests: SageMaker's throttling
        error at once (botocore retries it with backoff) rather than an unbounded queue."""
        self.refuse(call, too_busy(call.name, variant.name, self.per_instance), variant)

    def internal(self, call: Call) -> None:
        log.exception("answering an invocation of endpoint %s failed", call.name)
        call.error(InternalFailure("The invocation failed inside modelhost; see its log."))

    def answer(self, call: Call, result: UpstreamResponse) -> None:
        """The caller's 200 for the instance's 2xx, recorded."""
        variant = call.variant
        answered = perf_counter()
        parts = [_OK, variant.header_line, _RID, call.rid, b"\r\n"]
        for key, value in result.headers:
            if key in RETURNED:
                parts += (key, b": ", value, b"\r\n")
        call.reply(b"".join(parts), result.payload)
        self.metrics.record_ok(
            call.name,
            variant.name,
            len(variant.targets),
            (answered - call.sent) * 1e6,
            (perf_counter() - call.started) * 1e6,
        )

    def fail(self, call: Call, result: UpstreamResponse | UpstreamError) -> None:
        """The caller's error for an instance's non-2xx answer, or for no answer, recorded."""
        name = call.name
        err: ServiceError
        if isinstance(result, UpstreamResponse):
            text = result.body.decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
            err = self.model_error(name, result.status, text, container_of(result))
        else:
            err = self.upstream_error(name, result)
        status = http_status(err)
        self._record(call, call.variant, status, perf_counter(), isinstance(err, ModelError))
        call.error(err)

    def upstream_error(self, name: str, exc: UpstreamError) -> ServiceError:
        return upstream_error(self.arns, name, exc)

    def _record(
        self, call: Call, variant: VariantRoute, status: int, answered: float, model_error: bool
    ) -> None:
        done = perf_counter()
        self.metrics.record(
            call.name,
            variant.name,
            len(variant.targets),
            status,
            (answered - call.sent) * 1e6,
            (done - call.started) * 1e6,
            model_error,
        )

    async def _reply_missing(self, name: str, rid: bytes, reply: Reply) -> None:
        err = await asyncio.to_thread(self.missing, name)
        reply(*error_reply(err, rid))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def choose(self, route: EndpointRoute, wanted: bytes | str | None) -> VariantRoute:
        """The variant for a request (TargetVariant, else by weight)."""
        return choose_variant(route, wanted, self._random.random(), route.name)

    def current(self, name: str, variant: VariantRoute) -> VariantRoute:
        """``variant`` as the route has it now (the fleet may have changed since)."""
        route = self.routes.get(name)
        if route is None:
            return variant
        return route.variant(variant.name) or route.pick_variant(self._random.random()) or variant

    def model_error(
        self, name: str, status: int, text: str, container: str = "primary"
    ) -> ModelError:
        return model_error(self.arns, name, status, text, container)

    def missing(self, name: str) -> ServiceError:
        return missing(self.store.endpoint(name), name, self.settings.account_id)
