"""The JSON-1.0 and rpc-v2-cbor wires of an awsQueryCompatible service (CloudWatch): the same
operation handlers and error codes as its awsQuery wire (``QueryService``), other framing.

- JSON 1.0: ``POST /`` with ``X-Amz-Target: <targetPrefix>.<Op>``, a JSON body;
- rpc-v2-cbor: ``POST /service/<targetPrefix>/operation/<Op>``, ``smithy-protocol:
  rpc-v2-cbor``, a CBOR body (what botocore sends for CloudWatch when its model lists it).

Errors keep the query codes of ``QUERY_ERRORS`` (api/query.py, the one table of statuses): the
body's ``__type`` is the model's error shape (``InvalidParameterValueException``) where it has
one, and ``x-amzn-query-error: <code>;<Sender|Receiver>`` gives botocore the query code, which
is what boto3 reports as ``Error.Code``, as with the real service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from modelhost.api import cbor
from modelhost.api.query import QUERY_ERRORS, Caller, QueryError, QueryService, query_code
from modelhost.api.serialize import request_id
from modelhost.errors import SerializationException, ValidationException

log = logging.getLogger(__name__)

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
JSON_10 = b"application/x-amz-json-1.0"
CBOR = b"application/cbor"


class RpcService:
    def __init__(self, query: QueryService) -> None:
        self.query = query
        self.model: Any = query.model
        self.prefix = str(self.model.metadata.get("targetPrefix", ""))
        self.error_shapes: dict[str, str] = {}
        for name in self.model.shape_names:
            shape = self.model.shape_for(name)
            if shape.metadata.get("exception"):
                code = shape.metadata.get("error", {}).get("code", name)
                self.error_shapes[code] = name

    def handle_json(self, target: str | None, body: bytes, headers: Mapping[str, str]) -> Reply:
        prefix, _, op = (target or "").partition(".")
        return self._handle(op if prefix == self.prefix else "", body, headers, cbor_wire=False)

    def handle_cbor(self, service: str, op: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return self._handle(op if service == self.prefix else "", body, headers, cbor_wire=True)

    def _handle(self, op: str, body: bytes, headers: Mapping[str, str], cbor_wire: bool) -> Reply:
        rid = request_id()
        try:
            if not op or op not in self.query.handlers:
                raise self._unknown(op)
            raw = _decode(body, cbor_wire)
            request = self.query.shapes.parse_input(op, raw)
            result = self.query.handlers[op](Caller.from_headers(headers), request)
            if cbor_wire:
                shape = self.model.operation_model(op).output_shape
                payload = cbor.encode_shaped(shape, result) if shape is not None else b""
                return 200, _headers(rid, True), payload
            out = self.query.shapes.serialize_output(op, result)
            return 200, _headers(rid, False), json.dumps(out).encode()
        except (ValidationException, SerializationException, QueryError) as err:
            return self._error(query_code(err), err.message, rid, cbor_wire)
        except Exception:
            log.exception("internal error handling %s.%s (request %s)", self.prefix, op, rid)
            message = f"An internal error occurred (request {rid}); see the server log."
            return self._error("InternalFailure", message, rid, cbor_wire)

    def _unknown(self, op: str) -> QueryError:
        if op and self.query.shapes.has_operation(op):
            return QueryError("InvalidAction", f"Operation {op} is not supported by modelhost yet.")
        return QueryError("InvalidAction", f"Could not find operation {op or '(none)'}.")

    def _error(self, code: str, message: str, rid: str, cbor_wire: bool) -> Reply:
        return rpc_error(code, self.error_shapes.get(code, code), message, rid, cbor_wire)


def rpc_error(code: str, type_: str, message: str, rid: str, cbor_wire: bool) -> Reply:
    """A JSON 1.0 or rpc-v2-cbor error of an awsQueryCompatible service: ``code`` is one of
    ``QUERY_ERRORS``, ``type_`` the body's ``__type``."""
    status, fault = QUERY_ERRORS[code]
    body = {"__type": type_, "message": message}
    headers = [*_headers(rid, cbor_wire), (b"x-amzn-query-error", f"{code};{fault}".encode())]
    payload = cbor.encode(body) if cbor_wire else json.dumps(body).encode()
    return status, headers, payload


def _decode(body: bytes, cbor_wire: bool) -> dict[str, Any]:
    if not (body if cbor_wire else body.strip()):
        return {}
    if cbor_wire:
        data = cbor.decode(body)
    else:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationException(f"Request body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # json's decoder recurses once per level of nesting
            raise SerializationException("Request body is nested too deeply.") from exc
    if not isinstance(data, dict):
        raise SerializationException("Request body must be an object.")
    return data


def _headers(rid: str, cbor_wire: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", CBOR if cbor_wire else JSON_10),
        (b"x-amzn-requestid", rid.encode()),
    ]
    if cbor_wire:
        headers.append((b"smithy-protocol", b"rpc-v2-cbor"))
    return headers
