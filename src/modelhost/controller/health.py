"""Health checks of serving instances: a hung instance (its process alive, its ``/ping`` no
longer answered) is killed, so the controller replaces it as it replaces a dead one.

SageMaker pings its containers and replaces the ones that stop answering. Here one task pings
every instance of every fleet each ``interval`` seconds (one short connection per instance,
2 s to answer, as SageMaker's limit; nothing on the request path). An instance whose last good
answer is older than ``grace(instance)`` seconds is hung. The grace is the longest a request on
it may run (the invocation timeout; an asynchronous endpoint's hour): by then every request on
the instance has timed out anyway, so a model busy with one long request inside the limit (the
built-in server answers ``/ping`` between requests) is never killed for it. What to do with a
hung instance is the caller's (``on_hung``: the controller takes it out of its route and kills
it; the exit watcher then reports it as for any exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from modelhost.backends.local import Instance, ping

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 2.0

Ping = Callable[[str, int, float], Awaitable[bool]]


def hung(last_ok: float, now: float, grace: float) -> bool:
    """Whether an instance last answered ``/ping`` too long ago."""
    return now - last_ok > grace


class HealthWatch:
    """Pings the instances ``instances()`` lists; calls ``on_hung`` once for each that has not
    answered for longer than ``grace`` seconds."""

    def __init__(
        self,
        instances: Callable[[], Sequence[Instance]],
        on_hung: Callable[[Instance], None],
        interval: float,
        grace: Callable[[Instance], float],
        *,
        pinger: Ping = ping,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instances = instances
        self.on_hung = on_hung
        self.interval = interval
        self.grace = grace
        self.pinger = pinger
        self.timer = timer
        self.last_ok: dict[Instance, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="health-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:
                log.exception("health check pass failed")
            await asyncio.sleep(self.interval)

    async def check_once(self) -> None:
        """One pass: ping every listed instance at once, judge each answer."""
        listed = [i for i in self.instances() if i.exited() is None]
        answers = await asyncio.gather(*(self._ping(i) for i in listed))
        now = self.timer()
        seen = set(listed)
        for inst in [i for i in self.last_ok if i not in seen]:
            del self.last_ok[inst]  # stopped, replaced or died: not ours to judge any more
        for inst, ok in zip(listed, answers, strict=True):
            if ok or inst.exited() is not None:
                self.last_ok[inst] = now
                continue
            last = self.last_ok.setdefault(inst, now)  # first seen failing: count from now
            if hung(last, now, self.grace(inst)):
                log.warning(
                    "instance %s of %s/%s has not answered /ping for %.0f s; replacing it",
                    inst.instance_id,
                    inst.spec.endpoint,
                    inst.spec.variant,
                    now - last,
                )
                del self.last_ok[inst]
                self.on_hung(inst)

    async def _ping(self, inst: Instance) -> bool:
        address = inst.address
        port = address.port
        return await self.pinger(address.host, port, PING_TIMEOUT_S)
