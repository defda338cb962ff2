"""Multi-model metrics under SageMaker's CloudWatch names (CONTRACT.md section 10), exported at
``/metrics`` beside the invocation metrics (a collector on the ``Recorder``'s registry).

``sagemaker_ModelCacheHit_total`` counts hits and ``sagemaker_ModelCacheLookups_total`` every
request, so hits / lookups is CloudWatch's Average of ModelCacheHit. Latencies are histograms
in microseconds. ``sagemaker_LoadedModelCount`` is per instance. ``modelhost_ModelThrash_total``
(SageMaker has none) counts loads of a model unloaded less than a minute before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from modelhost.metrics import LABELS, Histogram, families


@dataclass(slots=True)
class MultiModelSlot:
    """Everything recorded for one multi-model (endpoint, variant)."""

    lookups: int = 0
    hits: int = 0
    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    thrash: int = 0
    loading_wait: Histogram = field(default_factory=Histogram)
    loading: Histogram = field(default_factory=Histogram)
    downloading: Histogram = field(default_factory=Histogram)
    unloading: Histogram = field(default_factory=Histogram)


_COUNTERS = (
    ("sagemaker_ModelCacheHit", "Requests whose model was loaded already.", "hits"),
    ("sagemaker_ModelCacheLookups", "Requests to a multi-model endpoint.", "lookups"),
    ("modelhost_ModelLoads", "Models loaded.", "loads"),
    ("modelhost_ModelLoadFailures", "Model loads that failed.", "load_failures"),
    ("modelhost_ModelUnloads", "Models unloaded.", "unloads"),
    ("modelhost_ModelThrash", "Loads of a model unloaded less than 60 s before.", "thrash"),
)
_HISTOGRAMS = (
    (
        "sagemaker_ModelLoadingWaitTime",
        "Waiting for a model to load, microseconds.",
        "loading_wait",
    ),
    ("sagemaker_ModelLoadingTime", "Loading a model in the container, microseconds.", "loading"),
    ("sagemaker_ModelDownloadingTime", "Downloading and extracting, microseconds.", "downloading"),
    ("sagemaker_ModelUnloadingTime", "Unloading a model, microseconds.", "unloading"),
)

# (endpoint, variant, instance id) -> models loaded
LoadedCounts = Callable[[], dict[tuple[str, str, str], int]]


class MultiModelMetrics(Collector):
    def __init__(self, loaded: LoadedCounts = dict) -> None:
        self.slots: dict[tuple[str, str], MultiModelSlot] = {}
        self.loaded = loaded

    def slot(self, endpoint: str, variant: str) -> MultiModelSlot:
        key = (endpoint, variant)
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = MultiModelSlot()
        return s

    def collect(self) -> Iterator[Metric]:
        yield from families(list(self.slots.items()), _COUNTERS, _HISTOGRAMS)
        gauge = GaugeMetricFamily(
            "sagemaker_LoadedModelCount",
            "Models loaded on each instance.",
            labels=[*LABELS, "InstanceId"],
        )
        for (endpoint, variant, instance), count in self.loaded().items():
            gauge.add_metric([endpoint, variant, instance], count)
        yield gauge
