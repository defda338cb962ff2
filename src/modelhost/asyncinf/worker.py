"""The asynchronous inference workers: take queued requests and send them to the endpoint's
instances through the router's own route table and pools, as InvokeEndpoint does.

One dispatcher task, woken by each enqueue (``wake``) or every ``POLL_S``: it refreshes which
endpoints are asynchronous (``load_configs``, injected: api/ translates the configs), claims
as many of each endpoint's oldest requests as its instances have room for (at most
``max_concurrent`` in flight per instance), and starts one task per request. A request's task
(a slot, asyncinf/slot.py) reads the input, sends it (``UpstreamPool.send``), writes the
output or the failure object and ends the request in the queue (asyncinf/endings.py). Leases
are renewed while held; the queue's ``recover`` gives back a dead server's at start-up.

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
from collections.abc import Callable

from modelhost.asyncinf import policy
from modelhost.asyncinf.batches import Batches, Claimed
from modelhost.asyncinf.endings import Notifications
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest
from modelhost.asyncinf.slot import Slots
from modelhost.asyncinf.stats import AsyncStats
from modelhost.router.forwarder import UpstreamPool
from modelhost.router.routing import RouteTable
from modelhost.state.async_queue import AsyncQueue
from modelhost.storage import ObjectStore

__all__ = ["AsyncInference", "Notifications"]

log = logging.getLogger(__name__)

POLL_S = 0.5  # the dispatcher's pass when nothing wakes it
REFRESH_S = 1.0  # how often the async endpoints are read from the store
LEASE_S = 60.0
RENEW_S = 15.0
EXPIRED_BATCH = 100
MAX_INPUT_BYTES = 1024**3  # SageMaker's 1 GB
EXPIRE_S = 1.0  # how often queued requests are checked for an expired TTL


class AsyncInference(Slots):
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

    @property
    def commits(self) -> Batches:
        """The workers' group commit, which InvokeEndpointAsync queues its requests with
        (api/async_invocations.py): one transaction with the endings and claims made
        meanwhile."""
        return self._batches

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

    async def _fail_orphans(self, endpoint: str) -> None:
        claimed = await asyncio.to_thread(
            self.queue.claim, endpoint, self.owner, self._clock(), LEASE_S, EXPIRED_BATCH
        )
        for req in claimed:
            self._held[req.request_id] = req
            reason = f"Endpoint {req.endpoint} was deleted before request {req.inference_id} ended."
            self._spawn(self._fail(None, req, reason, "EndpointDeleted"))

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
