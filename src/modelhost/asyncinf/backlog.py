"""An asynchronous endpoint's backlog as ``modelhost queue`` shows it: the requests not yet
ended, oldest first (modelhost's own GET ``/modelhost/endpoints/<name>/queue``)."""

from __future__ import annotations

from typing import Any

from modelhost.state.async_queue import AsyncQueue

MAX_LISTED = 1000


def backlog_summary(queue: AsyncQueue, name: str, now: float) -> dict[str, Any]:
    requests = queue.open_requests(name, limit=MAX_LISTED)
    backlog = queue.backlogs().get(name.lower())
    size = backlog.size if backlog else 0
    oldest = round(now - backlog.oldest, 1) if backlog and backlog.oldest else 0.0
    rows = [
        {
            "inference_id": r.inference_id,
            "status": r.status.value,
            "attempts": r.attempts,
            "age_s": round(now - r.created, 1),
            "input": r.input_location,
            "output": r.output_location,
        }
        for r in requests
    ]
    return {"endpoint": name, "backlog": size, "oldest_age_s": oldest, "requests": rows}
