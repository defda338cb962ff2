"""TEMPORARY (issue 8): ``Publisher`` (publish.py) on today's ``RouteTable``, so that the control
side runs before the router side of the seam lands. The router's own ``RouteTable`` implements
``Publisher`` there; this module then goes, and app.py passes the route table itself.

It builds one ``UpstreamPool`` per published instance (reused while the address is the same),
installs ``EndpointRoute``s, and closes an instance's pool when it is drained or lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from modelhost.publish import Address, PublishedInstance, PublishedVariant
from modelhost.router.forwarder import UpstreamPool
from modelhost.router.routing import EndpointRoute, RouteTable, Target, VariantRoute

DRAIN_POLL_S = 0.01
# A lost instance's pool is closed once the requests on it have failed over (not at once:
# UpstreamPool.close() cancels retries not yet started, and their callers never hear back).
LOST_DRAIN_S = 10.0


@dataclass(eq=False)
class _Target:
    instance_id: str
    address: Address
    pool: UpstreamPool

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight


class RoutePublisher:
    def __init__(self, routes: RouteTable) -> None:
        self.routes = routes
        self._targets: dict[str, _Target] = {}
        self._published: dict[str, Sequence[PublishedVariant]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def publish(self, endpoint: str, variants: Sequence[PublishedVariant]) -> None:
        self._published[endpoint.lower()] = variants
        self.routes.install(self._route(endpoint, variants))

    def withdraw(self, endpoint: str) -> None:
        self._published.pop(endpoint.lower(), None)
        self.routes.remove(endpoint)

    def lost(self, instance_id: str) -> None:
        for name, variants in list(self._published.items()):
            if any(i.instance_id == instance_id for v in variants for i in v.instances):
                self.publish(name, [_without(v, instance_id) for v in variants])
        target = self._targets.pop(instance_id, None)
        if target is not None:
            self._spawn(_drain([target], LOST_DRAIN_S))

    async def drain(self, instance_ids: Collection[str], timeout: float) -> None:
        targets = [t for i in instance_ids if (t := self._targets.pop(i, None)) is not None]
        await _drain(targets, timeout)

    def _route(self, endpoint: str, variants: Sequence[PublishedVariant]) -> EndpointRoute:
        routes = []
        for v in variants:
            targets: list[Target] = [self._target(i) for i in v.instances]
            routes.append(VariantRoute(v.name, v.weight, targets))
        return EndpointRoute(endpoint, routes)

    def _target(self, inst: PublishedInstance) -> _Target:
        known = self._targets.get(inst.instance_id)
        if known is not None and known.address == inst.address:
            return known
        if known is not None:
            self._spawn(_drain([known], LOST_DRAIN_S))
        a = inst.address
        pool = UpstreamPool(a.host, a.port, unix_path=a.unix_path, pipelined=a.pipelined)
        target = self._targets[inst.instance_id] = _Target(inst.instance_id, a, pool)
        return target

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _drain(targets: list[_Target], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(t.in_flight for t in targets) and time.monotonic() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
    await asyncio.gather(*(t.pool.close() for t in targets))


def _without(variant: PublishedVariant, instance_id: str) -> PublishedVariant:
    kept = tuple(i for i in variant.instances if i.instance_id != instance_id)
    return PublishedVariant(variant.name, variant.weight, kept)
