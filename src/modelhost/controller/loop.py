"""The reconcile loop: the only owner of instances.

Operations write desired state and nudge; every pass reads each endpoint and, when no task is
already working on it, starts the one step that moves it towards what was asked:
Creating -> build a fleet -> InService | Failed; Updating -> blue/green or in-place capacity;
Deleting -> stop everything and remove the record; InService -> replace dead instances (and, after
a server restart, bring the fleet back). Each step is idempotent; a failing step logs and moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from modelhost.controller.fleet import Fleet, FleetFailed, Fleets
from modelhost.router.routing import RouteTable
from modelhost.state.records import Endpoint, EndpointStatus, UpdateKind

log = logging.getLogger(__name__)

HEAL_BACKOFF_S = 10.0


@dataclass
class Live:
    """What the controller holds for one endpoint in memory."""

    fleet: Fleet | None = None
    task: asyncio.Task[None] | None = None
    next_heal: float = 0.0  # back off when replacing instances keeps failing
    deleting: bool = False  # the running task is the delete step

    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def needs_healing(self, ep: Endpoint) -> bool:
        if self.fleet is None or time.monotonic() < self.next_heal:
            return False
        if any(i.exited() is not None for i in self.fleet.all()):
            return True
        return any(len(self.fleet.instances.get(v.name, [])) < v.desired_count for v in ep.variants)


class Controller:
    def __init__(self, fleets: Fleets, routes: RouteTable, interval: float = 0.5) -> None:
        self.fleets = fleets
        self.store = fleets.store
        self.routes = routes
        self.interval = interval
        self.live: dict[str, Live] = {}
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

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        tasks = [lv.task for lv in self.live.values() if lv.task is not None and not lv.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.fleets.stop(list(self.fleets.backend.instances))
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
            case EndpointStatus.IN_SERVICE if live.needs_healing(ep):
                return self._heal(ep, live)
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
            self._finish(ep.name, EndpointStatus.FAILED, failure=str(exc))
            return
        except Exception as exc:  # never leave an endpoint Creating and retried forever
            log.exception("creating the fleet of endpoint %s failed", ep.name)
            self._finish(ep.name, EndpointStatus.FAILED, failure=f"Internal error: {exc!r}")
            return
        if not self._still(ep):
            await self.fleets.stop(fleet.all())
            return
        live.fleet = fleet
        self.routes.install(fleet.route(ep.name))
        self._finish(ep.name, EndpointStatus.IN_SERVICE, fleet=fleet)

    async def _settle(self, ep: Endpoint, live: Live) -> None:
        if live.fleet is not None and self._still(ep):
            self._finish(ep.name, EndpointStatus.IN_SERVICE, fleet=live.fleet)

    async def _recover(self, ep: Endpoint, live: Live) -> None:
        """After a server restart: SystemUpdating while the fleet comes back, then InService."""
        self._set_status(ep.name, EndpointStatus.SYSTEM_UPDATING)
        await self._create(ep, live)

    async def _blue_green(self, ep: Endpoint, live: Live) -> None:
        """Bring the new fleet up next to the old one, move traffic, then remove the old one."""
        try:
            fleet = await self.fleets.plan(ep.pending_deployment, ep.pending_variants)
            await self.fleets.build(ep.name, fleet, ep.pending_variants)
        except Exception as exc:
            if not isinstance(exc, FleetFailed):
                log.exception("building the new fleet of endpoint %s failed", ep.name)
            self._set_status(ep.name, EndpointStatus.ROLLING_BACK)
            self._finish(
                ep.name,
                EndpointStatus.IN_SERVICE,
                failure=f"Update failed: {exc}",
                clear_pending=True,
            )
            return
        if not self._still(ep):
            await self.fleets.stop(fleet.all())
            return
        old, live.fleet = live.fleet, fleet
        self.routes.install(fleet.route(ep.name))
        self._finish(ep.name, EndpointStatus.IN_SERVICE, fleet=fleet, adopt_pending=True)
        if old is not None:
            await self.fleets.stop(old.all())

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
                await self._resize(ep.name, fleet, v.name, v.desired_count)
            except FleetFailed as exc:
                failure = f"Update failed: {exc}"
                failed.add(v.name)
        self.routes.install(fleet.route(ep.name))
        if self._still(ep):
            self._finish(
                ep.name, EndpointStatus.IN_SERVICE, fleet=fleet, failure=failure, roll_back=failed
            )

    async def _resize(self, endpoint: str, fleet: Fleet, variant: str, count: int) -> None:
        group = fleet.instances.setdefault(variant, [])
        if len(group) < count:
            await self.fleets.grow(endpoint, fleet, variant, count - len(group))
        elif len(group) > count:
            extra = group[count:]
            del group[count:]
            self.routes.install(fleet.route(endpoint))
            await self.fleets.stop(extra)

    async def _heal(self, ep: Endpoint, live: Live) -> None:
        """Replace instances whose process died; keep Current* counts true."""
        fleet = live.fleet
        assert fleet is not None
        dead = [i for i in fleet.all() if i.exited() is not None]
        for group in fleet.instances.values():
            group[:] = [i for i in group if i not in dead]
        self.routes.install(fleet.route(ep.name))
        for inst in dead:
            log.warning(
                "instance %s of %s/%s exited with status %s; replacing it",
                inst.instance_id,
                ep.name,
                inst.spec.variant,
                inst.exited(),
            )
        await self.fleets.stop(dead)
        self._record_counts(ep.name, fleet)
        for v in ep.variants:
            try:
                await self._resize(ep.name, fleet, v.name, v.desired_count)
            except FleetFailed as exc:
                live.next_heal = time.monotonic() + HEAL_BACKOFF_S
                log.error("could not replace instances of %s/%s: %s", ep.name, v.name, exc)
        self.routes.install(fleet.route(ep.name))
        self._record_counts(ep.name, fleet)

    async def _delete(self, ep: Endpoint, live: Live) -> None:
        self.routes.remove(ep.name)
        if live.fleet is not None:
            await self.fleets.stop(live.fleet.all())
            live.fleet = None
        await asyncio.to_thread(self.store.delete, "endpoint", ep.name)
        await asyncio.to_thread(self.store.delete_tags, ep.arn)

    async def _forget(self, name: str) -> None:
        live = self.live.pop(name)
        self.routes.remove(name)
        if live.fleet is not None:
            await self.fleets.stop(live.fleet.all())

    # --- writing status back --------------------------------------------------------------

    def _still(self, ep: Endpoint) -> bool:
        """True when nobody changed the endpoint since this step started (a Delete, say)."""
        now = self.store.endpoint(ep.name)
        return now is not None and now.generation == ep.generation

    def _set_status(self, name: str, status: EndpointStatus) -> None:
        def change(e: Endpoint) -> None:
            e.status = status
            e.modified = time.time()

        self.store.update_endpoint(name, change)

    def _finish(
        self,
        name: str,
        status: EndpointStatus,
        *,
        fleet: Fleet | None = None,
        failure: str | None = None,
        adopt_pending: bool = False,
        clear_pending: bool = False,
        roll_back: set[str] | None = None,
    ) -> None:
        def change(e: Endpoint) -> None:
            if e.status is EndpointStatus.DELETING:
                return
            if adopt_pending and e.pending_config:
                e.config_name, e.variants = e.pending_config, e.pending_variants
                e.deployment = e.pending_deployment
            if adopt_pending or clear_pending:
                e.pending_config, e.pending_variants, e.pending_deployment = None, [], None
            e.status = status
            e.update = UpdateKind.NONE
            e.failure_reason = failure
            e.modified = time.time()
            if fleet is not None:
                _apply_counts(e, fleet)
                if e.deployment is not None:
                    e.deployment.model_dirs = {
                        name: str(plan.model_dir) for name, plan in fleet.plans.items()
                    }
                for v in e.variants:  # a failed capacity change keeps what is running
                    if roll_back and v.name in roll_back and v.current_count is not None:
                        v.desired_count = v.current_count

        self.store.update_endpoint(name, change)

    def _record_counts(self, name: str, fleet: Fleet) -> None:
        self.store.update_endpoint(name, lambda e: _apply_counts(e, fleet))


def _apply_counts(e: Endpoint, fleet: Fleet) -> None:
    for v in e.variants:
        v.current_count = len(fleet.instances.get(v.name, []))
        plan = fleet.plans.get(v.name)
        v.current_weight = plan.weight if plan is not None else v.desired_weight
