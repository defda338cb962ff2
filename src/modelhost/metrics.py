"""Invocation metrics under SageMaker's CloudWatch names (CONTRACT.md section 10), exported for
Prometheus at ``/metrics``.

Names keep CloudWatch's spelling behind a ``sagemaker_`` prefix, with CloudWatch's dimensions
as labels: ``sagemaker_Invocations_total{EndpointName="x",VariantName="AllTraffic"}``.
Latencies are histograms in microseconds, as CloudWatch reports them. The hot path calls
``Recorder.record``: the labelled children are cached per (endpoint, variant), so a request
costs a few dict lookups and increments.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LABELS = ("EndpointName", "VariantName")
# Microseconds: 100 us .. 60 s.
LATENCY_BUCKETS_US = (
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(slots=True)
class _Children:
    invocations: Counter
    per_instance: Counter
    errors_4xx: Counter
    errors_5xx: Counter
    model_errors: Counter
    model_latency: Histogram
    overhead_latency: Histogram


class Recorder:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._invocations = Counter(
            "sagemaker_Invocations", "Requests to an endpoint.", LABELS, registry=r
        )
        self._per_instance = Counter(
            "sagemaker_InvocationsPerInstance",
            "Invocations normalised by the variant's instance count.",
            LABELS,
            registry=r,
        )
        self._4xx = Counter(
            "sagemaker_Invocation4XXErrors", "Requests answered 4xx.", LABELS, registry=r
        )
        self._5xx = Counter(
            "sagemaker_Invocation5XXErrors", "Requests answered 5xx.", LABELS, registry=r
        )
        self._model_errors = Counter(
            "sagemaker_InvocationModelErrors",
            "Requests the model answered non-2xx.",
            LABELS,
            registry=r,
        )
        self._model_latency = Histogram(
            "sagemaker_ModelLatency",
            "Time the container took, microseconds.",
            LABELS,
            buckets=LATENCY_BUCKETS_US,
            registry=r,
        )
        self._overhead = Histogram(
            "sagemaker_OverheadLatency",
            "Time modelhost added, microseconds.",
            LABELS,
            buckets=LATENCY_BUCKETS_US,
            registry=r,
        )
        self.instances = Gauge(
            "sagemaker_CurrentInstanceCount", "Instances serving each variant.", LABELS, registry=r
        )
        self._children: dict[tuple[str, str], _Children] = {}

    def _for(self, endpoint: str, variant: str) -> _Children:
        key = (endpoint, variant)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = _Children(
                self._invocations.labels(*key),
                self._per_instance.labels(*key),
                self._4xx.labels(*key),
                self._5xx.labels(*key),
                self._model_errors.labels(*key),
                self._model_latency.labels(*key),
                self._overhead.labels(*key),
            )
        return found

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
        c = self._for(endpoint, variant)
        c.invocations.inc()
        c.per_instance.inc(1.0 / max(1, instances))
        if status >= 500:
            c.errors_5xx.inc()
        elif status >= 400:
            c.errors_4xx.inc()
        if model_error:
            c.model_errors.inc()
        c.model_latency.observe(model_us)
        c.overhead_latency.observe(max(0.0, total_us - model_us))

    def series(self) -> list[tuple[str, str]]:
        """The (endpoint, variant) pairs seen so far."""
        return list(self._children)

    def forget(self, endpoint: str) -> None:
        """Drop an endpoint's series when it is deleted."""
        for key in [k for k in self._children if k[0] == endpoint]:
            del self._children[key]
            for metric in (
                self._invocations,
                self._per_instance,
                self._4xx,
                self._5xx,
                self._model_errors,
                self._model_latency,
                self._overhead,
                self.instances,
            ):
                with contextlib.suppress(KeyError):
                    metric.remove(*key)

    def exposition(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data
