"""InvokeEndpointAsync's two roads into the queue say the same thing: the front server's fast
path (``AsyncInvocations.dispatch``, unsigned requests) and the ASGI handler (signed ones,
behind the auth middleware). Real store and queue (SQLite); the answers compared whole."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.async_invocations import AsyncInvocations
from modelhost.api.serialize import rest_error
from modelhost.asyncinf.records import AsyncEndpointConfig
from modelhost.errors import ServiceError
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.store import Store

Answer = tuple[int, dict[bytes, bytes], bytes]
INPUT = (b"x-amzn-sagemaker-inputlocation", b"s3://bucket/in.json")
CONFIG = AsyncEndpointConfig(endpoint="Ep", output_path="s3://bucket/out")


@pytest.fixture
def handler(tmp_path: Path) -> AsyncInvocations:
    queue = AsyncQueue(Store(f"sqlite:///{tmp_path / 'state.db'}"))
    return AsyncInvocations(
        queue._store, queue, lambda _: None, "123456789012", known=lambda: {"ep": CONFIG}
    )


def _head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    fields = dict(line.split(b": ", 1) for line in lines[1:] if line)
    return int(lines[0].split(b" ")[1]), fields


async def _fast(h: AsyncInvocations, name: str, headers: list[Any], body: bytes) -> Answer:
    answer: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

    def reply(head: bytes, payload: Any) -> None:
        answer.set_result((head, payload))

    h.dispatch(b"rid-1", f"/endpoints/{name}/async-invocations".encode(), headers, body, reply)
    head, payload = await asyncio.wait_for(answer, 10)
    status, fields = _head(head)
    return status, fields, payload


async def _asgi(h: AsyncInvocations, name: str, headers: list[Any], body: bytes) -> Answer:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    try:  # (RuntimeApp turns a ServiceError into the answer the same way)
        await h({"headers": headers}, receive, send, "rid-1", name)
    except ServiceError as err:
        status, lines, payload = rest_error(err, "rid-1")
        return status, dict(lines), payload
    fields: dict[bytes, bytes] = dict(sent[0]["headers"])
    fields.pop(b"content-length")
    return sent[0]["status"], fields, sent[1]["body"]


@pytest.mark.parametrize(
    ("name", "headers", "body"),
    [
        ("ep", [INPUT, (b"x-amzn-sagemaker-inference-id", b"same-id")], b""),
        ("EP", [(b"x-amzn-sagemaker-inference-id", b"inline")], b'{"x": 1}'),
        ("ep", [INPUT, (b"x-amzn-sagemaker-requestttlseconds", b"soon")], b""),
        ("ep", [INPUT], b"body too"),
        ("ep", [], b""),
        ("ep", [INPUT], b"x" * 128001),
        ("missing", [INPUT], b""),
    ],
)
def test_the_fast_path_and_the_asgi_handler_answer_alike(
    handler: AsyncInvocations, name: str, headers: list[Any], body: bytes
) -> None:
    async def both() -> tuple[Answer, Answer]:
        return await _fast(handler, name, headers, body), await _asgi(handler, name, headers, body)

    fast, asgi = asyncio.run(both())
    assert fast == asgi
    queued = handler.queue.open_requests("ep")
    if fast[0] == 202:
        assert fast[1][b"x-amzn-sagemaker-outputlocation"].startswith(b"s3://bucket/out/")
        assert len(queued) == 2 and len({r.request_id for r in queued}) == 2
    else:
        assert fast[0] == 400 and fast[1][b"x-amzn-errortype"] == b"ValidationError"
        assert queued == []  # a refused request changes nothing
