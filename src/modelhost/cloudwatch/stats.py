"""CloudWatch statistics over per-minute buckets: pure functions, no clock, no I/O.

Each metric is modelled as SageMaker emits it, one sample per invocation:
- ``Invocations``: 1 per request (Sum = requests; SampleCount the same; Average 1);
- ``Invocation4XXErrors``, ``Invocation5XXErrors``, ``InvocationModelErrors``: 1 for a request
  that failed so, else 0 (Sum = errors, Average = the error rate);
- ``InvocationsPerInstance``: 1/instances per request (Sum = requests per instance);
- ``ModelLatency`` and ``OverheadLatency``: microseconds, from the Recorder's histograms.
  SampleCount, Sum and Average are exact; Minimum, Maximum and the pNN percentiles are
  estimated at the histogram's resolution (bucket bounds 100 us .. 60 s, interpolated inside a
  bucket and kept within what the exact sum allows), since recording exact extremes would cost
  every request work on the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from modelhost.metrics import LATENCY_BUCKETS_US

NAMESPACE = "AWS/SageMaker"
DIMENSIONS = ("EndpointName", "VariantName")
LATENCY_METRICS = ("ModelLatency", "OverheadLatency")
COUNT_METRICS = (
    "Invocations",
    "InvocationsPerInstance",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationModelErrors",
)
METRICS = (*COUNT_METRICS, *LATENCY_METRICS)
BASIC = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d{1,10})?|100(\.0{1,10})?)$")
HIST_SIZE = len(LATENCY_BUCKETS_US) + 1


def unit(metric: str) -> str:
    return "Microseconds" if metric in LATENCY_METRICS else "None"


def percentile_of(stat: str) -> float | None:
    """``p99`` -> 99.0, ``p99.9`` -> 99.9; None for anything else."""
    return float(stat[1:]) if PERCENTILE.match(stat) else None


@dataclass(slots=True)
class Minute:
    """What one (endpoint, variant) did in one minute (or any span: buckets add up)."""

    n: int = 0
    per_instance: float = 0.0
    e4: int = 0
    e5: int = 0
    me: int = 0
    model: list[int] = field(default_factory=lambda: [0] * HIST_SIZE)
    model_total: float = 0.0
    overhead: list[int] = field(default_factory=lambda: [0] * HIST_SIZE)
    overhead_total: float = 0.0

    def add(self, o: Minute) -> None:
        self.n += o.n
        self.per_instance += o.per_instance
        self.e4 += o.e4
        self.e5 += o.e5
        self.me += o.me
        self.model = [a + b for a, b in zip(self.model, o.model, strict=True)]
        self.model_total += o.model_total
        self.overhead = [a + b for a, b in zip(self.overhead, o.overhead, strict=True)]
        self.overhead_total += o.overhead_total

    def to_list(self) -> list[Any]:
        return [self.n, self.per_instance, self.e4, self.e5, self.me,
                self.model, self.model_total, self.overhead, self.overhead_total]  # fmt: skip

    @classmethod
    def from_list(cls, v: list[Any]) -> Minute:
        n, pi, e4, e5, me, model, mt, overhead, ot = v
        hists = [int(c) for c in model], [int(c) for c in overhead]
        return cls(int(n), float(pi), int(e4), int(e5), int(me), hists[0], float(mt), hists[1],
                   float(ot))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Dist:
    """A metric's samples over a span, as far as they are known."""

    count: int
    total: float
    low: float
    high: float
    hist: tuple[int, ...] | None = None  # latency: counts per bucket
    ones: int | None = None  # 0/1 metrics: how many samples are 1

    def value(self, stat: str) -> float:
        if stat == "SampleCount":
            return float(self.count)
        if stat == "Sum":
            return self.total
        if stat == "Average":
            return self.total / self.count
        if stat == "Minimum":
            return self.low
        if stat == "Maximum":
            return self.high
        q = percentile_of(stat)
        if q is None:
            raise ValueError(stat)
        return self.percentile(q)

    def percentile(self, q: float) -> float:
        rank = q / 100.0 * self.count
        if self.ones is not None:
            return 1.0 if rank > self.count - self.ones else 0.0
        if self.hist is None or self.low == self.high:
            return self.low
        cumulative = 0
        for i, c in enumerate(self.hist):
            if c and cumulative + c >= rank:
                lo, hi = _bounds(i)
                lo, hi = max(lo, self.low), min(hi, self.high)
                return lo + (hi - lo) * max(0.0, rank - cumulative) / c
            cumulative += c
        return self.high


def _bounds(i: int) -> tuple[float, float]:
    lo = 0.0 if i == 0 else float(LATENCY_BUCKETS_US[i - 1])
    hi = float(LATENCY_BUCKETS_US[i]) if i < len(LATENCY_BUCKETS_US) else 2.0 * lo
    return lo, hi


def dist(metric: str, m: Minute) -> Dist | None:
    """``metric``'s samples in ``m``; None when there were none."""
    if m.n <= 0:
        return None
    if metric == "Invocations":
        return Dist(m.n, float(m.n), 1.0, 1.0)
    if metric == "InvocationsPerInstance":
        avg = m.per_instance / m.n
        return Dist(m.n, m.per_instance, avg, avg)
    errors = {"Invocation4XXErrors": m.e4, "Invocation5XXErrors": m.e5,
              "InvocationModelErrors": m.me}  # fmt: skip
    if metric in errors:
        e = errors[metric]
        return Dist(m.n, float(e), 0.0 if e < m.n else 1.0, 1.0 if e else 0.0, ones=e)
    hist, total = (m.model, m.model_total) if metric == "ModelLatency" else (
        m.overhead, m.overhead_total)  # fmt: skip
    count = sum(hist)
    if count == 0:
        return None
    if count == 1:
        return Dist(1, total, total, total, tuple(hist))
    first = next(i for i, c in enumerate(hist) if c)
    last = max(i for i, c in enumerate(hist) if c)
    low, high = _bounds(first)[0], _bounds(last)[1]
    # What the exact sum allows: every other sample is at most `high`, at least `low`.
    low = max(low, total - (count - 1) * high)
    high = min(high, total - (count - 1) * low)
    avg = total / count
    return Dist(count, total, min(low, avg), max(high, avg), tuple(hist))
