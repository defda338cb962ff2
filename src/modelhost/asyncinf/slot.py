"""A slot: one request at a time on one instance. ``_process`` runs a claimed request, then,
while the instance is still routed and the queue has more, the endpoint's next ones (each
claimed with the previous one's ending) without a dispatcher pass between. A request's run
reads the input, sends it (``UpstreamPool.send``) and sorts the outcome: a 2xx is the output;
a non-2xx answer, a timeout or an unreadable input is a failure with its reason; an instance
that went away gives the request back to the queue (asyncinf/endings.py).
"""

from __future__ import annotations

import asyncio
import time

from modelhost.asyncinf import policy
from modelhost.asyncinf.batches import Claimed, Input
from modelhost.asyncinf.endings import Endings, log
from modelhost.asyncinf.objects import ObjectIOError, exists, read_input
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest, RequestStatus
from modelhost.keepawake import BACKGROUND
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.router.pipeline import container_of
from modelhost.router.stream_relay import ERROR_TEXT_LIMIT
from modelhost.storage import ObjectStore

CHAIN_MAX = 1000  # requests one slot runs back to back before the dispatcher decides again
AVOID_S = 10.0  # an instance that dropped a request gets no more for this long
# Beyond the request's own timeout (the pool answers within it), a guard against a lost answer.
ANSWER_GRACE_S = 30.0


class Slots(Endings):
    objects: ObjectStore
    loads: dict[str, int]  # instance id -> this service's requests on it
    _max_input: int
    _full: set[str]  # endpoints (lower-cased) with no free slot at last look
    _wake: asyncio.Event
    _loop: asyncio.AbstractEventLoop  # the loop the slots run on

    async def _process(
        self, config: AsyncEndpointConfig, req: AsyncRequest, pool: UpstreamPool, given: Input
    ) -> None:
        """Run ``req`` on ``pool``, then, while the instance is still routed and the queue has
        more, the endpoint's next requests in the same slot (no dispatcher pass between)."""
        BACKGROUND.slots += 1  # the front server's loop need not poll for this slot's events
        # (looked up once per slot, not per request: on 3.11 a lookup makes a system call)
        self._loop = asyncio.get_running_loop()
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
            BACKGROUND.slots -= 1
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
        loop = self._loop  # (set by ``_process``, the only caller's caller, on this loop)
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
