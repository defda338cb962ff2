"""What asynchronous inference works with: typed records, no PascalCase (api/ translates).

``AsyncEndpointConfig`` is an endpoint's AsyncInferenceConfig; ``AsyncRequest`` is one queued
InvokeEndpointAsync as the queue (state/async_queue.py) keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# SageMaker's defaults when the request leaves them out (CONTRACT.md 1.2, 7).
DEFAULT_TTL_S = 21600
DEFAULT_INVOCATION_TIMEOUT_S = 900
# MaxConcurrentInvocationsPerInstance when the config leaves it out ("SageMaker chooses").
DEFAULT_MAX_CONCURRENT = 4


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # claimed by a worker, under a lease
    DONE = "done"  # the output object exists
    FAILED = "failed"  # the failure object exists (or could not be written: see reason)


@dataclass(frozen=True, slots=True)
class AsyncEndpointConfig:
    """An async endpoint's settings, from its deployed endpoint config."""

    endpoint: str
    output_path: str
    failure_path: str | None = None
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    success_topic: str | None = None
    error_topic: str | None = None
    # Which notifications carry the response itself: "success", "error".
    include_response_in: frozenset[str] = frozenset()


@dataclass(slots=True)
class AsyncRequest:
    """One InvokeEndpointAsync: where its input is, where its result goes, how long it may
    wait (``expires``, epoch seconds) and run (``timeout_s``)."""

    request_id: str  # the queue's own key (InferenceIds may repeat)
    endpoint: str
    inference_id: str
    input_location: str
    output_location: str
    failure_location: str
    created: float
    expires: float
    timeout_s: float
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    status: RequestStatus = RequestStatus.QUEUED
    attempts: int = 0
    reason: str | None = None
    started: float | None = None
    finished: float | None = None
    seq: int = 0  # FIFO order within the queue, set by the store
    body: bytes | None = None  # an input given inline (the request's Body), not by location
