"""Hot-path upstream HTTP/1.1 client: a pooled keep-alive connection per instance.

One `UpstreamPool` per instance (host, port). Each connection carries one request at a
time; idle connections are reused last-in-first-out. The wire work is raw asyncio
(`loop.create_connection` + an `asyncio.Protocol`) and `httptools.HttpResponseParser`,
because generic clients cost several times the router's whole budget (DESIGN.md).

Streaming seam: `_Connection.body_sink`, when set, receives each body chunk as it is
parsed instead of the chunks being buffered into `UpstreamResponse.body`.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

__all__ = [
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
]

_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")
_NO_BODY_STATUSES = (204, 304)


class UpstreamError(Exception):
    """Base of every failure talking to an instance; `reason` says what happened."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamConnectError(UpstreamError):
    """Could not connect (the instance is gone or not listening), or the pool is closed."""


class UpstreamTimeout(UpstreamError):
    """No full response arrived within the request's timeout."""


class UpstreamProtocolError(UpstreamError):
    """Malformed response, or the connection dropped before the response was complete."""


class _ClosedBeforeResponse(UpstreamProtocolError):
    """The connection closed before any response byte: safe to retry on a fresh one."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses responses and resolves one waiter at a time."""

    __slots__ = (
        "_chunks",
        "_eof_body",
        "_framed",
        "_head_only",
        "_headers",
        "_live",
        "_parser",
        "_status",
        "_timer",
        "_waiter",
        "body_sink",
        "closed",
        "got_bytes",
        "reusable",
        "transport",
    )

    def __init__(self, live: set[_Connection]) -> None:
        self._live = live
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._framed = False
        self._eof_body = False
        self._head_only = False
        self.body_sink: Callable[[bytes], None] | None = None
        self.got_bytes = False
        self.reusable = False
        self.closed = False

    # -- exchange, called by the pool --------------------------------------------------

    def send(
        self, data: bytes, deadline: float, timeout: float, head_only: bool
    ) -> asyncio.Future[UpstreamResponse]:
        """Write one request; the future resolves with its response or an UpstreamError."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._on_timeout, timeout)
        self._head_only = head_only
        self.got_bytes = False
        self.reusable = False
        self.transport.write(data)
        return waiter

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def fail(self, exc: UpstreamError) -> None:
        """Fail the pending request (if any) and drop the connection."""
        self._resolve_error(exc)
        self.abort()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop: no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.fail(UpstreamProtocolError(f"malformed response from instance: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the pending request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._live.discard(self)
        if self._waiter is None:
            return
        if self._eof_body and exc is None:
            self._finish()  # body delimited by end of stream
        elif not self.got_bytes:
            self._resolve_error(_ClosedBeforeResponse("connection closed before any response"))
        else:
            self._resolve_error(UpstreamProtocolError("connection closed mid-response"))

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._waiter is None:
            raise UpstreamProtocolError("unsolicited data on an idle connection")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _FRAMING_HEADERS:
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._status = self._parser.get_status_code()
        self.reusable = self._parser.should_keep_alive() and status != 101
        if self._head_only and status >= 200:
            self.reusable = False  # the parser cannot know a HEAD response has no body
            self._finish()
        elif not self._framed and status >= 200 and status not in _NO_BODY_STATUSES:
            self._eof_body = True

    def on_body(self, body: bytes) -> None:
        if self.body_sink is not None:
            self.body_sink(body)
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx informational: the real response follows
            self._headers = []
            self._framed = False
            return
        if self._waiter is not None:
            self._finish()

    # -- internals ---------------------------------------------------------------------

    def _finish(self) -> None:
        response = UpstreamResponse(self._status, self._headers, b"".join(self._chunks))
        waiter = self._take_waiter()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _resolve_error(self, exc: UpstreamError) -> None:
        waiter = self._take_waiter()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _take_waiter(self) -> asyncio.Future[UpstreamResponse] | None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._headers = []  # handed to the response; the chunks were copied by join
        self._chunks.clear()
        self._framed = self._eof_body = False
        return waiter

    def _on_timeout(self, timeout: float) -> None:
        self.fail(UpstreamTimeout(f"no complete response from instance within {timeout:g} s"))


class UpstreamPool:
    """Keep-alive connections to one instance; `request` sends one HTTP/1.1 request.

    `headers` must not contain Host, Content-Length, Transfer-Encoding or Connection:
    the pool writes Host and Content-Length itself.
    """

    def __init__(
        self, host: str, port: int, *, max_idle: int = 64, connect_timeout: float = 2.0
    ) -> None:
        self._host = host
        self._port = port
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._host_header = self._address.encode("ascii")
        self._idle: list[_Connection] = []
        self._live: set[_Connection] = set()
        self._in_flight = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Requests currently outstanding on this pool."""
        return self._in_flight

    @property
    def idle(self) -> int:
        """Connections kept open for reuse."""
        return len(self._idle)

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> UpstreamResponse:
        """Send one request and return the whole response, or raise an UpstreamError."""
        if self._closed:
            raise UpstreamConnectError(f"pool for {self._address} is closed")
        data = self._encode(method, path, headers, body)
        head_only = method == b"HEAD"
        deadline = asyncio.get_running_loop().time() + timeout
        self._in_flight += 1
        try:
            conn = self._pop_idle()
            if conn is not None:
                try:
                    return await self._exchange(conn, data, deadline, timeout, head_only)
                except _ClosedBeforeResponse:
                    pass  # the instance closed the idle keep-alive connection: retry once
            conn = await self._connect(deadline, timeout)
            try:
                return await self._exchange(conn, data, deadline, timeout, head_only)
            except _ClosedBeforeResponse as exc:
                raise UpstreamProtocolError(exc.reason) from None
        finally:
            self._in_flight -= 1

    async def close(self) -> None:
        """Close every connection; outstanding requests fail with UpstreamConnectError."""
        self._closed = True
        self._idle.clear()
        for conn in list(self._live):
            conn.fail(UpstreamConnectError(f"pool for {self._address} was closed"))
        await asyncio.sleep(0)  # let the transports run connection_lost

    def _encode(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        parts = [method, b" ", path, b" HTTP/1.1\r\nHost: ", self._host_header]
        parts += (b"\r\nContent-Length: ", b"%d" % len(body), b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", body)
        return b"".join(parts)

    def _pop_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
        return None

    async def _exchange(
        self, conn: _Connection, data: bytes, deadline: float, timeout: float, head_only: bool
    ) -> UpstreamResponse:
        waiter = conn.send(data, deadline, timeout, head_only)
        try:
            response = await waiter
        except BaseException:
            conn.abort()  # timeout, error or cancellation: never reuse a half-used connection
            raise
        self._release(conn)
        return response

    def _release(self, conn: _Connection) -> None:
        idle = self._idle
        if conn.reusable and len(idle) < self._max_idle and conn.usable() and not self._closed:
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, deadline: float, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        budget = min(self._connect_timeout, deadline - loop.time())
        live = self._live
        try:
            async with asyncio.timeout(budget):
                _, conn = await loop.create_connection(
                    lambda: _Connection(live), self._host, self._port
                )
        except TimeoutError:
            if budget < self._connect_timeout:
                raise UpstreamTimeout(f"no response within {timeout:g} s (connecting)") from None
            raise UpstreamConnectError(
                f"connecting to instance at {self._address} timed out after {budget:g} s"
            ) from None
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise UpstreamConnectError(
                f"cannot connect to instance at {self._address}: {reason}"
            ) from exc
        if self._closed:
            conn.abort()
            raise UpstreamConnectError(f"pool for {self._address} was closed")
        return conn
