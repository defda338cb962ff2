"""Which variant and which instance serve a request, and the router's side of the seam with
the controller (publish.py): the route table builds, keeps, drains and closes the connection
pools of the instances it is told about.

The controller and the router run on the same event loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from modelhost.publish import MultiModelSpec, PublishedInstance, PublishedVariant, Waker
from modelhost.router.forwarder import UpstreamPool
from modelhost.router.pipeline import DIRECT, MultiContainerPool, Sink, pool_for

log = logging.getLogger(__name__)

MAX_CACHED_PATHS = 4096
# Serverless endpoints take payloads up to 4 MB (real-time ones 6 MB).
SERVERLESS_MAX_PAYLOAD = 4 * 1024 * 1024
# An instance that leaves the routes without an explicit drain (a republished fleet) gets
# this long to answer the requests in flight on it before its connections are closed.
RETIRE_TIMEOUT_S = 3600.0


class Target(Protocol):
    """What the least-loaded choice reads of an instance."""

    @property
    def instance_id(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


T = TypeVar("T", bound=Target)
# A request held for a variant at zero instances: called once, with the variant's route when
# it has instances again, or None when the endpoint stopped being routed.
Resume = Callable[["VariantRoute | None"], None]


@dataclass(slots=True)
class VariantRoute:
    name: str
    weight: float
    targets: list[UpstreamPool] = field(default_factory=list)
    # A serverless variant's limits (router/invoke.py checks them only when set): requests
    # in flight at once (MaxConcurrency) and the payload size. 0: none.
    max_concurrency: int = 0
    max_payload: int = 0
    # Scales to zero: with no targets, requests wait for an instance (RouteTable.hold).
    wakes: bool = False
    # A multi-model variant's models (multimodel/); its requests take their own road.
    multi_model: MultiModelSpec | None = None
    # The response header that names the variant, ready to write (the hot path's bytes).
    header_line: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        self.header_line = b"x-amzn-invoked-production-variant: %b\r\n" % self.name.encode()


@dataclass(slots=True)
class EndpointRoute:
    name: str
    variants: list[VariantRoute]
    _cumulative: list[float] = field(default_factory=list)
    # A multi-container endpoint invoked directly (TargetContainerHostname): router/invoke.py
    # sends its requests by the container's name, and never caches its path.
    direct: bool = False
    # Some variant is multi-model: the route is never in the fast path's cache.
    multi_model: bool = False

    def __post_init__(self) -> None:
        self.reweigh()
        self.multi_model = any(v.multi_model is not None for v in self.variants)

    def reweigh(self) -> None:
        """Recompute the cumulative weights over variants that have instances."""
        total = 0.0
        self._cumulative = []
        for v in self.variants:
            total += v.weight if v.targets else 0.0
            self._cumulative.append(total)

    def variant(self, name: str) -> VariantRoute | None:
        return next((v for v in self.variants if v.name == name), None)

    def pick_variant(self, u: float) -> VariantRoute | None:
        """Traffic splits in proportion to weight; ``u`` is uniform in [0, 1)."""
        if not self._cumulative or self._cumulative[-1] <= 0.0:  # none has an instance
            return next((v for v in self.variants if v.targets or v.wakes), None)
        i = bisect.bisect_right(self._cumulative, u * self._cumulative[-1])
        return self.variants[min(i, len(self.variants) - 1)]


def pick_target(targets: Sequence[T], start: int) -> T | None:
    """The instance with the fewest requests in flight; ties go round-robin from ``start``."""
    n = len(targets)
    if n == 0:
        return None
    if n == 1:
        return targets[0]
    best: T | None = None
    best_load = 1 << 30
    for i in range(n):
        t = targets[(start + i) % n]
        load = t.in_flight
        if load < best_load:
            best, best_load = t, load
            if load == 0:
                break
    return best


class RouteTable:
    """Endpoint name -> route, for the hot path; the ``Publisher`` (publish.py) for the
    controller. Each published instance gets one ``UpstreamPool``, kept while any route
    lists it; one that leaves every route is drained (its requests in flight finish), then
    closed."""

    def __init__(self, retire_timeout: float = RETIRE_TIMEOUT_S) -> None:
        self._routes: dict[str, EndpointRoute] = {}
        # The hot path's lookup: the raw request path as the client sent it -> its route.
        # Only paths that found a route are kept; cleared whenever the table changes.
        self.by_path: dict[bytes, EndpointRoute] = {}
        self._counter = itertools.count()
        self._pools: dict[str, UpstreamPool] = {}  # routed instances
        self._retiring: dict[str, UpstreamPool] = {}  # unrouted, finishing their requests
        self._retire_timeout = retire_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        # Asynchronous inference endpoints (lower-cased names): InvokeEndpoint refuses them,
        # so their paths are never cached in ``by_path`` (asyncinf/worker.py keeps this).
        self.async_only: frozenset[str] = frozenset()
        # Requests held for variants that scaled to zero, by (endpoint lower-cased, variant),
        # and who is asked to wake such a variant (the controller; None: nobody).
        self.waiting: dict[tuple[str, str], list[Resume]] = {}
        self.waker: Waker | None = None
        # Told each serverless variant's memory size as it is published (the metering).
        self.meter: Callable[[str, str, int], None] | None = None
        # Told each container's latency in multi-container instances (router/pipeline.py).
        self.container_sink: Sink | None = None

    # -- the hot path --------------------------------------------------------------------

    def get(self, endpoint: str) -> EndpointRoute | None:
        return self._routes.get(endpoint.lower())

    def remember(self, path: bytes, route: EndpointRoute) -> None:
        if len(self.by_path) >= MAX_CACHED_PATHS:
            self.by_path.clear()  # bounded: a client may spell one name in many ways
        self.by_path[path] = route

    def next_start(self) -> int:
        return next(self._counter)

    def hold(self, endpoint: str, variant: VariantRoute, resume: Resume) -> bool:
        """Hold a request for ``variant``, which has no instance now, until it has one: ask
        the controller for it. False: the variant does not scale to zero (nobody will come),
        or it holds MaxConcurrency requests already."""
        if not variant.wakes or self.waker is None:
            return False
        key = (endpoint.lower(), variant.name)
        held = self.waiting.setdefault(key, [])
        if variant.max_concurrency and len(held) >= variant.max_concurrency:
            return False
        held.append(resume)
        if len(held) == 1:
            self.waker(endpoint, variant.name)
        return True

    def release(self, endpoint: str, variant: str, resume: Resume) -> bool:
        """Stop holding ``resume`` (its caller gave up); False when it was not held."""
        held = self.waiting.get((endpoint.lower(), variant), [])
        if resume not in held:
            return False
        held.remove(resume)
        return True

    def _resume(self, endpoint: str, route: EndpointRoute | None) -> None:
        """Send the requests held for ``endpoint``'s variants that have instances now (all of
        them, with None, when it is no longer routed)."""
        lower = endpoint.lower()
        for key in [k for k in self.waiting if k[0] == lower]:
            variant = None if route is None else route.variant(key[1])
            if variant is not None and not variant.targets:
                continue
            loop = asyncio.get_running_loop()
            for resume in self.waiting.pop(key):
                loop.call_soon(resume, variant)

    def mark_async(self, endpoints: Collection[str]) -> None:
        """The asynchronous inference endpoints are now ``endpoints``."""
        names = frozenset(name.lower() for name in endpoints)
        if names != self.async_only:
            self.async_only = names
            self.by_path.clear()

    # -- Publisher -----------------------------------------------------------------------

    def publish(self, endpoint: str, variants: Sequence[PublishedVariant]) -> None:
        routes = [
            VariantRoute(
                v.name,
                v.weight,
                [self._pool(i) for i in v.instances],
                v.max_concurrency,
                SERVERLESS_MAX_PAYLOAD if v.max_concurrency else 0,
                v.wakes,
                v.multi_model,
            )
            for v in variants
        ]
        for vr in routes:  # multi-container instances: who their latencies belong to
            for pool in vr.targets:
                if isinstance(pool, MultiContainerPool):
                    pool.labels = (endpoint, vr.name)
                    pool.sink = self.container_sink
        direct = any(v.mode == DIRECT for v in variants)
        route = self._routes[endpoint.lower()] = EndpointRoute(endpoint, routes, direct=direct)
        if self.meter is not None:
            for v in variants:
                if v.memory_mb:
                    self.meter(endpoint, v.name, v.memory_mb)
        self.by_path.clear()
        self._retire_unrouted()
        if self.waiting:
            self._resume(endpoint, route)

    def withdraw(self, endpoint: str) -> None:
        self._routes.pop(endpoint.lower(), None)
        self.by_path.clear()
        self._retire_unrouted()
        if self.waiting:
            self._resume(endpoint, None)

    def lost(self, instance_id: str) -> None:
        self._unroute({instance_id})
        pool = self._pools.pop(instance_id, None) or self._retiring.pop(instance_id, None)
        if pool is not None:
            log.warning("instance %s is gone; no more requests go to it", instance_id)
            self._spawn(pool.close())

    async def drain(self, instance_ids: Collection[str], timeout: float) -> None:
        ids = set(instance_ids)
        self._unroute(ids)
        pools = [p for i in ids if (p := self._pools.pop(i, None) or self._retiring.get(i))]
        await asyncio.gather(*(pool.drain(timeout) for pool in pools))
        for i in ids:
            self._retiring.pop(i, None)

    async def close(self) -> None:
        """Close every pool (the server is stopping)."""
        pools = [*self._pools.values(), *self._retiring.values()]
        self._routes.clear()
        self.by_path.clear()
        self._pools.clear()
        self._retiring.clear()
        await asyncio.gather(*(pool.close() for pool in pools))
        for task in list(self._tasks):
            task.cancel()

    # -- internals -----------------------------------------------------------------------

    def _pool(self, inst: PublishedInstance) -> UpstreamPool:
        pool = self._pools.get(inst.instance_id)
        if pool is None or pool.closed or pool.address != inst.address:
            if pool is not None:  # moved (a new address): the old connections go
                self._spawn(pool.drain(self._retire_timeout))
            pool = pool_for(inst, self._gone)
            self._pools[inst.instance_id] = pool
        return pool

    def _gone(self, pool: UpstreamPool) -> None:
        """A connect found nobody listening: the instance died (its process may not have been
        reaped yet); leave the routes now rather than at the controller's next pass."""
        if self._pools.get(pool.instance_id) is pool:
            self.lost(pool.instance_id)

    def _unroute(self, ids: set[str]) -> None:
        for route in self._routes.values():
            changed = False
            for variant in route.variants:
                if any(t.instance_id in ids for t in variant.targets):
                    variant.targets = [t for t in variant.targets if t.instance_id not in ids]
                    changed = True
            if changed:
                route.reweigh()

    def _retire_unrouted(self) -> None:
        routed = {
            t.instance_id for r in self._routes.values() for v in r.variants for t in v.targets
        }
        for instance_id in [i for i in self._pools if i not in routed]:
            pool = self._retiring[instance_id] = self._pools.pop(instance_id)
            self._spawn(self._retire(instance_id, pool))

    async def _retire(self, instance_id: str, pool: UpstreamPool) -> None:
        await pool.drain(self._retire_timeout)
        if self._retiring.get(instance_id) is pool:
            del self._retiring[instance_id]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
