"""Hot-path upstream HTTP/1.1 client: a pooled keep-alive connection per instance.

One `UpstreamPool` per instance (host, port). Each connection (upstream_conn.py) carries
one request at a time; idle connections are reused last-in-first-out. The wire work is raw
asyncio (`loop.create_connection` + an `asyncio.Protocol`) and `httptools.HttpResponseParser`,
because generic clients cost several times the router's whole budget (DESIGN.md). `submit`
is the hot path's callback form; `request` and `stream` are coroutines.

Streaming: `stream` returns an `UpstreamStream` once the response head is in; its body
arrives through the connection's sinks (`head_sink`, `body_sink`, `chunk_done`) as it is
parsed, one part per HTTP chunk, and is read with `async for`. `request` never sets them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any

from modelhost.router.upstream_conn import Done, UpstreamConnection
from modelhost.router.upstream_pipe import MAX_DEPTH as PIPE_DEPTH
from modelhost.router.upstream_pipe import Pipeline
from modelhost.router.upstream_stream import UpstreamStream
from modelhost.router.upstream_types import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
    _ClosedBeforeResponse,
)

PIPE_RETRY_S = 1.0  # after a failed connect of the pipelined connection, wait this long

__all__ = [
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamStream",
    "UpstreamTimeout",
]


class UpstreamPool:
    """Keep-alive connections to one instance; `request` sends one HTTP/1.1 request.

    `headers` must not contain Host, Content-Length, Transfer-Encoding or Connection:
    the pool writes Host and Content-Length itself.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_idle: int = 64,
        connect_timeout: float = 2.0,
        unix_path: str | None = None,
        pipelined: bool = False,
    ) -> None:
        self._host = host
        self._port = port
        # A Unix socket to the same server, when it offers one: a loopback TCP hop costs more
        # kernel time per request than the router's own work.
        self._unix_path = unix_path
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._host_header = self._address.encode("ascii")
        self._host_end = b"Host: %b\r\n\r\n" % self._host_header
        self._idle: list[UpstreamConnection] = []
        self._live: set[UpstreamConnection] = set()
        self.in_flight = 0  # requests outstanding on this pool (the router's least-loaded pick)
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # submit's connects
        self._loop: asyncio.AbstractEventLoop | None = None
        # One pipelined connection (upstream_pipe.py) for the hot path, on the Unix socket of
        # a built-in single-worker instance only.
        self.pipelined = pipelined and unix_path is not None
        self._pipe: Pipeline | None = None
        self._pipe_connecting = False
        self._pipe_failed_at = -1e9

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
        data, head_only, deadline = self._begin(method, path, headers, body, timeout)
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
            self.in_flight -= 1

    def submit(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        on_done: Done,
    ) -> None:
        """`request` without a coroutine: ``on_done`` gets the whole response or an
        UpstreamError, exactly once. With an idle connection at hand (the hot path) no task or
        future is made; the response's callback runs inside the connection's read."""
        self.send(self._encode(method, path, headers, body), timeout, on_done, method == b"HEAD")

    def tail(self, length: int) -> bytes:
        """The end of a request head with a body of ``length`` bytes: Content-Length, Host
        and the blank line (for ``send``)."""
        return b"Content-Length: %d\r\n%b" % (length, self._host_end)

    def acquire(self) -> UpstreamConnection | None:
        """The hot path's shortcut: an idle connection, with a request counted in flight on
        it, or None (then use ``send``). Give it back with ``release_ok`` after a complete
        response, or ``settle`` otherwise."""
        if self._closed:
            return None
        conn = self._pop_idle()
        if conn is not None:
            self.in_flight += 1
        return conn

    def pipe(self) -> Pipeline | None:
        """The open pipelined connection, or None (then it is being connected, or this pool
        has none: use ``acquire``/``send``). A request sent on it is counted in ``in_flight``
        by the caller."""
        pipe = self._pipe
        if pipe is not None and pipe.open and pipe.depth < PIPE_DEPTH:
            return pipe
        if (pipe is None or not pipe.open) and not self._pipe_connecting and not self._closed:
            loop = self._loop or asyncio.get_running_loop()
            if loop.time() - self._pipe_failed_at > PIPE_RETRY_S:
                self._pipe_connecting = True
                self._spawn(self._connect_pipe())
        return None

    async def _connect_pipe(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, pipe = await loop.create_unix_connection(
                    lambda: Pipeline(self._pipe_lost), self._unix_path
                )
        except (OSError, TimeoutError):
            self._pipe_failed_at = loop.time()
            return
        finally:
            self._pipe_connecting = False
        if self._closed:
            pipe.close()
            return
        self._pipe = pipe

    def _pipe_lost(self, pipe: Pipeline) -> None:
        if self._pipe is pipe:
            self._pipe = None
        if pipe.streamed:
            # A model that answers in chunks (a generator): the built-in server takes no
            # requests pipelined behind such an answer, so each would be sent twice.
            self.pipelined = False

    def release_ok(self, conn: UpstreamConnection) -> None:
        self.in_flight -= 1
        self._release(conn)

    def deadline(self, timeout: float) -> float:
        """``timeout`` seconds from now, on the loop's clock."""
        loop = self._loop
        if loop is None:  # cached: get_running_loop() costs a system call on Python 3.11
            loop = self._loop = asyncio.get_running_loop()
        return loop.time() + timeout

    def send(self, data: bytes, timeout: float, on_done: Done, head_only: bool = False) -> None:
        """``submit`` for a request already in bytes (``head_only``: a HEAD request, whose
        response has no body); the head may end with ``tail``."""
        if self._closed:
            on_done(UpstreamConnectError(f"pool for {self._address} is closed"))
            return
        self.in_flight += 1
        deadline = self.deadline(timeout)
        conn = self._pop_idle()
        if conn is None:
            self._spawn(self._connect_and_start(data, deadline, timeout, head_only, on_done))
            return

        def done(result: UpstreamResponse | UpstreamError) -> None:
            if type(result) is UpstreamResponse:
                self.in_flight -= 1
                self._release(conn)
                on_done(result)
            elif isinstance(result, _ClosedBeforeResponse):
                # the instance closed the idle keep-alive connection: retry once on a new one
                conn.abort()
                self._spawn(self._connect_and_start(data, deadline, timeout, head_only, on_done))
            else:
                self.settle(conn, result, on_done)

        conn.start(data, deadline, timeout, head_only, done)

    async def stream(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
        first_byte_timeout: float,
    ) -> UpstreamStream:
        """Send one request and return once the response head is in; read the body from the
        returned stream as it arrives. The head must come within `first_byte_timeout` and the
        whole body within `timeout` (both from now), else UpstreamTimeout (from here before
        the head, from the stream after it). Not for HEAD requests.
        """
        if self._closed:
            raise UpstreamConnectError(f"pool for {self._address} is closed")
        data = self._encode(method, path, headers, body)
        now = asyncio.get_running_loop().time()
        deadline = now + timeout
        first_timeout = min(timeout, first_byte_timeout)
        first = now + first_timeout
        self.in_flight += 1  # until the stream is done (see _stream_done)
        try:
            conn = self._pop_idle()
            if conn is not None:
                try:
                    return await self._open(conn, data, first, first_timeout, deadline, timeout)
                except _ClosedBeforeResponse:
                    pass  # the instance closed the idle keep-alive connection: retry once
            conn = await self._connect(first, first_timeout)
            try:
                return await self._open(conn, data, first, first_timeout, deadline, timeout)
            except _ClosedBeforeResponse as exc:
                raise UpstreamProtocolError(exc.reason) from None
        except BaseException:
            self.in_flight -= 1
            raise

    async def close(self) -> None:
        """Close every connection; outstanding requests fail with UpstreamConnectError."""
        self._closed = True
        self._idle.clear()
        if self._pipe is not None:
            self._pipe.close()
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._live):
            conn.fail(UpstreamConnectError(f"pool for {self._address} was closed"))
        await asyncio.sleep(0)  # let the transports run connection_lost

    def _begin(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> tuple[bytes, bool, float]:
        """Count a request in flight: its bytes, whether it is a HEAD, and its deadline."""
        self.in_flight += 1
        return self._encode(method, path, headers, body), method == b"HEAD", self.deadline(timeout)

    def _encode(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        parts = [method, b" ", path, b" HTTP/1.1\r\nHost: ", self._host_header]
        parts += (b"\r\nContent-Length: ", b"%d" % len(body), b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", body)
        return b"".join(parts)

    def _pop_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
        return None

    async def _exchange(
        self,
        conn: UpstreamConnection,
        data: bytes,
        deadline: float,
        timeout: float,
        head_only: bool,
    ) -> UpstreamResponse:
        waiter = conn.send(data, deadline, timeout, head_only)
        try:
            response = await waiter
        except BaseException:
            conn.abort()  # timeout, error or cancellation: never reuse a half-used connection
            raise
        self._release(conn)
        return response

    async def _connect_and_start(
        self, data: bytes, deadline: float, timeout: float, head_only: bool, on_done: Done
    ) -> None:
        try:
            conn = await self._connect(deadline, timeout)
        except UpstreamError as exc:
            self.in_flight -= 1
            on_done(exc)
            return
        except asyncio.CancelledError:  # the pool is closing
            self.in_flight -= 1
            on_done(UpstreamConnectError(f"pool for {self._address} was closed"))
            raise

        def done(result: UpstreamResponse | UpstreamError) -> None:
            if isinstance(result, _ClosedBeforeResponse):
                result = UpstreamProtocolError(result.reason)
            self.settle(conn, result, on_done)

        conn.start(data, deadline, timeout, head_only, done)

    def retry(self, data: bytes, deadline: float, timeout: float, on_done: Done) -> None:
        """A request whose idle connection closed before any response byte (``acquire``):
        once more on a new connection."""
        self._spawn(self._connect_and_start(data, deadline, timeout, False, on_done))

    def settle(
        self, conn: UpstreamConnection, result: UpstreamResponse | UpstreamError, on_done: Done
    ) -> None:
        """Give back a connection (from ``acquire``, or a new one) and pass its request's
        outcome on."""
        self.in_flight -= 1
        if isinstance(result, UpstreamResponse):
            self._release(conn)
        else:
            conn.abort()  # never reuse a half-used connection
        on_done(result)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(
        self,
        conn: UpstreamConnection,
        data: bytes,
        first: float,
        first_timeout: float,
        deadline: float,
        timeout: float,
    ) -> UpstreamStream:
        stream = UpstreamStream(self, conn, deadline, timeout)
        try:
            await stream._start(data, first, first_timeout)
        except BaseException:
            stream._detach()
            conn.abort()  # timeout, error or cancellation: never reuse a half-used connection
            raise
        return stream

    def _stream_done(self, conn: UpstreamConnection, complete: bool) -> None:
        """A stream handed its connection back: reuse it if the body was read to the end."""
        self.in_flight -= 1
        if complete:
            self._release(conn)
        else:
            conn.abort()

    def _release(self, conn: UpstreamConnection) -> None:
        idle = self._idle
        if conn.reusable and len(idle) < self._max_idle and conn.usable() and not self._closed:
            idle.append(conn)
        else:
            conn.close()

    async def _connect(self, deadline: float, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        budget = min(self._connect_timeout, deadline - loop.time())
        live = self._live
        try:
            async with asyncio.timeout(budget):
                if self._unix_path is not None:
                    _, conn = await loop.create_unix_connection(
                        lambda: UpstreamConnection(live), self._unix_path
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(live), self._host, self._port
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
