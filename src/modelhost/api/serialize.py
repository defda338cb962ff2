"""The one place where errors become HTTP, for both wire protocols.

awsJson1.1 (control plane): HTTP status from the error, body ``{"__type", "message"}``, headers
``x-amzn-ErrorType`` and ``x-amzn-RequestId``. rest-json (runtime API) uses the same headers with
body ``{"message", ...extra}`` (ModelError adds OriginalStatusCode, OriginalMessage, LogStreamArn).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from modelhost.errors import ServiceError

JSON_11 = b"application/x-amz-json-1.1"
REST_JSON = b"application/json"


def request_id() -> str:
    return str(uuid.uuid4())


def json_error(err: ServiceError, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"__type": err.code, "message": err.message}).encode()
    return err.status, _headers(err, rid, JSON_11), body


def rest_error(err: ServiceError, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    payload: dict[str, Any] = {"message": err.message, **err.extra}
    return err.status, _headers(err, rid, REST_JSON), json.dumps(payload).encode()


def _headers(err: ServiceError, rid: str, content_type: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", content_type),
        (b"x-amzn-errortype", err.code.encode()),
        (b"x-amzn-requestid", rid.encode()),
    ]


def json_ok(payload: dict[str, Any], rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [(b"content-type", JSON_11), (b"x-amzn-requestid", rid.encode())]
    return 200, headers, json.dumps(payload).encode()
