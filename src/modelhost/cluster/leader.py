"""Which of several servers sharing a state store runs the controller.

Exactly one server at a time holds the ``controller`` lease (state/leases.py) and runs what
owns instances or must not run twice: the reconcile loop, the transform jobs, the asynchronous
inference workers and the autoscaler (app.py ``Services.start_singletons``). Every server
answers the API and routes invocations; those without the lease follow the stored routes
(routes.py).

The holder renews the lease every ``length/5`` s. Another server tries as often, so it takes
over at most ``length + length/5`` s after the holder stopped renewing (killed, frozen, cut
off), or at once when the holder stopped cleanly (it releases the lease). A holder that cannot
renew for the lease's whole length (the database unreachable), or finds another holding it,
stops its instances and the server exits (``on_lost``): its routes are no longer anyone's to
trust, and a supervisor restarts it as a follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum

from modelhost.cluster.routes import AsyncMarks, RouteFollower, SharedRoutes
from modelhost.cluster.wakes import WakeRelay
from modelhost.publish import Publisher, Waker
from modelhost.state.leases import Lease
from modelhost.state.routes import RouteStore
from modelhost.state.store import Store
from modelhost.state.wakes import WakeRequests

log = logging.getLogger(__name__)

CONTROLLER_LEASE = "controller"
TRIES_PER_LEASE = 5  # renewals (or takeover attempts) per lease length

Action = Callable[[], Awaitable[None]]


class Step(Enum):
    TAKE = "take"  # the lease is ours now: start running the controller
    KEEP = "keep"  # nothing changes (leading and renewed, or following)
    STEP_DOWN = "step_down"  # the lease is another's, or ran out unrenewed


def decide(leading: bool, held: bool | None, now: float, valid_until: float) -> Step:
    """What a server does after trying to take or renew the lease. ``held``: whether it holds
    the lease now (None: the store could not be asked); ``valid_until``: when (on the
    monotonic clock) the lease it last renewed runs out."""
    if held:
        return Step.KEEP if leading else Step.TAKE
    if not leading:
        return Step.KEEP
    if held is False or now >= valid_until:
        return Step.STEP_DOWN
    return Step.KEEP  # the store did not answer; the lease still holds for a while


class Cluster:
    """This server's part among several on one state store."""

    def __init__(
        self,
        store: Store,
        table: Publisher,
        owner: str,
        lease_s: float,
        poll_s: float,
        *,
        host_id: str = "",
        is_async: Callable[[str], bool] | None = None,
        marks: AsyncMarks | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.owner = owner
        self.lease = Lease(store, CONTROLLER_LEASE, owner, lease_s)
        routes = RouteStore(store, CONTROLLER_LEASE, owner, host_id)
        self.publisher = SharedRoutes(table, routes)  # the controller's Publisher
        self.follower = RouteFollower(table, routes, poll_s, is_async, marks)
        self.wakes = WakeRelay(WakeRequests(store), poll_s)
        self._wake_here: Waker = lambda endpoint, variant: None
        self.leading = False
        self.valid_until = 0.0
        self.timer = timer
        self._lead: Action | None = None
        self._unlead: Action | None = None
        self._on_lost: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None

    def waker(self, controller: Waker) -> Waker:
        """The route table's ``Waker``: ``controller`` (its ``wake_variant``) while this server
        leads, which also takes the others' wake requests; a wake request in the store while
        it follows."""
        self._wake_here = controller

        def wake(endpoint: str, variant: str) -> None:
            if self.leading:
                controller(endpoint, variant)
            else:
                self.wakes.ask(endpoint, variant)

        return wake

    async def start(self, lead: Action, unlead: Action, on_lost: Callable[[], None]) -> None:
        """Follow the stored routes, and try for the lease: ``lead`` starts the controller
        and its companions when this server gets it, ``unlead`` stops them, ``on_lost`` is
        called after a holder lost the lease (it should end the server)."""
        self._lead, self._unlead, self._on_lost = lead, unlead, on_lost
        self.follower.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.leading:
            await self._stand_down()
            await asyncio.to_thread(self.lease.release)
        else:
            await self.follower.stop()

    async def _run(self) -> None:
        every = self.lease.length_s / TRIES_PER_LEASE
        while True:
            started = self.timer()
            held: bool | None
            try:
                held = await asyncio.to_thread(self.lease.acquire)
            except Exception:
                log.exception("could not reach the state store for the controller lease")
                held = None
            if held:
                self.valid_until = started + self.lease.length_s
            step = decide(self.leading, held, self.timer(), self.valid_until)
            if step is Step.TAKE:
                try:
                    await self._take()
                except Exception:  # half started: nothing is left running, the server ends
                    log.exception("could not start the controller after taking the lease")
                    with contextlib.suppress(Exception):
                        await self._stand_down()
                    self._on_lost()
                    return
            elif step is Step.STEP_DOWN:
                log.error("lost the controller lease; stopping this server's instances")
                await self._stand_down()
                self._on_lost()
                return
            await asyncio.sleep(every)

    async def _take(self) -> None:
        log.info("took the controller lease (%s): running the controller here", self.owner)
        self.leading = True
        await self.follower.stop()
        await asyncio.to_thread(self.publisher.store.clear_others)
        self.publisher.start()
        assert self._lead is not None
        await self._lead()
        self.wakes.start(self._wake_here)  # the controller runs: it can wake variants now

    async def _stand_down(self) -> None:
        self.leading = False
        await self.wakes.stop()
        assert self._unlead is not None
        await self._unlead()
        await self.publisher.stop()
