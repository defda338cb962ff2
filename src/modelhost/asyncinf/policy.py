"""Asynchronous inference's rules as pure functions: where results go, how many requests an
endpoint may start, which instance takes one, and when a failed attempt is tried again."""

from __future__ import annotations

import json
from collections.abc import Sequence

from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest

# An attempt that ends because the instance went away (not a model error, not a timeout) is
# tried again, up to this many attempts in all.
MAX_ATTEMPTS = 3


def join_location(base: str, *parts: str) -> str:
    """``base`` with path ``parts`` appended, one slash between each."""
    out = base.rstrip("/")
    for part in parts:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def result_locations(
    config: AsyncEndpointConfig,
    inference_id: str,
    extension: str | None = None,
    filename: str | None = None,
) -> tuple[str, str]:
    """The output and failure objects of a request: ``<S3OutputPath>[/<extension>]/<Filename
    or InferenceId.out>`` and ``<S3FailurePath>[/<extension>]/<InferenceId>-error.out``
    (beside the output when the config has no S3FailurePath)."""
    ext = extension or ""
    output = join_location(config.output_path, ext, filename or f"{inference_id}.out")
    failure_base = config.failure_path or config.output_path
    return output, join_location(failure_base, ext, f"{inference_id}-error.out")


def free_slots(loads: Sequence[int], max_concurrent: int) -> int:
    """How many more requests instances with these loads may take."""
    return sum(max(0, max_concurrent - load) for load in loads)


def pick_instance(loads: Sequence[int], max_concurrent: int) -> int | None:
    """The index of the least-loaded instance with room, or None."""
    best: int | None = None
    for i, load in enumerate(loads):
        if load < max_concurrent and (best is None or load < loads[best]):
            best = i
    return best


def expired(req: AsyncRequest) -> bool:
    """Whether a claimed request was first started after its RequestTTLSeconds ran out (a
    request started in time never expires, not even when a restart starts it again)."""
    return req.started is not None and req.started > req.expires


def retry(attempts: int, max_attempts: int = MAX_ATTEMPTS) -> bool:
    """Whether a request whose instance went away gets another attempt."""
    return attempts < max_attempts


def expiry_reason(req: AsyncRequest) -> str:
    ttl = round(req.expires - req.created)
    return (
        f"Request {req.inference_id} expired: it waited in the queue longer than its "
        f"RequestTTLSeconds ({ttl} s)."
    )


def timeout_reason(req: AsyncRequest) -> str:
    return (
        f"Request {req.inference_id} timed out: the model did not answer within its "
        f"InvocationTimeoutSeconds ({req.timeout_s:g} s)."
    )


def gone_reason(req: AsyncRequest, detail: str) -> str:
    return (
        f"Request {req.inference_id} failed after {req.attempts} attempts: the instance "
        f"serving it went away ({detail})."
    )


def failure_document(code: str, reason: str) -> bytes:
    """A failure object's content: JSON, ``{"ErrorCode": ..., "Message": ...}``, which the
    SageMaker SDK's AsyncPredictor hands to the predictor's deserializer (JSON or bytes)."""
    return json.dumps({"ErrorCode": code, "Message": reason}).encode()
