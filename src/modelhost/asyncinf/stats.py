"""Asynchronous inference's counters, per endpoint (lower-cased): what CloudWatch's
``AWS/SageMaker`` async metrics count (CONTRACT.md 10). The backlog gauges come from the queue
itself (state/async_queue.py ``backlogs``)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

COUNTERS = (
    "InvocationsProcesssed",  # sic: SageMaker's spelling
    "InvocationFailures",
    "ExpiredRequests",
    "RequestDownloadFailures",
    "ResponseUploadFailures",
    "NotificationFailures",
)
# Sums, in seconds: TimeInBacklog (enqueue to start), TotalProcessingTime (enqueue to output).
SUMS = ("TimeInBacklog", "TotalProcessingTime")


@dataclass
class AsyncStats:
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    )
    sums: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(SUMS, 0.0))
    )

    def _count(self, endpoint: str, name: str) -> None:
        self.counts[endpoint.lower()][name] += 1

    def started(self, endpoint: str, waited_s: float) -> None:
        self.sums[endpoint.lower()]["TimeInBacklog"] += max(0.0, waited_s)

    def processed(self, endpoint: str, total_s: float) -> None:
        self._count(endpoint, "InvocationsProcesssed")
        self.sums[endpoint.lower()]["TotalProcessingTime"] += max(0.0, total_s)

    def invocation_failed(self, endpoint: str) -> None:
        self._count(endpoint, "InvocationFailures")

    def expired(self, endpoint: str) -> None:
        self._count(endpoint, "ExpiredRequests")

    def download_failed(self, endpoint: str) -> None:
        self._count(endpoint, "RequestDownloadFailures")

    def upload_failed(self, endpoint: str) -> None:
        self._count(endpoint, "ResponseUploadFailures")

    def notification_failed(self, endpoint: str) -> None:
        self._count(endpoint, "NotificationFailures")
