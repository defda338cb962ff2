from __future__ import annotations

import asyncio
import socket
from collections import Counter
from dataclasses import dataclass

from modelhost.publish import Address, PublishedInstance, PublishedVariant
from modelhost.router.forwarder import UpstreamConnectError
from modelhost.router.routing import (
    MAX_CACHED_PATHS,
    EndpointRoute,
    RouteTable,
    VariantRoute,
    pick_target,
)


@dataclass
class FakeTarget:
    instance_id: str
    in_flight: int = 0
    pool: object = None


def route(*weights: float, empty: set[int] | None = None) -> EndpointRoute:
    variants = []
    for i, w in enumerate(weights):
        targets = [] if empty and i in empty else [FakeTarget(f"i-{i}")]
        variants.append(VariantRoute(f"v{i}", w, targets))  # type: ignore[arg-type]
    return EndpointRoute("ep", variants)


def test_weights_split_traffic_proportionally() -> None:
    r = route(1.0, 3.0)
    seen = Counter(r.pick_variant(i / 1000).name for i in range(1000))  # type: ignore[union-attr]
    assert seen == {"v0": 250, "v1": 750}


def test_zero_weight_variant_gets_nothing() -> None:
    r = route(0.0, 2.0)
    assert {r.pick_variant(i / 100).name for i in range(100)} == {"v1"}  # type: ignore[union-attr]


def test_variant_without_instances_is_skipped() -> None:
    r = route(1.0, 1.0, empty={0})
    assert {r.pick_variant(i / 100).name for i in range(100)} == {"v1"}  # type: ignore[union-attr]


def test_all_zero_weights_fall_back_to_a_variant_with_instances() -> None:
    r = route(0.0, 0.0, empty={0})
    picked = r.pick_variant(0.5)
    assert picked is not None and picked.name == "v1"


def test_pick_target_least_in_flight() -> None:
    a, b, c = FakeTarget("a", 3), FakeTarget("b", 1), FakeTarget("c", 2)
    picked = pick_target([a, b, c], 0)
    assert picked is b


def test_pick_target_ties_rotate() -> None:
    targets = [FakeTarget("a"), FakeTarget("b"), FakeTarget("c")]
    picked = [pick_target(targets, start).instance_id for start in range(6)]  # type: ignore[union-attr]
    assert picked == ["a", "b", "c", "a", "b", "c"]


def test_pick_target_none_when_empty() -> None:
    assert pick_target([], 0) is None


def published(*instances: str, name: str = "AllTraffic") -> list[PublishedVariant]:
    """One variant over instances listening at made-up addresses (nothing is connected)."""
    return [
        PublishedVariant(
            name,
            1.0,
            tuple(PublishedInstance(i, Address("127.0.0.1", 1000 + len(i))) for i in instances),
        )
    ]


def ids(table: RouteTable, endpoint: str = "ep") -> list[str]:
    found = table.get(endpoint)
    assert found is not None
    return [t.instance_id for v in found.variants for t in v.targets]


def test_route_table_is_case_insensitive() -> None:
    async def main() -> None:
        table = RouteTable()
        table.publish("EP", published("i-1"))
        assert table.get("ep") is not None
        table.withdraw("Ep")
        assert table.get("ep") is None
        await table.close()

    asyncio.run(main())


def test_remembered_paths_are_forgotten_when_the_table_changes() -> None:
    async def main() -> None:
        table = RouteTable()
        table.publish("ep", published("i-1"))
        first = table.get("ep")
        assert first is not None
        table.remember(b"/endpoints/EP/invocations", first)
        assert table.by_path[b"/endpoints/EP/invocations"] is first
        table.publish("ep", published("i-1", "i-2"))  # an update: no stale route may be served
        assert table.by_path == {}
        second = table.get("ep")
        assert second is not None
        table.remember(b"/endpoints/ep/invocations", second)
        table.withdraw("ep")
        assert table.by_path == {}
        await table.close()

    asyncio.run(main())


def test_publishing_again_keeps_the_pools_of_instances_still_listed() -> None:
    async def main() -> None:
        table = RouteTable()
        table.publish("ep", published("i-1", "i-2"))
        before = table.get("ep")
        assert before is not None
        pools = {t.instance_id: t for t in before.variants[0].targets}
        table.publish("ep", published("i-2", "i-3"))
        after = table.get("ep")
        assert after is not None
        kept = {t.instance_id: t for t in after.variants[0].targets}
        assert kept["i-2"] is pools["i-2"] and not pools["i-2"].closed
        async with asyncio.timeout(5):  # i-1 is unrouted and idle: drained, then closed
            while not pools["i-1"].closed:
                await asyncio.sleep(0.001)
        await table.close()

    asyncio.run(main())


def test_a_lost_instance_leaves_its_variant_at_once() -> None:
    async def main() -> None:
        table = RouteTable()
        table.publish("ep", published("i-1", "i-2"))
        route = table.get("ep")
        assert route is not None
        (gone,) = [t for t in route.variants[0].targets if t.instance_id == "i-1"]
        table.lost("i-1")
        assert ids(table) == ["i-2"]
        await asyncio.sleep(0)
        assert gone.closed
        table.lost("i-1")  # twice, or unknown: nothing happens
        table.lost("i-9")
        assert ids(table) == ["i-2"]
        await table.close()

    asyncio.run(main())


def test_a_refused_connect_takes_the_instance_out_of_the_routes() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        table = RouteTable()
        dead = PublishedInstance("i-dead", Address("127.0.0.1", port))
        table.publish("ep", [PublishedVariant("v", 1.0, (dead, *published("i-2")[0].instances))])
        route = table.get("ep")
        assert route is not None
        pool = next(t for t in route.variants[0].targets if t.instance_id == "i-dead")
        outcome: list[object] = []
        pool.send(b"GET / HTTP/1.1\r\n\r\n", b"", 5.0, outcome.append)
        async with asyncio.timeout(5):
            while not outcome:
                await asyncio.sleep(0.001)
        assert isinstance(outcome[0], UpstreamConnectError)
        assert ids(table) == ["i-2"]
        await table.close()

    asyncio.run(main())


def test_drain_waits_for_requests_in_flight_then_closes() -> None:
    async def main() -> None:
        table = RouteTable()
        table.publish("ep", published("i-1", "i-2"))
        route = table.get("ep")
        assert route is not None
        pool = route.variants[0].targets[0]
        pool.in_flight = 1  # a request being answered
        draining = asyncio.ensure_future(table.drain([pool.instance_id], timeout=5))
        await asyncio.sleep(0.05)
        assert pool.instance_id not in ids(table) and not draining.done() and not pool.closed
        pool.in_flight = 0
        await asyncio.wait_for(draining, 5)
        assert pool.closed
        await table.close()

    asyncio.run(main())


def test_drain_gives_up_after_its_timeout() -> None:
    async def main() -> None:
        table = RouteTable()
        table.publish("ep", published("i-1"))
        route = table.get("ep")
        assert route is not None
        pool = route.variants[0].targets[0]
        pool.in_flight = 1  # never answered
        await asyncio.wait_for(table.drain(["i-1"], timeout=0.05), 5)
        assert pool.closed and table.get("ep") is not None and ids(table) == []

    asyncio.run(main())


def test_remembered_paths_are_bounded() -> None:
    table = RouteTable()
    r = route(1.0)
    for i in range(MAX_CACHED_PATHS + 10):
        table.remember(b"/endpoints/%d/invocations" % i, r)
    assert len(table.by_path) <= MAX_CACHED_PATHS


def test_variant_header_line_names_the_variant() -> None:
    assert VariantRoute("Blue", 1.0).header_line == b"x-amzn-invoked-production-variant: Blue\r\n"


def test_requests_for_a_variant_at_zero_are_held_until_it_has_an_instance() -> None:
    """A variant that scales to zero holds requests (at most MaxConcurrency), asks the waker
    once, and resumes them with the route that has an instance; a withdraw resumes with None."""

    async def run() -> None:
        table = RouteTable()
        woken: list[tuple[str, str]] = []
        table.waker = lambda endpoint, variant: woken.append((endpoint, variant))
        table.publish("Ep", [PublishedVariant("v", 1.0, (), max_concurrency=2, wakes=True)])
        route = table.get("ep")
        assert route is not None and route.pick_variant(0.5) is route.variants[0]
        resumed: list[object] = []

        def first(v: VariantRoute | None) -> None:
            resumed.append(v)

        def second(v: VariantRoute | None) -> None:
            resumed.append(("second", v))

        def third(v: VariantRoute | None) -> None:
            resumed.append(("third", v))

        variant = route.variants[0]
        assert table.hold("Ep", variant, first) and table.hold("Ep", variant, second)
        assert not table.hold("Ep", variant, third)  # MaxConcurrency held already
        assert woken == [("Ep", "v")]
        assert table.release("Ep", "v", second) and not table.release("Ep", "v", second)
        inst = PublishedInstance("i-1", Address("127.0.0.1", 1))
        table.publish("Ep", [PublishedVariant("v", 1.0, (inst,), max_concurrency=2, wakes=True)])
        await asyncio.sleep(0)
        [ready] = resumed
        assert isinstance(ready, VariantRoute) and [t.instance_id for t in ready.targets] == ["i-1"]

        table.publish("Ep", [PublishedVariant("v", 1.0, (), wakes=True)])
        again = table.get("ep")
        assert again is not None and table.hold("Ep", again.variants[0], first)
        table.withdraw("Ep")
        await asyncio.sleep(0)
        assert resumed[-1] is None and table.waiting == {}
        await table.close()

    asyncio.run(run())


def test_a_variant_that_does_not_scale_to_zero_holds_nothing() -> None:
    table = RouteTable()
    table.waker = lambda endpoint, variant: None
    table.publish("ep", [PublishedVariant("v", 1.0, ())])
    route = table.get("ep")
    assert route is not None and not table.hold("ep", route.variants[0], lambda v: None)
