"""The async backlog gauges and counters in the /metrics exposition."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest

from modelhost.asyncinf.metrics import AsyncMetrics, backlog_of
from modelhost.asyncinf.records import AsyncRequest
from modelhost.asyncinf.stats import AsyncStats
from modelhost.router.routing import EndpointRoute, RouteTable, VariantRoute
from modelhost.state.async_queue import AsyncQueue, Backlog
from modelhost.state.store import Store


def test_backlog_rules() -> None:
    idle = backlog_of("ep", None, 2, 100.0)
    assert (idle.size, idle.oldest_age_s, idle.without_capacity) == (0, 0.0, False)
    waiting = backlog_of("ep", Backlog(4, 90.0), 0, 100.0)
    assert waiting.without_capacity and waiting.per_instance == 4.0
    assert waiting.oldest_age_s == 10.0
    assert backlog_of("ep", Backlog(4, 90.0), 2, 100.0).per_instance == 2.0


def test_exposition(tmp_path: Path) -> None:
    queue = AsyncQueue(Store(f"sqlite:///{tmp_path / 'state.db'}"))
    for n in range(3):
        queue.enqueue(
            AsyncRequest(
                f"r{n}", "Ep", f"i{n}", "s3://b/i", "s3://b/o", "s3://b/f", 100.0 + n, 200.0, 9.0
            )
        )
    routes = RouteTable()
    routes._routes["ep"] = EndpointRoute(
        "Ep", [VariantRoute("AllTraffic", 1.0, cast(Any, ["pool-a", "pool-b"]))]
    )
    stats = AsyncStats()
    stats.expired("Ep")
    stats.processed("Ep", 1.5)
    collector = AsyncMetrics(queue, routes, stats, lambda: {"ep": "Ep"}, clock=lambda: 110.0)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert 'sagemaker_ApproximateBacklogSize{EndpointName="Ep"} 3.0' in text
    assert 'sagemaker_ApproximateBacklogSizePerInstance{EndpointName="Ep"} 1.5' in text
    assert 'sagemaker_ApproximateAgeOfOldestRequest{EndpointName="Ep"} 10.0' in text
    assert 'sagemaker_HasBacklogWithoutCapacity{EndpointName="Ep"} 0.0' in text
    assert 'sagemaker_ExpiredRequests_total{EndpointName="Ep"} 1.0' in text
    assert 'sagemaker_InvocationsProcesssed_total{EndpointName="Ep"} 1.0' in text
    assert 'sagemaker_TotalProcessingTime_milliseconds_total{EndpointName="Ep"} 1500.0' in text
