"""The ASGI side of the front server (httpserver.py): the types, and ``Cycle``, one request
and its response as the ``receive``/``send`` pair the app gets. A response the app sends in one
``http.response.body`` message is one write; a body sent in parts (``more_body``) goes out with
chunked transfer encoding as it comes, waiting while the connection's writes are paused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from modelhost.http11 import LAST_CHUNK, chunk, response_head

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]
ASGI = {"version": "3.0", "spec_version": "2.3"}  # the "asgi" entry of every scope


class Connection(Protocol):
    """What a ``Cycle`` needs of its connection (httpserver.HttpProtocol)."""

    closed: asyncio.Future[None]
    write_paused: bool

    def write(self, data: bytes) -> None: ...

    def resumed(self) -> Awaitable[None]: ...


class Cycle:
    """One request and its response: the ASGI receive/send pair the app gets."""

    __slots__ = (
        "_body",
        "_chunked",
        "_no_body",
        "_proto",
        "_read",
        "done",
        "head_sent",
        "keep_alive",
        "started",
    )

    def __init__(
        self, proto: Connection, body: bytes, keep_alive: bool, no_body: bool = False
    ) -> None:
        self._proto = proto
        self._no_body = no_body  # HEAD: headers (with the body's length) but no body
        self._body = body
        self._read = False
        self._chunked = False
        self.keep_alive = keep_alive
        self.started: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.head_sent = False
        self.done = False

    async def receive(self) -> Message:
        if not self._read:
            self._read = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._proto.closed
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = (message["status"], list(message.get("headers", ())))
            return
        if kind != "http.response.body" or self.done or self.started is None:
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        proto = self._proto
        if not self.head_sent:
            self.head_sent = True
            head = self._head(body, more)
            if self._no_body:
                proto.write(head)
                self._chunked, body = False, b""
            else:
                proto.write(head + (chunk(body) if self._chunked else body))
        elif body and not self._no_body:
            proto.write(chunk(body) if self._chunked else body)
        if not more:
            if self._chunked:
                proto.write(LAST_CHUNK)
            self.done = True
        elif proto.write_paused:
            await proto.resumed()

    def _head(self, body: bytes, more: bool) -> bytes:
        assert self.started is not None
        status, headers = self.started
        head, self._chunked = response_head(status, headers, len(body), more, self.keep_alive)
        return head


async def plain(cycle: Cycle, status: int, text: bytes) -> None:
    cycle.keep_alive = False
    await cycle.send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await cycle.send({"type": "http.response.body", "body": text})
