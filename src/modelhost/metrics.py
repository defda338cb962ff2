"""Invocation metrics under SageMaker's CloudWatch names (CONTRACT.md section 10), exported for
Prometheus at ``/metrics``.

Names keep CloudWatch's spelling behind a ``sagemaker_`` prefix, with CloudWatch's dimensions
as labels: ``sagemaker_Invocations_total{EndpointName="x",VariantName="AllTraffic"}``.
Latencies are histograms in microseconds, as CloudWatch reports them.

The hot path (``Recorder.record``) only adds to plain numbers in a per-(endpoint, variant)
slot: the router runs on one event loop, so no locks are needed, and prometheus-client's
thread-safe counters cost more than the rest of the bookkeeping. A custom collector turns the
slots into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

LABELS = ["EndpointName", "VariantName"]
# Microseconds: 100 us .. 60 s.
LATENCY_BUCKETS_US = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
)  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(slots=True)
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_US) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS_US, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else str(bound), running))
        return out


@dataclass(slots=True)
class Slot:
    """Everything recorded for one (endpoint, variant)."""

    invocations: int = 0
    per_instance: float = 0.0
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_errors: int = 0
    model_latency: Histogram = field(default_factory=Histogram)
    overhead_latency: Histogram = field(default_factory=Histogram)
    # Serverless: from the request that found the variant at zero to its instance being ready
    model_setup: Histogram = field(default_factory=Histogram)
    instances: int | None = None
    memory_mb: int | None = None  # a serverless variant's MemorySizeInMB (its metering)


_COUNTERS = (
    ("sagemaker_Invocations", "Requests to an endpoint.", "invocations"),
    (
        "sagemaker_InvocationsPerInstance",
        "Invocations normalised by the variant's instance count.",
        "per_instance",
    ),
    ("sagemaker_Invocation4XXErrors", "Requests answered 4xx.", "errors_4xx"),
    ("sagemaker_Invocation5XXErrors", "Requests answered 5xx.", "errors_5xx"),
    ("sagemaker_InvocationModelErrors", "Requests the model answered non-2xx.", "model_errors"),
)
_HISTOGRAMS = (
    ("sagemaker_ModelLatency", "Time the container took, microseconds.", "model_latency"),
    ("sagemaker_OverheadLatency", "Time modelhost added, microseconds.", "overhead_latency"),
    (
        "sagemaker_ModelSetupTime",
        "Serverless: time to get an instance ready from zero, microseconds.",
        "model_setup",
    ),
)


# (metric name, help text, the slot attribute holding its value)
Family = tuple[str, str, str]


def families(
    slots: Sequence[tuple[tuple[str, ...], object]],
    counters: Sequence[Family],
    histograms: Sequence[Family],
) -> Iterator[Metric]:
    """Counter and histogram families over per-(endpoint, variant) slots: each family's value
    for a slot is the slot's attribute it names (a number, or a ``Histogram``)."""
    for name, doc, attr in counters:
        counter = CounterMetricFamily(name, doc, labels=LABELS)
        for key, slot in slots:
            counter.add_metric(list(key), getattr(slot, attr))
        yield counter
    for name, doc, attr in histograms:
        histogram = HistogramMetricFamily(name, doc, labels=LABELS)
        for key, slot in slots:
            h: Histogram = getattr(slot, attr)
            histogram.add_metric(list(key), h.buckets(), h.total)
        yield histogram


class Recorder(Collector):
    def __init__(self) -> None:
        self.slots: dict[tuple[str, str], Slot] = {}
        # ContainerLatency of multi-container instances: (endpoint, variant, container).
        self.containers: dict[tuple[str, str, str], Histogram] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def _slot(self, endpoint: str, variant: str) -> Slot:
        key = (endpoint, variant)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = Slot()
        return slot

    def record(
        self,
        endpoint: str,
        variant: str,
        instances: int,
        status: int,
        model_us: float,
        total_us: float,
        model_error: bool = False,
    ) -> None:
        s = self._slot(endpoint, variant)
        s.invocations += 1
        s.per_instance += 1.0 / (instances or 1)
        if status >= 500:
            s.errors_5xx += 1
        elif status >= 400:
            s.errors_4xx += 1
        if model_error:
            s.model_errors += 1
        s.model_latency.observe(model_us)
        s.overhead_latency.observe(total_us - model_us if total_us > model_us else 0.0)

    def record_ok(
        self, endpoint: str, variant: str, instances: int, model_us: float, total_us: float
    ) -> None:
        """``record`` for a 200 (the hot path's case)."""
        s = self.slots.get((endpoint, variant))
        if s is None:
            s = self._slot(endpoint, variant)
        s.invocations += 1
        s.per_instance += 1.0 / (instances or 1)
        s.model_latency.observe(model_us)
        s.overhead_latency.observe(total_us - model_us if total_us > model_us else 0.0)

    def record_setup(self, endpoint: str, variant: str, setup_us: float) -> None:
        """A serverless variant was started from zero for a request that waited this long."""
        self._slot(endpoint, variant).model_setup.observe(setup_us)

    def set_memory(self, endpoint: str, variant: str, memory_mb: int) -> None:
        """A serverless variant's memory size: its compute is metered in GB-seconds."""
        self._slot(endpoint, variant).memory_mb = memory_mb

    def record_container(self, endpoint: str, variant: str, container: str, us: float) -> None:
        """One container's latency in a serial pipeline or a Direct endpoint."""
        key = (endpoint, variant, container)
        h = self.containers.get(key)
        if h is None:
            h = self.containers[key] = Histogram()
        h.observe(us)

    def set_instances(self, endpoint: str, variant: str, count: int) -> None:
        self._slot(endpoint, variant).instances = count

    def series(self) -> list[tuple[str, str]]:
        """The (endpoint, variant) pairs seen so far."""
        return list(self.slots)

    def forget(self, endpoint: str) -> None:
        """Drop an endpoint's series when it is deleted."""
        for key in [k for k in self.slots if k[0] == endpoint]:
            del self.slots[key]
        for ckey in [k for k in self.containers if k[0] == endpoint]:
            del self.containers[ckey]

    def collect(self) -> Iterator[Metric]:
        slots = list(self.slots.items())
        yield from families(slots, _COUNTERS, _HISTOGRAMS)
        containers = HistogramMetricFamily(
            "sagemaker_ContainerLatency",
            "Time each container of a multi-container instance took, microseconds.",
            labels=[*LABELS, "ContainerName"],
        )
        for ckey, h in list(self.containers.items()):
            containers.add_metric(list(ckey), h.buckets(), h.total)
        yield containers
        gauge = GaugeMetricFamily(
            "sagemaker_CurrentInstanceCount", "Instances serving each variant.", labels=LABELS
        )
        for key, slot in slots:
            if slot.instances is not None:
                gauge.add_metric(list(key), slot.instances)
        yield gauge
        metered = CounterMetricFamily(
            "modelhost_ServerlessComputeGBSeconds",
            "Serverless variants: memory (GB) x time spent invoking the model (s), as billed.",
            labels=LABELS,
        )
        for key, slot in slots:
            if slot.memory_mb is not None:
                seconds = slot.model_latency.total / 1e6
                metered.add_metric(list(key), seconds * slot.memory_mb / 1024)
        yield metered

    def exposition(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data
