"""Transform job policies (pure): the effective batch parameters and who does which file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelhost.state.transform_jobs import TransformPlan

DEFAULT_MAX_CONCURRENT = 1
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_STRATEGY = "SingleRecord"
MB = 1024 * 1024
_STRATEGIES = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}


@dataclass(frozen=True, slots=True)
class BatchParams:
    max_concurrent: int
    max_payload_mb: int  # 0: no limit
    multi_record: bool

    @property
    def limit(self) -> int | None:
        return None if self.max_payload_mb == 0 else self.max_payload_mb * MB


def batch_environment(plan: TransformPlan) -> dict[str, str]:
    """What the container is told: SAGEMAKER_BATCH, and the parameters the request set."""
    env = {"SAGEMAKER_BATCH": "true"}
    if plan.max_payload_mb is not None:
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(plan.max_payload_mb)
    if plan.strategy is not None:
        env["SAGEMAKER_BATCH_STRATEGY"] = (
            "MULTI_RECORD" if plan.strategy == "MultiRecord" else "SINGLE_RECORD"
        )
    if plan.max_concurrent is not None:
        env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(plan.max_concurrent)
    return env


def parse_execution_parameters(status: int, body: bytes) -> dict[str, Any]:
    """A container's GET /execution-parameters answer, or {} when it has none (any non-200,
    or a body that is not a JSON object)."""
    if status != 200:
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def effective(plan: TransformPlan, container: dict[str, Any]) -> BatchParams:
    """Precedence: the request, then the container's /execution-parameters, then defaults.
    MaxConcurrentTransforms 0 in a request means "not set"."""
    concurrent = plan.max_concurrent or _int(container.get("MaxConcurrentTransforms"), 1)
    payload = plan.max_payload_mb
    if payload is None:
        payload = _int(container.get("MaxPayloadInMB"), 0)
    strategy = plan.strategy or _STRATEGIES.get(str(container.get("BatchStrategy")))
    return BatchParams(
        concurrent or DEFAULT_MAX_CONCURRENT,
        DEFAULT_MAX_PAYLOAD_MB if payload is None else payload,
        (strategy or DEFAULT_STRATEGY) == "MultiRecord",
    )


def _int(value: Any, minimum: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= 100:
        return value
    return None


def assign(count: int, instances: int) -> list[list[int]]:
    """Files (by index, in key order) spread across instances round-robin; a file never
    spans instances."""
    return [list(range(i, count, instances)) for i in range(instances)]
