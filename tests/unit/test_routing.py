from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

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
    picked: object = pick_target([a, b, c], 0)  # type: ignore[list-item]
    assert picked is b


def test_pick_target_ties_rotate() -> None:
    targets = [FakeTarget("a"), FakeTarget("b"), FakeTarget("c")]
    picked = [pick_target(targets, start).instance_id for start in range(6)]  # type: ignore[arg-type,union-attr]
    assert picked == ["a", "b", "c", "a", "b", "c"]


def test_pick_target_none_when_empty() -> None:
    assert pick_target([], 0) is None


def test_route_table_is_case_insensitive() -> None:
    table = RouteTable()
    table.install(route(1.0))
    assert table.get("EP") is not None
    table.remove("Ep")
    assert table.get("ep") is None


def test_remembered_paths_are_forgotten_when_the_table_changes() -> None:
    table = RouteTable()
    first = route(1.0)
    table.install(first)
    table.remember(b"/endpoints/EP/invocations", first)
    assert table.by_path[b"/endpoints/EP/invocations"] is first
    second = route(1.0, 1.0)
    table.install(second)  # an update installs a new route: no stale one may be served
    assert table.by_path == {}
    table.remember(b"/endpoints/ep/invocations", second)
    table.remove("ep")
    assert table.by_path == {}


def test_remembered_paths_are_bounded() -> None:
    table = RouteTable()
    r = route(1.0)
    for i in range(MAX_CACHED_PATHS + 10):
        table.remember(b"/endpoints/%d/invocations" % i, r)
    assert len(table.by_path) <= MAX_CACHED_PATHS


def test_variant_header_line_names_the_variant() -> None:
    assert VariantRoute("Blue", 1.0).header_line == b"x-amzn-invoked-production-variant: Blue\r\n"
