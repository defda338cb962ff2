"""Which variant and which instance serve a request (pure).

The route table is owned by the controller (it installs and removes instances) and read by the
router on every request; both run on the same event loop, so no locks are needed.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Protocol

from modelhost.router.forwarder import UpstreamPool

MAX_CACHED_PATHS = 4096


class Target(Protocol):
    """An instance the router can send to: an id and a pooled upstream with an in-flight count."""

    @property
    def instance_id(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def pool(self) -> UpstreamPool: ...


@dataclass(slots=True)
class VariantRoute:
    name: str
    weight: float
    targets: list[Target] = field(default_factory=list)
    # The response header that names the variant, ready to write (the hot path's bytes).
    header_line: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        self.header_line = b"x-amzn-invoked-production-variant: %b\r\n" % self.name.encode()


@dataclass(slots=True)
class EndpointRoute:
    name: str
    variants: list[VariantRoute]
    _cumulative: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reweigh()

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
        if not self._cumulative or self._cumulative[-1] <= 0.0:
            return next((v for v in self.variants if v.targets), None)
        i = bisect.bisect_right(self._cumulative, u * self._cumulative[-1])
        return self.variants[min(i, len(self.variants) - 1)]


def pick_target(targets: list[Target], start: int) -> Target | None:
    """The instance with the fewest requests in flight; ties go round-robin from ``start``."""
    n = len(targets)
    if n == 0:
        return None
    if n == 1:
        return targets[0]
    best: Target | None = None
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
    def __init__(self) -> None:
        self._routes: dict[str, EndpointRoute] = {}
        # The hot path's lookup: the raw request path as the client sent it -> its route.
        # Only paths that found a route are kept; cleared whenever the table changes.
        self.by_path: dict[bytes, EndpointRoute] = {}
        self._counter = itertools.count()

    def get(self, endpoint: str) -> EndpointRoute | None:
        return self._routes.get(endpoint.lower())

    def remember(self, path: bytes, route: EndpointRoute) -> None:
        if len(self.by_path) >= MAX_CACHED_PATHS:
            self.by_path.clear()  # bounded: a client may spell one name in many ways
        self.by_path[path] = route

    def install(self, route: EndpointRoute) -> None:
        self._routes[route.name.lower()] = route
        self.by_path.clear()

    def remove(self, endpoint: str) -> None:
        self._routes.pop(endpoint.lower(), None)
        self.by_path.clear()

    def next_start(self) -> int:
        return next(self._counter)
