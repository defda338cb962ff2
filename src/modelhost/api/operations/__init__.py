"""Operation handlers, one module per resource; ``OPERATIONS`` maps each wire name to one."""

from __future__ import annotations

from modelhost.api.operations import endpoint_configs, endpoints, models, tags, transform_jobs
from modelhost.api.operations.context import Context, Handler

OPERATIONS: dict[str, Handler] = {
    **models.HANDLERS,
    **endpoint_configs.HANDLERS,
    **endpoints.HANDLERS,
    **tags.HANDLERS,
    **transform_jobs.HANDLERS,
}

__all__ = ["OPERATIONS", "Context", "Handler"]
