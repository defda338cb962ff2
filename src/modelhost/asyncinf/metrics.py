"""Asynchronous inference's metrics under SageMaker's CloudWatch names (CONTRACT.md 10), in
the same ``/metrics`` exposition as the invocation metrics (``sagemaker_`` prefix, CloudWatch's
dimensions as labels).

By EndpointName: the backlog gauges ``ApproximateBacklogSize``,
``ApproximateBacklogSizePerInstance``, ``ApproximateAgeOfOldestRequest`` (seconds) and
``HasBacklogWithoutCapacity`` (what an autoscaler reads: ``snapshot``), and the counters of
``AsyncStats``; ``TimeInBacklog`` and ``TotalProcessingTime`` as running sums in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelhost.asyncinf.stats import COUNTERS, SUMS, AsyncStats
from modelhost.router.routing import RouteTable
from modelhost.state.async_queue import AsyncQueue, Backlog

LABELS = ["EndpointName"]


@dataclass(frozen=True, slots=True)
class EndpointBacklog:
    endpoint: str
    size: int
    instances: int
    oldest_age_s: float

    @property
    def per_instance(self) -> float:
        return self.size / self.instances if self.instances else float(self.size)

    @property
    def without_capacity(self) -> bool:
        return self.size > 0 and self.instances == 0


def backlog_of(
    endpoint: str, backlog: Backlog | None, instances: int, now: float
) -> EndpointBacklog:
    if backlog is None or backlog.size == 0:
        return EndpointBacklog(endpoint, 0, instances, 0.0)
    oldest = backlog.oldest if backlog.oldest is not None else now
    return EndpointBacklog(endpoint, backlog.size, instances, max(0.0, now - oldest))


class AsyncMetrics(Collector):
    """A prometheus collector; ``endpoints`` gives the async endpoints' names (lower-cased
    keys to their names as created)."""

    def __init__(
        self,
        queue: AsyncQueue,
        routes: RouteTable,
        stats: AsyncStats,
        endpoints: Callable[[], dict[str, str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.routes = routes
        self.stats = stats
        self.endpoints = endpoints
        self.clock = clock

    def snapshot(self) -> list[EndpointBacklog]:
        """Each async endpoint's backlog now (runs a query: call it off the event loop)."""
        backlogs = self.queue.backlogs()
        now = self.clock()
        out = []
        for key, name in sorted(self.endpoints().items()):
            route = self.routes.get(key)
            instances = sum(len(v.targets) for v in list(route.variants)) if route else 0
            out.append(backlog_of(name, backlogs.get(key), instances, now))
        return out

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot()
        gauges = (
            ("ApproximateBacklogSize", "Requests queued or in flight.", lambda b: b.size),
            (
                "ApproximateBacklogSizePerInstance",
                "The backlog divided by the instance count.",
                lambda b: b.per_instance,
            ),
            (
                "ApproximateAgeOfOldestRequest",
                "Age of the oldest request not yet ended, seconds.",
                lambda b: b.oldest_age_s,
            ),
            (
                "HasBacklogWithoutCapacity",
                "1 when requests wait and the endpoint has no instance.",
                lambda b: 1.0 if b.without_capacity else 0.0,
            ),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(f"sagemaker_{name}", doc, labels=LABELS)
            for backlog in snapshot:
                gauge.add_metric([backlog.endpoint], value(backlog))
            yield gauge
        names = {key: name for key, name in self.endpoints().items()}
        counts = dict(self.stats.counts)
        sums = dict(self.stats.sums)
        for counter_name in COUNTERS:
            counter = CounterMetricFamily(
                f"sagemaker_{counter_name}", f"Asynchronous {counter_name}.", labels=LABELS
            )
            for key, values in counts.items():
                counter.add_metric([names.get(key, key)], values[counter_name])
            yield counter
        for sum_name in SUMS:
            counter = CounterMetricFamily(
                f"sagemaker_{sum_name}_milliseconds",
                f"Asynchronous {sum_name}, summed over requests, milliseconds.",
                labels=LABELS,
            )
            for key, seconds in sums.items():
                counter.add_metric([names.get(key, key)], seconds[sum_name] * 1000.0)
            yield counter
