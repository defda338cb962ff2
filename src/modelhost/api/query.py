"""The awsQuery wire (STS here; CloudWatch later): a form-encoded ``POST /`` with ``Action`` and
``Version``, XML responses and XML errors, as botocore's ``query`` protocol sends and parses.

Parameters are read along the operation's botocore input shape (``Name.member.N`` lists,
``Name.entry.N.key``/``.value`` maps, ``Parent.Child`` structures, each member under its
``locationName``), converted to the modeled types and then validated by the same
``ServiceShapes`` walker as the JSON services, so constraint messages read the same.

Errors are codes; their HTTP status and fault type are in ``QUERY_ERRORS`` below, the one table
for this protocol (the JSON protocols' table is api/serialize.py):

- ``MissingAction`` / ``InvalidAction``: no ``Action``, or one the service lacks or modelhost
  does not offer;
- ``ValidationError``: a modeled constraint (required, length, range, pattern) fails;
- ``InvalidParameterValue``: a value that cannot be the modeled type (``DurationSeconds=abc``);
- ``InternalFailure``: a bug on our side (500, fault type ``Receiver``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from modelhost.api.serialize import request_id
from modelhost.api.shapes import ServiceShapes, shapes_for
from modelhost.errors import SerializationException, ServiceError, ValidationException

log = logging.getLogger(__name__)

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
FORM = "application/x-www-form-urlencoded"

# code -> (HTTP status, fault type)
QUERY_ERRORS: dict[str, tuple[int, str]] = {
    "MissingAction": (400, "Sender"),
    "InvalidAction": (400, "Sender"),
    "ValidationError": (400, "Sender"),
    "InvalidParameterValue": (400, "Sender"),
    "InternalFailure": (500, "Receiver"),
    # CloudWatch (also for its JSON and CBOR wires, api/rpc.py)
    "MissingParameter": (400, "Sender"),
    "InvalidParameterCombination": (400, "Sender"),
    "InvalidNextToken": (400, "Sender"),
    # authentication and authorisation (errors.AuthFailure.query_code)
    "MissingAuthenticationToken": (403, "Sender"),
    "IncompleteSignature": (403, "Sender"),
    "InvalidClientTokenId": (403, "Sender"),
    "SignatureDoesNotMatch": (403, "Sender"),
    "AccessDenied": (403, "Sender"),
    "ResourceNotFound": (404, "Sender"),
}


class QueryError(ServiceError):
    """An awsQuery error: ``code`` is one of ``QUERY_ERRORS``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Caller:
    """Who signed the request, as far as the request says (nothing is verified)."""

    access_key_id: str | None
    session_token: str | None
    # the key's secret, when the request was verified against the server's access keys
    # (auth/): it proved it holds it, so AssumeRole may hand it back
    secret: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], secret: str | None = None) -> Caller:
        auth = headers.get("authorization", "")
        key = None
        if "Credential=" in auth:
            key = auth.split("Credential=", 1)[1].split("/", 1)[0].strip() or None
        return cls(key, headers.get("x-amz-security-token"), secret)


Handler = Callable[[Caller, dict[str, Any]], dict[str, Any]]


class QueryService:
    """One awsQuery service: its botocore model, API version and operation handlers."""

    def __init__(self, service: str, handlers: dict[str, Handler]) -> None:
        self.shapes: ServiceShapes = shapes_for(service)
        self.model: Any = self.shapes.model
        self.version = str(self.model.metadata["apiVersion"])
        self.namespace = str(self.model.metadata.get("xmlNamespace", ""))
        self.handlers = handlers

    def handle(self, body: bytes, headers: Mapping[str, str], secret: str | None = None) -> Reply:
        """``secret``: the verified key's, when the server checks signatures."""
        rid = request_id()
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            op = self._operation(params.get("Action"))
            request = self._parse(op, params)
            result = self.handlers[op](Caller.from_headers(headers, secret), request)
            return 200, _headers(rid), self._response(op, result, rid).encode()
        except (ValidationException, SerializationException, QueryError) as err:
            return self._error(query_code(err), err.message, rid)
        except Exception:
            log.exception("internal error handling %s (request %s)", self.model.service_name, rid)
            message = f"An internal error occurred (request {rid}); see the server log."
            return self._error("InternalFailure", message, rid)

    def _operation(self, action: str | None) -> str:
        if not action:
            raise QueryError("MissingAction", "The request must contain the parameter Action.")
        if action not in self.handlers:
            if self.shapes.has_operation(action):
                message = f"Operation {action} is not supported by modelhost yet."
            else:
                message = f"Could not find operation {action} for version {self.version}."
            raise QueryError("InvalidAction", message)
        return action

    def _parse(self, op: str, params: dict[str, str]) -> dict[str, Any]:
        shape = self.model.operation_model(op).input_shape
        raw = _from_query(shape, params, "") if shape is not None else None
        return self.shapes.parse_input(op, raw or {})

    def _response(self, op: str, result: dict[str, Any], rid: str) -> str:
        shape = self.model.operation_model(op).output_shape
        inner = ""
        if shape is not None:
            wrapper = shape.serialization.get("resultWrapper", f"{op}Result")
            inner = f"<{wrapper}>{_members_xml(shape, result)}</{wrapper}>"
        return (
            f'<{op}Response xmlns="{self.namespace}">{inner}'
            f"<ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{op}Response>"
        )

    def _error(self, code: str, message: str, rid: str) -> Reply:
        return query_error(code, message, rid, self.namespace)


def query_error(code: str, message: str, rid: str, namespace: str = "") -> Reply:
    """An awsQuery error answer: ``code`` is one of ``QUERY_ERRORS``."""
    status, fault = QUERY_ERRORS[code]
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type>'
        f"<Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{rid}</RequestId></ErrorResponse>"
    )
    return status, _headers(rid), body.encode()


def query_code(err: ServiceError) -> str:
    if isinstance(err, ValidationException):
        return "ValidationError"
    if isinstance(err, SerializationException):
        return "InvalidParameterValue"
    return err.code


def _headers(rid: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/xml"), (b"x-amzn-requestid", rid.encode())]


# --- form parameters -> values, along the input shape --------------------------------------


def _from_query(shape: Any, params: dict[str, str], prefix: str) -> Any:
    """The value at ``prefix`` (None when absent), converted to the shape's type where the text
    allows; text that does not is passed on for the validator to refuse with AWS's message."""
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            value = _from_query(member, params, f"{prefix}.{wire}" if prefix else wire)
            if value is not None:
                out[name] = value
        return out if out or prefix == "" else None
    if kind == "list":
        return _list(shape, params, prefix)
    if kind == "map":
        return _map(shape, params, prefix)
    text = params.get(prefix)
    return None if text is None else _scalar(kind, text)


def _list(shape: Any, params: dict[str, str], prefix: str) -> list[Any] | None:
    if params.get(prefix) == "":
        return []  # botocore sends an empty list as ``Name=``
    member_name = shape.member.serialization.get("name", "member")
    base = prefix if shape.serialization.get("flattened") else f"{prefix}.{member_name}"
    items = []
    for i in range(1, len(params) + 1):
        value = _from_query(shape.member, params, f"{base}.{i}")
        if value is None:
            break
        items.append(value)
    return items or None


def _map(shape: Any, params: dict[str, str], prefix: str) -> dict[str, Any] | None:
    key_name = shape.key.serialization.get("name", "key")
    value_name = shape.value.serialization.get("name", "value")
    base = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
    out: dict[str, Any] = {}
    for i in range(1, len(params) + 1):
        key = params.get(f"{base}.{i}.{key_name}")
        if key is None:
            break
        out[key] = _from_query(shape.value, params, f"{base}.{i}.{value_name}")
    return out or None


def _scalar(kind: str, text: str) -> Any:
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        return text
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


# --- values -> XML, along the output shape -------------------------------------------------


def _members_xml(shape: Any, value: dict[str, Any]) -> str:
    parts = []
    for name, item in value.items():
        if item is None:
            continue
        member = shape.members.get(name)
        if member is None:
            raise KeyError(f"{name!r} is not a member of {shape.name}")
        parts.append(_element(member.serialization.get("name", name), member, item))
    return "".join(parts)


def _element(tag: str, shape: Any, value: Any) -> str:
    kind = shape.type_name
    if kind == "structure":
        return f"<{tag}>{_members_xml(shape, value)}</{tag}>"
    if kind == "list":
        member_tag = shape.member.serialization.get("name", "member")
        items = "".join(_element(member_tag, shape.member, v) for v in value)
        return items if shape.serialization.get("flattened") else f"<{tag}>{items}</{tag}>"
    if kind == "map":
        entries = "".join(
            f"<entry>{_element('key', shape.key, k)}{_element('value', shape.value, v)}</entry>"
            for k, v in value.items()
        )
        return f"<{tag}>{entries}</{tag}>"
    return f"<{tag}>{escape(_text(kind, value))}</{tag}>"


def _text(kind: str, value: Any) -> str:
    if kind == "timestamp" and isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "blob" and isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)
