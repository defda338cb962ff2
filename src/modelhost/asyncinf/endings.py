"""How an asynchronous request ends: its output or failure object is written and the request
ended in the queue in one group commit (``Batches.end``), which also claims the slot's next
request when the slot goes on; notifications follow. Also the state the dispatcher
(asyncinf/worker.py) and a slot (asyncinf/slot.py) share, declared here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from modelhost.asyncinf import policy
from modelhost.asyncinf.batches import Batches, Claimed, Ended, Ending
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest, RequestStatus
from modelhost.asyncinf.stats import AsyncStats
from modelhost.router.forwarder import UpstreamError, UpstreamPool
from modelhost.router.routing import RouteTable
from modelhost.state.async_queue import AsyncQueue

log = logging.getLogger("modelhost.asyncinf.worker")


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


class Endings:
    """The endings of requests; ``AsyncInference`` (asyncinf/worker.py) sets the state."""

    queue: AsyncQueue
    routes: RouteTable
    owner: str
    _clock: Callable[[], float]
    notify: Notifications | None
    stats: AsyncStats
    configs: dict[str, AsyncEndpointConfig]  # lower-cased endpoint -> config
    _held: dict[str, AsyncRequest]
    _stopping: bool
    _avoid: dict[str, float]  # instance id -> monotonic time it may be used again
    _tasks: set[asyncio.Task[None]]
    _batches: Batches
    _slots: dict[str, tuple[AsyncEndpointConfig, UpstreamPool]]  # running
    _chained: dict[str, list[Claimed]]  # request id -> what its ending claimed

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

    async def _expired(self, config: AsyncEndpointConfig | None, req: AsyncRequest) -> None:
        self.stats.expired(req.endpoint)
        await self._fail(config, req, policy.expiry_reason(req), "RequestExpired")

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
