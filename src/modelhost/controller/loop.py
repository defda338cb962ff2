"""The reconcile loop: the only owner of instances.

Operations write desired state and nudge; every pass reads each endpoint and, when no task is
already working on it, starts the one step that moves it towards what was asked:
Creating -> build a fleet -> InService | Failed; Updating -> blue/green or in-place capacity;
Deleting -> stop everything and remove the record; InService -> replace dead instances (and, after
a server restart, bring the fleet back). Each step is idempotent; a failing step logs and moves on.

The router learns about fleets only through a ``publish.Publisher``: a fleet is published once
its instances are healthy; instances leave it by ``drain`` (their requests in flight finish)
before they are stopped, or by ``lost`` the moment the backend sees their process exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from modelhost.backends.local import Instance, signal_group
from modelhost.controller.fleet import Fleet, FleetFailed, Fleets, published
from modelhost.controller.status import Finish, Snapshot, finish, record_counts, set_status
from modelhost.publish import Publisher
from modelhost.state.records import Endpoint, EndpointStatus, UpdateKind

log = logging.getLogger(__name__)

HEAL_BACKOFF_S = 10.0
# What the router has seen of a variant: (endpoint, variant) -> (invocations answered so far,
# requests in flight now).
Activity = Callable[[str, str], tuple[int, int]]


@dataclass
class Live:
    """What the controller holds for one endpoint in memory."""

    fleet: Fleet | None = None
    task: asyncio.Task[None] | None = None
    next_heal: float = 0.0  # back off when replacing instances keeps failing
    deleting: bool = False  # the running task is the delete step
    # Instances out of the fleet and not stopped yet (drained first): a step cancelled
    # meanwhile (by a DeleteEndpoint) leaves them here for the delete step to stop.
    retiring: set[Instance] = field(default_factory=set)
    # Serverless variants scaled to zero, those a request asked to wake, and each serving
    # one's last activity seen: (invocations answered, when that count last changed).
    asleep: set[str] = field(default_factory=set)
    waking: set[str] = field(default_factory=set)
    idle: dict[str, tuple[int, float]] = field(default_factory=dict)

    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def held(self) -> list[Instance]:
        """Every instance this endpoint still has running."""
        fleet = self.fleet.all() if self.fleet is not None else []
        return list(dict.fromkeys([*fleet, *self.retiring]))

    def needs_healing(self, ep: Endpoint, now: float) -> bool:
        if self.fleet is None or now < self.next_heal:
            return False
        if any(i.exited() is not None for i in self.fleet.all()):
            return True
        return any(
            len(self.fleet.instances.get(v.name, [])) < v.desired_count
            for v in ep.variants
            if v.name not in self.asleep
        )


class Controller:
    def __init__(
        self,
        fleets: Fleets,
        publisher: Publisher,
        interval: float = 0.5,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        idle_s: float = 0.0,
        activity: Activity | None = None,
    ) -> None:
        self.fleets = fleets
        self.store = fleets.store
        self.publisher = publisher
        self.interval = interval
        self.clock = clock  # wall time: LastModifiedTime
        self.timer = timer  # monotonic: backoff
        self.live: dict[str, Live] = {}
        # Serverless variants with no invocation for this long scale to zero (0: never);
        # ``activity`` tells (the router's counts) whether a variant is in use.
        self.idle_s = idle_s
        self.activity = activity
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = asyncio.create_task(self._run(), name="reconcile")

    def wake(self) -> None:
        """Thread-safe nudge (operations run in worker threads)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def wake_variant(self, endpoint: str, variant: str) -> None:
        """The router's ``Waker`` (on the loop): a request waits for a variant that scaled to
        zero. The next pass starts its instances."""
        live = self.live.get(endpoint.lower())
        if live is None or variant not in live.asleep:
            return
        live.waking.add(variant)
        if live.busy():  # still going to sleep, say: wake it the moment that step ends
            assert live.task is not None
            live.task.add_done_callback(lambda _: self._wake_now(endpoint, live))
        else:
            self._wake_now(endpoint, live)

    def _wake_now(self, endpoint: str, live: Live) -> None:
        """Start the wake-up step at once, without waiting for a pass to read the store."""
        if live.waking and not live.busy() and self.live.get(endpoint.lower()) is live:
            live.task = asyncio.create_task(self._guard(endpoint, self._wake_up(endpoint, live)))

    def instance_exited(self, inst: Instance) -> None:
        """The backend's ``on_exit`` (on the loop): an instance died unasked. It leaves its
        route now; the pass this wakes replaces it."""
        self.publisher.lost(inst.instance_id)
        self._wake.set()

    def serving(self) -> list[Instance]:
        """The instances of every endpoint's fleet (what the health checks watch)."""
        return [i for lv in self.live.values() if lv.fleet is not None for i in lv.fleet.all()]

    def instance_hung(self, inst: Instance) -> None:
        """A health check found ``inst`` hung: out of its route now, and killed; its exit is
        then reported (``instance_exited``) and the next pass replaces it."""
        self.publisher.lost(inst.instance_id)
        signal_group(inst.process, signal.SIGKILL)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        tasks = [lv.task for lv in self.live.values() if lv.task is not None and not lv.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in self.live:
            self.publisher.withdraw(name)
        running = list(self.fleets.backend.instances)
        await self.publisher.drain([i.instance_id for i in running], self._grace())
        await self.fleets.stop(running)
        self.fleets.backend.kill_all()

    async def _run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    # --- one pass -------------------------------------------------------------------------

    async def reconcile_once(self) -> None:
        endpoints = await asyncio.to_thread(self.store.endpoints)
        names = {ep.name.lower() for ep in endpoints}
        for ep in endpoints:
            live = self.live.setdefault(ep.name.lower(), Live())
            if ep.status is EndpointStatus.DELETING and live.busy() and not live.deleting:
                # Stop a slow start at once (its instances are stopped); the delete step runs
                # once that is done, and other endpoints are not held up meanwhile.
                assert live.task is not None
                live.task.cancel()
            if not live.busy():
                step = self._step(ep, live)
                if step is not None:
                    live.deleting = ep.status is EndpointStatus.DELETING
                    live.task = asyncio.create_task(self._guard(ep.name, step))
        for name in [n for n in self.live if n not in names and not self.live[n].busy()]:
            await self._forget(name)

    def _step(self, ep: Endpoint, live: Live) -> Coroutine[Any, Any, None] | None:
        if ep.status is EndpointStatus.IN_SERVICE:
            live.waking |= _provisioned_asleep(ep, live)
        match ep.status:
            case EndpointStatus.DELETING:
                return self._delete(ep, live)
            case EndpointStatus.CREATING:
                return self._create(ep, live)
            case EndpointStatus.UPDATING if ep.update is UpdateKind.CONFIG:
                return self._blue_green(ep, live)
            case EndpointStatus.UPDATING:
                return self._capacity(ep, live)
            case EndpointStatus.IN_SERVICE | EndpointStatus.SYSTEM_UPDATING if live.fleet is None:
                return self._recover(ep, live)
            case EndpointStatus.IN_SERVICE if live.waking:
                return self._wake_up(ep.name, live)
            case EndpointStatus.IN_SERVICE if live.needs_healing(ep, self.timer()):
                return self._heal(ep, live)
            case EndpointStatus.IN_SERVICE if idle := self._idle_variants(ep, live):
                return self._sleep(ep, live, idle)
            case EndpointStatus.SYSTEM_UPDATING:  # has a fleet: recovered, or marked by another
                return self._settle(ep, live)
            case _:
                return None

    async def _guard(self, name: str, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconcile step for endpoint %s failed", name)

    # --- steps ----------------------------------------------------------------------------

    async def _create(self, ep: Endpoint, live: Live) -> None:
        try:
            fleet = await self.fleets.plan(ep.deployment, ep.variants)
            await self.fleets.build(ep.name, fleet, ep.variants)
        except FleetFailed as exc:
            await self._finish(ep.name, Finish(EndpointStatus.FAILED, failure=str(exc)))
            return
        except Exception as exc:  # never leave an endpoint Creating and retried forever
            log.exception("creating the fleet of endpoint %s failed", ep.name)
            failure = f"Internal error: {exc!r}"
            await self._finish(ep.name, Finish(EndpointStatus.FAILED, failure=failure))
            return
        if not await self._adopt(ep, live, fleet):
            return
        live.fleet = fleet
        live.asleep.clear()  # a new fleet: every variant has its instances
        self.publisher.publish(ep.name, published(fleet))
        await self._finish(ep.name, Finish(EndpointStatus.IN_SERVICE), fleet)

    async def _settle(self, ep: Endpoint, live: Live) -> None:
        if live.fleet is not None and await self._still(ep):
            await self._finish(ep.name, Finish(EndpointStatus.IN_SERVICE), live.fleet)

    async def _recover(self, ep: Endpoint, live: Live) -> None:
        """After a server restart: SystemUpdating while the fleet comes back, then InService."""
        await self._set_status(ep.name, EndpointStatus.SYSTEM_UPDATING)
        await self._create(ep, live)

    async def _blue_green(self, ep: Endpoint, live: Live) -> None:
        """Bring the new fleet up next to the old one, move traffic, then remove the old one
        (its requests in flight finish first)."""
        try:
            fleet = await self.fleets.plan(ep.pending_deployment, ep.pending_variants)
            await self.fleets.build(ep.name, fleet, ep.pending_variants)
        except Exception as exc:
            if not isinstance(exc, FleetFailed):
                log.exception("building the new fleet of endpoint %s failed", ep.name)
            await self._set_status(ep.name, EndpointStatus.ROLLING_BACK)
            failure = f"Update failed: {exc}"
            rollback = Finish(EndpointStatus.IN_SERVICE, failure=failure, clear_pending=True)
            await self._finish(ep.name, rollback)
            return
        if not await self._adopt(ep, live, fleet):
            return
        old = live.fleet.all() if live.fleet is not None else []
        live.fleet = fleet
        live.asleep.clear()
        live.retiring.update(old)
        self.publisher.publish(ep.name, published(fleet))
        await self._finish(ep.name, Finish(EndpointStatus.IN_SERVICE, adopt_pending=True), fleet)
        await self._retire(live, old)

    async def _capacity(self, ep: Endpoint, live: Live) -> None:
        fleet = live.fleet
        if fleet is None:  # after a restart: build the whole fleet at the desired capacity
            await self._create(ep, live)
            return
        failure = None
        failed: set[str] = set()
        for v in ep.variants:
            if v.name in fleet.plans:
                fleet.plans[v.name].weight = v.desired_weight
            try:
                await self._resize(ep.name, live, fleet, v.name, v.desired_count)
            except FleetFailed as exc:
                failure = f"Update failed: {exc}"
                failed.add(v.name)
        self.publisher.publish(ep.name, published(fleet))
        if await self._still(ep):
            done = Finish(EndpointStatus.IN_SERVICE, failure=failure, roll_back=frozenset(failed))
            await self._finish(ep.name, done, fleet)

    async def _resize(
        self, endpoint: str, live: Live, fleet: Fleet, variant: str, count: int
    ) -> None:
        group = fleet.instances.setdefault(variant, [])
        if len(group) < count:
            await self.fleets.grow(endpoint, fleet, variant, count - len(group))
        elif len(group) > count:
            extra = group[count:]
            del group[count:]
            self.publisher.publish(endpoint, published(fleet))
            await self._retire(live, extra)

    async def _heal(self, ep: Endpoint, live: Live) -> None:
        """Replace instances whose process died; keep Current* counts true."""
        fleet = live.fleet
        assert fleet is not None
        dead = [i for i in fleet.all() if i.exited() is not None]
        for group in fleet.instances.values():
            group[:] = [i for i in group if i not in dead]
        for inst in dead:
            self.publisher.lost(inst.instance_id)  # told already when the backend noticed
            log.warning(
                "instance %s of %s/%s exited with status %s; replacing it",
                inst.instance_id,
                ep.name,
                inst.spec.variant,
                inst.exited(),
            )
        self.publisher.publish(ep.name, published(fleet))
        await self._retire(live, dead, drain=False)
        await self._record_counts(ep.name, fleet)
        for v in ep.variants:
            if v.name in live.asleep:
                continue
            try:
                await self._resize(ep.name, live, fleet, v.name, v.desired_count)
            except FleetFailed as exc:
                live.next_heal = self.timer() + HEAL_BACKOFF_S
                log.error("could not replace instances of %s/%s: %s", ep.name, v.name, exc)
        self.publisher.publish(ep.name, published(fleet))
        await self._record_counts(ep.name, fleet)

    # --- serverless variants: to zero when idle, back on the first request -----------------

    def _idle_variants(self, ep: Endpoint, live: Live) -> list[str]:
        """Serverless variants (no ProvisionedConcurrency in effect) with instances and no
        invocation answered or in flight for ``idle_s``."""
        fleet = live.fleet
        if self.idle_s <= 0 or self.activity is None or fleet is None:
            return []
        now, idle = self.timer(), []
        for name, plan in fleet.plans.items():
            if not plan.scales_to_zero or name in live.asleep or not fleet.instances.get(name):
                continue
            if ep.provisioned(name):  # kept warm
                live.idle.pop(name, None)
                continue
            answered, in_flight = self.activity(ep.name, name)
            seen = live.idle.get(name)
            if seen is None or in_flight or seen[0] != answered:
                live.idle[name] = (answered, now)
            elif now - seen[1] >= self.idle_s:
                idle.append(name)
        return idle

    async def _sleep(self, ep: Endpoint, live: Live, variants: list[str]) -> None:
        """Scale idle serverless variants to zero: out of the routes (which then hold their
        requests and wake them), drained, stopped. The endpoint stays InService."""
        fleet = live.fleet
        assert fleet is not None
        stopping: list[Instance] = []
        for name in variants:
            live.asleep.add(name)
            live.idle.pop(name, None)
            stopping += fleet.instances.get(name, [])
            fleet.instances[name] = []
            log.info("%s/%s is idle: scaling it to zero", ep.name, name)
        self.publisher.publish(ep.name, published(fleet))
        await self._retire(live, stopping)
        await self._record_counts(ep.name, fleet)

    async def _wake_up(self, endpoint: str, live: Live) -> None:
        """Start an instance of each variant a request is waiting for; publishing it sends
        the held requests."""
        fleet = live.fleet
        waking, live.waking = live.waking & live.asleep, set()
        if fleet is None:
            return
        for name in waking:
            started = self.timer()
            try:
                await self.fleets.grow(endpoint, fleet, name, 1)
            except FleetFailed as exc:
                log.error("could not start %s/%s from zero: %s", endpoint, name, exc)
                continue
            live.asleep.discard(name)
            self.publisher.publish(endpoint, published(fleet))
            took = (self.timer() - started) * 1e3
            log.info("%s/%s started from zero in %.0f ms", endpoint, name, took)
        await self._record_counts(endpoint, fleet)

    async def _delete(self, ep: Endpoint, live: Live) -> None:
        self.publisher.withdraw(ep.name)
        held, live.fleet = live.held(), None
        await self._retire(live, held)
        await asyncio.to_thread(self.store.delete, "endpoint", ep.name)
        await asyncio.to_thread(self.store.delete_tags, ep.arn)

    async def _forget(self, name: str) -> None:
        live = self.live.pop(name)
        self.publisher.withdraw(name)
        await self._retire(live, live.held())

    # --- instances leaving ----------------------------------------------------------------

    async def _adopt(self, ep: Endpoint, live: Live, fleet: Fleet) -> bool:
        """Whether the endpoint still wants the fleet just built (nobody changed it since the
        step began); if not, the fleet is stopped."""
        live.retiring.update(fleet.all())  # until decided: a cancel here leaves none running
        if await self._still(ep):
            live.retiring.difference_update(fleet.all())
            return True
        await self._retire(live, fleet.all(), drain=False)
        return False

    async def _retire(self, live: Live, instances: list[Instance], drain: bool = True) -> None:
        """Stop instances out of the fleet: first (``drain``) let the router finish the
        requests in flight on them, within the stop grace period."""
        if not instances:
            return
        live.retiring.update(instances)
        if drain:
            await self.publisher.drain([i.instance_id for i in instances], self._grace())
        await self.fleets.stop(instances)
        live.retiring.difference_update(instances)

    def _grace(self) -> float:
        return self.fleets.settings.stop_grace_s

    # --- writing status back (off the loop, which the router shares) ----------------------

    async def _still(self, ep: Endpoint) -> bool:
        """True when nobody changed the endpoint since this step started (a Delete, say)."""
        now = await asyncio.to_thread(self.store.endpoint, ep.name)
        return now is not None and now.generation == ep.generation

    async def _set_status(self, name: str, status: EndpointStatus) -> None:
        await asyncio.to_thread(set_status, self.store, name, status, self.clock())

    async def _finish(self, name: str, done: Finish, fleet: Fleet | None = None) -> None:
        snapshot = Snapshot.of(fleet) if fleet is not None else None
        await asyncio.to_thread(finish, self.store, name, done, snapshot, self.clock())

    async def _record_counts(self, name: str, fleet: Fleet) -> None:
        await asyncio.to_thread(record_counts, self.store, name, Snapshot.of(fleet))


def _provisioned_asleep(ep: Endpoint, live: Live) -> set[str]:
    """Variants at zero whose ProvisionedConcurrency was raised (autoscaling): they wake now,
    with no request waiting."""
    return {name for name in live.asleep if ep.provisioned(name)}
