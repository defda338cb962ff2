"""awsJson1.1 dispatch: ``X-Amz-Target: <Prefix>.<Operation>`` -> parse and validate against the
botocore model -> operation -> serialize the output. Returns (status, headers, body)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from modelhost.api import serialize
from modelhost.api.operations import Context, Handler
from modelhost.api.shapes import shapes_for
from modelhost.errors import (
    InternalFailure,
    SerializationException,
    ServiceError,
    UnknownOperationException,
)

log = logging.getLogger(__name__)

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]


class Dispatcher:
    """One awsJson1.1 service: its target prefix, botocore model and operation handlers."""

    def __init__(
        self,
        ctx: Context,
        service: str,
        prefix: str,
        handlers: dict[str, Handler],
        translate: Callable[[ServiceError], ServiceError] = lambda err: err,
    ):
        self.ctx = ctx
        self.translate = translate  # a service's own names for shared codes (Logs: validation)
        self.prefix = prefix
        self.handlers = handlers
        self.shapes = shapes_for(service)

    def handle(self, target: str | None, body: bytes) -> Reply:
        rid = serialize.request_id()
        try:
            op = self._operation(target)
            req = self.shapes.parse_input(op, _json_object(body))
            result = self.handlers[op](self.ctx, req)
            return serialize.json_ok(self.shapes.serialize_output(op, result), rid)
        except ServiceError as err:
            return serialize.json_error(self.translate(err), rid)
        except Exception:
            log.exception("internal error handling %s (request %s)", target, rid)
            return serialize.json_error(
                InternalFailure(f"An internal error occurred (request {rid}); see the server log."),
                rid,
            )

    def _operation(self, target: str | None) -> str:
        if not target:
            raise UnknownOperationException("Missing X-Amz-Target header.")
        prefix, _, op = target.partition(".")
        if prefix != self.prefix or not op:
            raise UnknownOperationException(f"Unknown target {target!r}.")
        if op not in self.handlers:
            known = self.shapes.has_operation(op)
            raise UnknownOperationException(
                f"Operation {op} is not supported by modelhost yet."
                if known
                else f"Operation {op} does not exist in the {prefix} API."
            )
        return op


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationException(f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # json's decoder recurses once per level of nesting
        raise SerializationException("Request body is nested too deeply.") from exc
    if not isinstance(data, dict):
        raise SerializationException("Request body must be a JSON object.")
    return data
