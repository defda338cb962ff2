"""The asynchronous inference workers: take queued requests and send them to the endpoint's
instances through the router's own route table and pools, as InvokeEndpoint does.

One dispatcher task, woken by each enqueue (``wake``) or every ``POLL_S``: it refreshes which
endpoints are asynchronous (``load_configs``, injected: api/ translates the configs), claims
as many of each endpoint's oldest requests as its instances have room for (at most
``max_concurrent`` in flight per instance), and starts one task per request. A request's task
reads the input, sends it (``UpstreamPool.send``), writes the output or the failure object,
then ends the request in the queue. Leases are renewed while held; the queue's ``recover``
gives back a dead server's at start-up.

Outcomes: a 2xx is the output; a non-2xx answer, a timeout, an expired TTL, an unreadable input
or an unwritable output is a failure with its reason; an instance that went away (refused the
connection, or dropped it before answering) gives the request back to the queue, to be tried
on another or a replacement instance, up to ``policy.MAX_ATTEMPTS`` attempts in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from modelhost.asyncinf import policy
from modelhost.asyncinf.batches import Batches, Claimed, Ended, Ending, Input
from modelhost.asyncinf.objects import ObjectIOError, exists, read_input
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest, RequestStatus
from modelhost.asyncinf.stats import AsyncStats
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.router.pipeline import container_of
from modelhost.router.routing import RouteTable
from modelhost.router.stream_relay import ERROR_TEXT_LIMIT
from modelhost.state.async_queue import AsyncQueue
from modelhost.storage import ObjectStore

log = logging.getLogger(__name__)

POLL_S = 0.5  # the dispatcher's pass when nothing wakes it
REFRESH_S = 1.0  # how often the async endpoints are read from the store
LEASE_S = 60.0
RENEW_S = 15.0
EXPIRED_BATCH = 100
MAX_INPUT_BYTES = 1024**3  # SageMaker's 1 GB
EXPIRE_S = 1.0  # how often queued requests are checked for an expired TTL
CHAIN_MAX = 1000  # requests one slot runs back to back before the dispatcher decides again
AVOID_S = 10.0  # an instance that dropped a request gets no more for this long
# Beyond the request's own timeout (the pool answers within it), a guard against a lost answer.
ANSWER_GRACE_S = 30.0


class Notifications(Protocol):
    """What the workers tell an endpoint's topics (asyncinf/notify.py ``Notifier``)."""

    async def result(
        self,
        config: AsyncEndpointConfig,
        req: AsyncRequest,
        output: bytes | None,
        response_type: str | None,
    ) -> None: ...

    async def announce(self, config: AsyncEndpointConfig) -> None: ...


class AsyncInference:
    def __init__(
        self,
        queue: AsyncQueue,
        routes: RouteTable,
        objects: ObjectStore,
        load_configs: Callable[[], dict[str, AsyncEndpointConfig]],
        *,
        clock: Callable[[], float] = time.time,
        notify: Notifications | None = None,
        max_input_bytes: int = MAX_INPUT_BYTES,
    ) -> None:
        self.queue = queue
        self.routes = routes
        self.objects = objects
        self._load_configs = load_configs
        self._clock = clock
        self.notify = notify
        self._max_input = max_input_bytes
        self.owner = uuid.uuid4().hex
        self.configs: dict[str, AsyncEndpointConfig] = {}  # lower-cased endpoint -> config
        self.loads: dict[str, int] = {}  # instance id -> this service's requests on it
        self.stats = AsyncStats()
        self._held: dict[str, AsyncRequest] = {}
        self._stopping = False
        self._announced: dict[str, AsyncEndpointConfig] | None = None  # None: not started
        self._avoid: dict[str, float] = {}  # instance id -> monotonic time it may be used again
        self._wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Claims and endings made together share one thread hop and one transaction; a
        # slot's ending claims its next request in the same one.
        self._batches = Batches(queue, objects, self.owner, clock, LEASE_S, max_input_bytes)
        self._slots: dict[str, tuple[AsyncEndpointConfig, UpstreamPool]] = {}  # running
        self._chained: dict[str, list[Claimed]] = {}  # request id -> what its ending claimed
        self._full: set[str] = set()  # endpoints (lower-cased) with no free slot at last look

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        recovered = await asyncio.to_thread(self.queue.recover)
        if recovered:
            log.info("%d asynchronous requests were running when the server stopped", recovered)
        await self._refresh()
        self._main = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop taking requests; those in flight go back to the queue (a restart ends them)."""
        self._stopping = True
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        held = list(self._held.values())
        self._held.clear()
        for req in held:
            await asyncio.to_thread(self.queue.release, req.request_id, self.owner)

    def wake(self, endpoint: str | None = None) -> None:
        """A request was queued (for ``endpoint``): look now rather than at the next pass;
        not while every slot of that endpoint is busy (a slot's ending claims its next
        request, and a slot that finds none left wakes the dispatcher as it stops)."""
        if endpoint is None or endpoint.lower() not in self._full:
            self._wake.set()

    # -- the dispatcher ------------------------------------------------------------------

    async def _run(self) -> None:
        last_refresh = last_renew = last_expire = time.monotonic()
        while True:
            try:
                now = time.monotonic()
                if now - last_refresh >= REFRESH_S:
                    last_refresh = now
                    await self._refresh()
                    # (the queue's commits on the event loop leave the WAL to this thread)
                    await asyncio.to_thread(self.queue.checkpoint)
                if now - last_renew >= RENEW_S:
                    last_renew = now
                    await self._renew()
                expire = now - last_expire >= EXPIRE_S
                if expire:
                    last_expire = now
                await self.run_pass(expire)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the asynchronous inference dispatcher failed a pass")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):  # (wait_for can swallow a cancel in 3.11)
                    await self._wake.wait()
            self._wake.clear()

    async def run_pass(self, expire: bool = True) -> None:
        """One pass of the dispatcher: fail what expired, start what there is room for."""
        if expire and self.configs:  # (a deleted endpoint's requests end as orphans)
            await self._expire()
        for config in list(self.configs.values()):
            await self._fill(config)

    async def settle(self, timeout: float) -> None:
        """Wait until every request task this service started has ended (tests)."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    async def refresh(self) -> None:
        await self._refresh()

    async def _refresh(self) -> None:
        began = self._clock()
        configs = await asyncio.to_thread(self._load_configs)
        self.configs = {name.lower(): c for name, c in configs.items()}
        self._announce()
        self.routes.mark_async(self.configs)
        orphans = await asyncio.to_thread(self.queue.orphans, set(self.configs), began)
        for endpoint in orphans:
            await self._fail_orphans(endpoint)

    def _announce(self) -> None:
        """A TestNotification for each endpoint created or updated since the server started."""
        known, self._announced = self._announced, dict(self.configs)
        if known is None or self.notify is None:
            return
        for name, config in self.configs.items():
            if known.get(name) != config:
                self._spawn(self.notify.announce(config))

    async def _renew(self) -> None:
        if self._held:
            until = self._clock() + LEASE_S
            await asyncio.to_thread(self.queue.renew, list(self._held), self.owner, until)

    async def _expire(self) -> None:
        claimed = await asyncio.to_thread(
            self.queue.claim_expired, self.owner, self._clock(), LEASE_S, EXPIRED_BATCH
        )
        for req in claimed:
            self._held[req.request_id] = req
            config = self.configs.get(req.endpoint)
            self._spawn(self._expired(config, req))

    async def _expired(self, config: AsyncEndpointConfig | None, req: AsyncRequest) -> None:
        self.stats.expired(req.endpoint)
        await self._fail(config, req, policy.expiry_reason(req), "RequestExpired")

    async def _fail_orphans(self, endpoint: str) -> None:
        claimed = await asyncio.to_thread(
            self.queue.claim, endpoint, self.owner, self._clock(), LEASE_S, EXPIRED_BATCH
        )
        for req in claimed:
            self._held[req.request_id] = req
            reason = f"Endpoint {req.endpoint} was deleted before request {req.inference_id} ended."
            self._spawn(self._fail(None, req, reason, "EndpointDeleted"))

    def _pools(self, endpoint: str) -> list[UpstreamPool]:
        route = self.routes.get(endpoint)
        if route is None:
            return []
        now = time.monotonic()
        for instance_id in [i for i, until in self._avoid.items() if until <= now]:
            del self._avoid[instance_id]
        return [
            pool
            for variant in route.variants
            for pool in variant.targets
            if not pool.closed and pool.instance_id not in self._avoid
        ]

    async def _fill(self, config: AsyncEndpointConfig) -> None:
        """Start as many of the endpoint's queued requests as its instances have room for."""
        pools = self._pools(config.endpoint)
        loads = [self.loads.get(p.instance_id, 0) for p in pools]
        free = policy.free_slots(loads, config.max_concurrent)
        if free <= 0:
            self._full.add(config.endpoint.lower())
            return
        self._full.discard(config.endpoint.lower())
        claimed = await self._batches.claim(config.endpoint, free)
        for req, prefetched in claimed:
            self._held[req.request_id] = req
            if policy.expired(req):
                self._spawn(self._expired(config, req))
                continue
            i = policy.pick_instance(loads, config.max_concurrent)
            if i is None:  # cannot happen: no more were claimed than there was room for
                await asyncio.to_thread(self.queue.release, req.request_id, self.owner)
                self._held.pop(req.request_id, None)
                continue
            loads[i] += 1
            pool = pools[i]
            self.loads[pool.instance_id] = self.loads.get(pool.instance_id, 0) + 1
            self._spawn(self._process(config, req, pool, prefetched))

    # -- one request ---------------------------------------------------------------------

    async def _process(
        self, config: AsyncEndpointConfig, req: AsyncRequest, pool: UpstreamPool, given: Input
    ) -> None:
        """Run ``req`` on ``pool``, then, while the instance is still routed and the queue has
        more, the endpoint's next requests in the same slot (no dispatcher pass between)."""
        try:
            current: AsyncRequest | None = req
            for _ in range(CHAIN_MAX):
                if current is None:
                    break
                self._slots[current.request_id] = (config, pool)
                try:
                    await self._attempt(config, current, pool, given)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("asynchronous request %s failed", current.request_id)
                    reason = f"The request failed inside modelhost: {exc!r}"
                    await self._fail(config, current, reason, "InternalFailure")
                finally:
                    self._slots.pop(current.request_id, None)
                chained = self._chained.pop(current.request_id, None)
                if chained is not None:  # claimed with its ending (maybe nothing was queued)
                    current, given = self._take_next(config, chained)
                else:
                    current, given = await self._next(config, pool)
            if current is not None:  # CHAIN_MAX ran out: back in its place, for the next pass
                self._held.pop(current.request_id, None)
                await asyncio.to_thread(self.queue.release, current.request_id, self.owner)
        finally:
            if current is not None and not self._stopping:
                # The slot failed after its ending claimed: those leases are left to lapse
                # (not renewed), then any worker claims the requests again.
                for left_over, _ in self._chained.pop(current.request_id, None) or []:
                    self._held.pop(left_over.request_id, None)
            left = self.loads.get(pool.instance_id, 1) - 1
            if left > 0:
                self.loads[pool.instance_id] = left
            else:
                self.loads.pop(pool.instance_id, None)
            self._full.discard(config.endpoint.lower())  # a slot is free
            self._wake.set()

    async def _next(
        self, config: AsyncEndpointConfig, pool: UpstreamPool
    ) -> tuple[AsyncRequest | None, Input]:
        """The endpoint's next queued request, claimed for ``pool``'s slot (with its input
        when it was read in the claim), or None."""
        if self._stopping or self.configs.get(config.endpoint.lower()) is None:
            return None, None
        if pool not in self._pools(config.endpoint):  # gone, avoided, or moved
            return None, None
        claimed = await self._batches.claim(config.endpoint, 1)
        for req, _ in claimed:
            self._held[req.request_id] = req
        return self._take_next(config, claimed)

    def _take_next(
        self, config: AsyncEndpointConfig, claimed: list[Claimed]
    ) -> tuple[AsyncRequest | None, Input]:
        """The slot's next request from what was claimed for it (held already), or None."""
        if not claimed:
            return None, None
        req, given = claimed[0]
        if policy.expired(req):
            self._spawn(self._expired(config, req))
            return None, None
        return req, given

    def _then_claim(self, req: AsyncRequest) -> str | None:
        """The endpoint whose next request ``req``'s ending should claim for its slot: while
        ``_process`` runs it, the slot goes on (as ``_next`` decides) and nothing was claimed
        for it yet; else None."""
        slot = self._slots.get(req.request_id)
        if slot is None or req.request_id in self._chained:
            return None
        config, pool = slot
        if self._stopping or self.configs.get(config.endpoint.lower()) is None:
            return None
        if pool not in self._pools(config.endpoint):
            return None
        return config.endpoint

    async def _end(
        self,
        req: AsyncRequest,
        status: RequestStatus,
        location: str | None,
        data: bytes,
        reason: str | None,
    ) -> Ended:
        """Write the object (if any) and end the request (one group commit), claiming the
        slot's next request in the same transaction."""
        self._held.pop(req.request_id, None)
        then = self._then_claim(req)
        result = await self._batches.end(Ending(req, status, location, data, reason, then))
        if result.next is not None:  # a claim was made (maybe of nothing: none queued)
            for claimed, _ in result.next:
                self._held[claimed.request_id] = claimed
            self._chained[req.request_id] = result.next
        if result.error is None and not result.ended:
            log.warning("asynchronous request %s had lost its lease", req.request_id)
        return result

    async def _attempt(
        self, config: AsyncEndpointConfig, req: AsyncRequest, pool: UpstreamPool, given: Input
    ) -> None:
        if req.attempts > 1 and await self._ended_before(config, req):
            return
        self.stats.started(req.endpoint, self._clock() - req.created)
        try:
            body = req.body if req.body is not None else given
            if body is None:
                body = await asyncio.to_thread(
                    read_input, self.objects, req.input_location, self._max_input
                )
        except ObjectIOError as exc:
            self.stats.download_failed(req.endpoint)
            await self._fail(config, req, str(exc), "RequestDownloadFailure")
            return
        result = await self._send(pool, req, body)
        if isinstance(result, UpstreamResponse):
            if result.status < 300:
                await self._succeed(config, req, result.body, result.header(b"content-type"))
                return
            text = result.body.decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
            kind = "client" if 400 <= result.status < 500 else "server"
            self.stats.invocation_failed(req.endpoint)
            await self._fail(
                config,
                req,
                f"Received {kind} error ({result.status}) from {container_of(result)} with "
                f'message "{text}".',
                "ModelError",
            )
        elif isinstance(result, UpstreamTimeout):
            self.stats.invocation_failed(req.endpoint)
            await self._fail(config, req, policy.timeout_reason(req), "InvocationTimeout")
        elif isinstance(result, UpstreamConnectError | UpstreamProtocolError):
            # The instance went away, or is going: send nothing more to it for a while (the
            # controller replaces it, under a new id), then give the request another attempt.
            self._avoid[pool.instance_id] = time.monotonic() + AVOID_S
            await self._instance_gone(config, req, result)
        else:
            self.stats.invocation_failed(req.endpoint)
            await self._fail(
                config, req, f"The request to the instance failed: {result.reason}", "ModelError"
            )

    async def _ended_before(self, config: AsyncEndpointConfig, req: AsyncRequest) -> bool:
        """A request tried before (a restart, a lost lease) whose result was written: end it
        as it ended then, without running it again."""
        if await asyncio.to_thread(exists, self.objects, req.output_location):
            await self._finish(req, RequestStatus.DONE, None)
            return True
        if await asyncio.to_thread(exists, self.objects, req.failure_location):
            await self._finish(req, RequestStatus.FAILED, "failed before the server restarted")
            return True
        return False

    async def _send(
        self, pool: UpstreamPool, req: AsyncRequest, body: bytes
    ) -> UpstreamResponse | UpstreamError:
        headers = [(b"x-amzn-sagemaker-inference-id", req.inference_id.encode())]
        if req.content_type:
            headers.append((b"content-type", req.content_type.encode()))
        if req.accept:
            headers.append((b"accept", req.accept.encode()))
        if req.custom_attributes:
            headers.append((b"x-amzn-sagemaker-custom-attributes", req.custom_attributes.encode()))
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[UpstreamResponse | UpstreamError] = loop.create_future()

        def done(result: UpstreamResponse | UpstreamError) -> None:
            if not answer.done():
                answer.set_result(result)

        # (a timer handle, not asyncio.timeout: this runs once per request)
        guard = loop.call_later(
            req.timeout_s + ANSWER_GRACE_S, lambda: done(UpstreamTimeout("no answer"))
        )
        pool.send(
            pool.head(b"POST", b"/invocations", headers, len(body)), body, req.timeout_s, done
        )
        try:
            return await answer
        finally:
            guard.cancel()

    async def _instance_gone(
        self, config: AsyncEndpointConfig, req: AsyncRequest, err: UpstreamError
    ) -> None:
        if policy.retry(req.attempts):
            log.warning(
                "asynchronous request %s: the instance went away (%s); it goes back to the queue",
                req.request_id,
                err.reason,
            )
            await asyncio.to_thread(self.queue.release, req.request_id, self.owner, err.reason)
            self._held.pop(req.request_id, None)
            return
        self.stats.invocation_failed(req.endpoint)
        await self._fail(config, req, policy.gone_reason(req, err.reason), "InstanceFailure")

    async def _succeed(
        self,
        config: AsyncEndpointConfig,
        req: AsyncRequest,
        output: bytes,
        response_type: bytes | None = None,
    ) -> None:
        result = await self._end(req, RequestStatus.DONE, req.output_location, output, None)
        if result.error is not None:
            self._held[req.request_id] = req  # still running under its lease
            self.stats.upload_failed(req.endpoint)
            await self._fail(
                config,
                req,
                f"The result could not be written: {result.error}",
                "ResponseUploadFailure",
            )
            return
        self.stats.processed(req.endpoint, self._clock() - req.created)
        if self.notify is not None and config.success_topic:  # (no task where none is told)
            kind = response_type.decode("latin-1") if response_type else None
            self._spawn(self.notify.result(config, req, output, kind))

    async def _fail(
        self, config: AsyncEndpointConfig | None, req: AsyncRequest, reason: str, code: str
    ) -> None:
        """Write the failure object (``policy.failure_document``), then end the request."""
        document = policy.failure_document(code, reason)
        result = await self._end(req, RequestStatus.FAILED, req.failure_location, document, reason)
        if result.error is not None:
            self.stats.upload_failed(req.endpoint)
            log.error("asynchronous request %s: %s (and %s)", req.request_id, reason, result.error)
        req.reason = result.reason
        if self.notify is not None and config is not None and config.error_topic:
            self._spawn(self.notify.result(config, req, None, None))

    async def _finish(self, req: AsyncRequest, status: RequestStatus, reason: str | None) -> None:
        await self._end(req, status, None, b"", reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
