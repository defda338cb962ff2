"""The MMS container API (CONTRACT.md section 4) as the router speaks it to one instance, over
that instance's ``UpstreamPool``: load, unload, list. Invocations go through the pool directly
(manager.py), as InvokeEndpoint's do."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from modelhost.router.forwarder import UpstreamError, UpstreamPool, UpstreamResponse

JSON_HEADERS = [(b"Content-Type", b"application/json")]
TARGET_MODEL = b"X-Amzn-SageMaker-Target-Model"
# SageMaker lets a load go on for 360 s (CONTRACT.md section 9).
LOAD_TIMEOUT_S = 360.0
CONTROL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    status: int  # 200 loaded, 409 loaded already, 507 out of memory, else failed
    memory_bytes: int | None  # the instance's measure of the model (modelhost's extension)
    text: str


async def request(
    pool: UpstreamPool, method: bytes, path: str, body: bytes, timeout: float
) -> UpstreamResponse:
    """One control call; UpstreamError when the instance does not answer. The body travels as
    a list so the call never takes the pipelined connection: a load answers late, and
    requests pipelined behind it would wait."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[UpstreamResponse | UpstreamError] = loop.create_future()

    def answered(result: UpstreamResponse | UpstreamError) -> None:
        if not done.done():
            done.set_result(result)

    headers = JSON_HEADERS if body else []
    pool.send(pool.head(method, path.encode(), headers, len(body)), [body], timeout, answered)
    result = await done
    if isinstance(result, UpstreamError):
        raise result
    return result


def model_path(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


async def load(pool: UpstreamPool, name: str, url: str) -> LoadResult:
    body = json.dumps({"model_name": name, "url": url}).encode()
    resp = await request(pool, b"POST", "/models", body, LOAD_TIMEOUT_S)
    text = resp.body.decode("utf-8", "replace")
    memory = None
    if resp.status == 200:
        doc = _json(resp.body)
        value = doc.get("memoryBytes", doc.get("memory_bytes"))
        memory = value if isinstance(value, int) and value >= 0 else None
    return LoadResult(resp.status, memory, text)


async def unload(pool: UpstreamPool, name: str) -> int:
    """DELETE /models/<name>: its status (200, or 404 when it was not loaded)."""
    resp = await request(pool, b"DELETE", model_path(name), b"", CONTROL_TIMEOUT_S)
    return resp.status


async def listed(pool: UpstreamPool) -> list[dict[str, Any]]:
    """GET /models, every page."""
    out: list[dict[str, Any]] = []
    token = ""
    for _ in range(1000):
        path = "/models" + (f"?next_page_token={quote(token)}" if token else "")
        doc = _json((await request(pool, b"GET", path, b"", CONTROL_TIMEOUT_S)).body)
        out += [m for m in doc.get("models", []) if isinstance(m, dict)]
        token = doc.get("nextPageToken") or ""
        if not token:
            break
    return out


def invoke_head(pool: UpstreamPool, name: str, target: bytes, lines: bytes, size: int) -> bytes:
    """The head of ``POST /models/<name>/invoke`` for a client request's forwarded header
    lines (``lines``)."""
    return b"POST %b/invoke HTTP/1.1\r\n%b%b: %b\r\n%b" % (
        model_path(name).encode(),
        lines,
        TARGET_MODEL,
        target,
        pool.head_end(size),
    )


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
