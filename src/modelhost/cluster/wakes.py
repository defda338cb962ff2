"""Waking a variant that scaled to zero from a server that does not run the controller.

A request for such a variant waits in that server's route table (router/routing.py
``RouteTable.hold``), which asks its ``Waker``. On the controller's server that is the
controller itself (``Controller.wake_variant``); on the others, ``WakeRelay.ask`` records a
wake request in the store (state/wakes.py), and the controller's server takes the requests
every ``interval`` seconds and wakes the variants. The held request goes out once the
follower reads the new routes: at most ``interval`` (the ask's query, then the take) plus the
instance's start plus one route poll after it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelhost.publish import Waker
from modelhost.state.wakes import WakeRequests

log = logging.getLogger(__name__)


class WakeRelay:
    def __init__(self, requests: WakeRequests, interval: float) -> None:
        self.requests = requests
        self.interval = interval
        self._tasks: set[asyncio.Task[None]] = set()  # asks being written
        self._taker: asyncio.Task[None] | None = None

    # -- a follower ------------------------------------------------------------------------

    def ask(self, endpoint: str, variant: str) -> None:
        """A ``Waker`` (on the loop, returns at once): record the request in the store."""
        task = asyncio.get_running_loop().create_task(self._ask(endpoint, variant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, endpoint: str, variant: str) -> None:
        try:
            await asyncio.to_thread(self.requests.ask, endpoint, variant)
        except Exception:  # the held request times out with SageMaker's error
            log.exception("could not ask the controller to wake %s/%s", endpoint, variant)

    # -- the controller's server -----------------------------------------------------------

    def start(self, wake: Waker) -> None:
        """Take the stored requests every ``interval`` s and pass each to ``wake``."""
        self._taker = asyncio.get_running_loop().create_task(self._take(wake), name="wakes")

    async def stop(self) -> None:
        if self._taker is not None:
            self._taker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._taker
            self._taker = None

    async def take_once(self, wake: Waker) -> int:
        taken = await asyncio.to_thread(self.requests.take)
        for endpoint, variant in taken:
            log.info("waking %s/%s for a request held on another server", endpoint, variant)
            wake(endpoint, variant)
        return len(taken)

    async def _take(self, wake: Waker) -> None:
        while True:
            try:
                await self.take_once(wake)
            except Exception:
                log.exception("reading the wake requests from the state store failed")
            await asyncio.sleep(self.interval)
