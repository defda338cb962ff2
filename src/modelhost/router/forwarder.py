"""The router's upstream client: the connections to one instance, behind one small interface.

One ``UpstreamPool`` per instance, built by the route table (routing.py) from the instance's
``Address``. The pool decides everything about how a request reaches its instance:

- the connection: the pipelined connection (upstream_pipe.py) of a built-in single-worker
  instance when it is open, else an idle keep-alive connection (upstream_conn.py, reused last
  in, first out), else a new one;
- the retry: a request whose connection closed before any byte of its answer (an idle
  connection the instance had closed, or a pipelined request that was never started) is sent
  once more on a fresh connection; a fresh connection is never retried;
- ``in_flight``, the count the router's least-loaded choice reads.

Callers use ``send`` (the whole response, to a callback: InvokeEndpoint), ``stream`` (the
response as it arrives: InvokeEndpointWithResponseStream), ``drain`` and ``close``. A request
is its head (``head``, or any head that ends with ``head_end(len(body))``) and its body, kept
apart so that a large body is written without a copy. The wire work is raw asyncio and
httptools, because generic clients cost several times the router's whole budget (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable, Coroutine
from typing import Any

from modelhost.http11 import Payload
from modelhost.publish import Address
from modelhost.router.upstream_conn import Done, UpstreamConnection
from modelhost.router.upstream_pipe import MAX_DEPTH as PIPE_DEPTH
from modelhost.router.upstream_pipe import Pipeline
from modelhost.router.upstream_stream import UpstreamStream
from modelhost.router.upstream_types import (
    ClosedBeforeResponse,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.splice import SplicedBody

PIPE_BODY_MAX = 16 * 1024
PIPE_RETRY_S = 1.0  # after a failed connect of the pipelined connection, wait this long
DRAIN_POLL_S = 0.01
# A connect that fails with one of these finds nobody listening: the instance is gone.
_GONE = frozenset({errno.ECONNREFUSED, errno.ENOENT})

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
    """Keep-alive connections to one instance.

    ``on_gone`` is called (once per failed connect) when a connect finds nobody listening, so
    the route table can stop choosing this instance at once.
    """

    def __init__(
        self,
        address: Address,
        *,
        name: str = "",
        max_idle: int = 64,
        connect_timeout: float = 2.0,
        on_gone: Callable[[UpstreamPool], None] | None = None,
    ) -> None:
        self.address = address
        self.instance_id = name or str(address)
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._on_gone = on_gone
        self._host_end = b"Host: %b\r\n\r\n" % str(address).encode("ascii")
        self._idle: list[UpstreamConnection] = []
        self._live: set[UpstreamConnection] = set()
        self.in_flight = 0  # requests outstanding on this pool (the router's least-loaded pick)
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # connects
        self._loop: asyncio.AbstractEventLoop | None = None
        # One pipelined connection for requests sent with ``send``, on the Unix socket of a
        # built-in single-worker instance only.
        self.pipelined = address.pipelined and address.unix_path is not None
        self._pipe: Pipeline | None = None
        self._pipe_connecting = False
        self._pipe_failed_at = -1e9

    @property
    def idle(self) -> int:
        """Connections kept open for reuse."""
        return len(self._idle)

    @property
    def pipeline(self) -> Pipeline | None:
        """The pipelined connection, when one is open."""
        pipe = self._pipe
        return pipe if pipe is not None and pipe.open else None

    def head_end(self, length: int) -> bytes:
        """The end of a request head with a body of ``length`` bytes: Content-Length, Host
        and the blank line."""
        return b"Content-Length: %d\r\n%b" % (length, self._host_end)

    def head(
        self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], length: int
    ) -> bytes:
        """A request head for a body of ``length`` bytes. ``headers`` must not contain Host,
        Content-Length, Transfer-Encoding or Connection: the pool writes Host and
        Content-Length itself."""
        parts = [method, b" ", path, b" HTTP/1.1\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(self.head_end(length))
        return b"".join(parts)

    def send(self, head: bytes, body: Payload | SplicedBody, timeout: float, on_done: Done) -> None:
        """Send one request; ``on_done`` gets the whole response or an UpstreamError, exactly
        once, within ``timeout`` seconds. With an open pipelined or idle connection at hand
        (the hot path) no task or future is made. A spliced body (splice.py) goes on a
        connection of its own and is retried only while none of it was taken."""
        if self.closed:
            on_done(UpstreamConnectError(f"pool for {self.address} is closed"))
            return
        self.in_flight += 1
        exchange = _Exchange(self, head, body, self._now() + timeout, timeout, on_done)
        if self.pipelined and type(body) is bytes and len(body) <= PIPE_BODY_MAX:
            pipe = self._pipe
            if pipe is not None and pipe.open and pipe.depth < PIPE_DEPTH:
                pipe.send(head, body, exchange.deadline, timeout, exchange.on_piped)
                return
            self._open_pipe()
        conn = self._pop_idle()
        if conn is None:
            self._spawn(self._send_fresh(exchange))
            return
        exchange.conn = conn
        conn.start(head, body, exchange.deadline, timeout, False, exchange.on_pooled)

    async def stream(
        self, head: bytes, body: bytes, timeout: float, first_byte_timeout: float
    ) -> UpstreamStream:
        """Send one request and return once the response head is in; read the body from the
        returned stream as it arrives. The head must come within ``first_byte_timeout`` and
        the whole body within ``timeout`` (both from now), else UpstreamTimeout (from here
        before the head, from the stream after it). Streams never use the pipelined
        connection."""
        if self.closed:
            raise UpstreamConnectError(f"pool for {self.address} is closed")
        now = self._now()
        deadline = now + timeout
        first_timeout = min(timeout, first_byte_timeout)
        first = now + first_timeout
        self.in_flight += 1  # until the stream hands its connection back (_stream_done)
        try:
            conn = self._pop_idle()
            if conn is not None:
                try:
                    return await self._open(
                        conn, (head, body), first, first_timeout, deadline, timeout
                    )
                except ClosedBeforeResponse:
                    pass  # the instance closed the idle keep-alive connection: retry once
            conn = await self._connect(first, first_timeout)
            try:
                return await self._open(conn, (head, body), first, first_timeout, deadline, timeout)
            except ClosedBeforeResponse as exc:
                raise UpstreamProtocolError(exc.reason) from None
        except BaseException:
            self.in_flight -= 1
            raise

    async def drain(self, timeout: float) -> None:
        """Wait until the requests in flight are answered (at most ``timeout`` s), then
        close. The caller has stopped sending new ones."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.in_flight > 0 and loop.time() < end and not self.closed:
            await asyncio.sleep(DRAIN_POLL_S)
        await self.close()

    async def close(self) -> None:
        """Close every connection; outstanding requests fail with UpstreamConnectError."""
        self.closed = True
        self._idle.clear()
        if self._pipe is not None:
            self._pipe.close()
        # Connects under way are not cancelled: a task cancelled before it starts would never
        # answer its request. Each finds the pool closed (at most connect_timeout from now).
        for conn in list(self._live):
            conn.fail(UpstreamConnectError(f"pool for {self.address} was closed"))
        await asyncio.sleep(0)  # let the transports run connection_lost

    # -- connections ---------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop
        if loop is None:  # cached: get_running_loop() costs a system call on Python 3.11
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _pop_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
        return None

    def _release(self, conn: UpstreamConnection) -> None:
        idle = self._idle
        if conn.reusable and len(idle) < self._max_idle and conn.usable() and not self.closed:
            idle.append(conn)
        else:
            conn.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_fresh(self, exchange: _Exchange) -> None:
        """``exchange`` on a new connection (none was idle, or its first one closed)."""
        try:
            conn = await self._connect(exchange.deadline, exchange.timeout)
        except UpstreamError as exc:
            self.in_flight -= 1
            exchange.on_done(exc)
            return
        except asyncio.CancelledError:  # the loop is shutting down
            self.in_flight -= 1
            exchange.on_done(UpstreamConnectError(f"pool for {self.address} was closed"))
            raise
        exchange.conn = conn
        conn.start(
            exchange.head,
            exchange.body,
            exchange.deadline,
            exchange.timeout,
            False,
            exchange.on_fresh,
        )

    async def _connect(self, deadline: float, timeout: float) -> UpstreamConnection:
        if self.closed:
            raise UpstreamConnectError(f"pool for {self.address} is closed")
        loop = asyncio.get_running_loop()
        budget = min(self._connect_timeout, deadline - loop.time())
        live = self._live
        address = self.address
        try:
            async with asyncio.timeout(budget):
                if address.unix_path is not None:
                    _, conn = await loop.create_unix_connection(
                        lambda: UpstreamConnection(live), address.unix_path
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: UpstreamConnection(live), address.host, address.port
                    )
        except TimeoutError:
            if budget < self._connect_timeout:
                raise UpstreamTimeout(f"no response within {timeout:g} s (connecting)") from None
            raise UpstreamConnectError(
                f"connecting to instance at {address} timed out after {budget:g} s"
            ) from None
        except OSError as exc:
            if exc.errno in _GONE and self._on_gone is not None:
                self._on_gone(self)
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise UpstreamConnectError(
                f"cannot connect to instance at {address}: {reason}"
            ) from exc
        if self.closed:
            conn.abort()
            raise UpstreamConnectError(f"pool for {address} was closed")
        return conn

    # -- the pipelined connection --------------------------------------------------------

    def _open_pipe(self) -> None:
        """Start connecting the pipelined connection, unless that is under way or failed
        within the last PIPE_RETRY_S."""
        pipe = self._pipe
        if (pipe is not None and pipe.open) or self._pipe_connecting or self.closed:
            return
        if self._now() - self._pipe_failed_at > PIPE_RETRY_S:
            self._pipe_connecting = True
            self._spawn(self._connect_pipe())

    async def _connect_pipe(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, pipe = await loop.create_unix_connection(
                    lambda: Pipeline(self._pipe_lost), self.address.unix_path
                )
        except (OSError, TimeoutError):
            self._pipe_failed_at = loop.time()
            return
        finally:
            self._pipe_connecting = False
        if self.closed:
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

    # -- streams -------------------------------------------------------------------------

    async def _open(
        self,
        conn: UpstreamConnection,
        request: tuple[bytes, bytes],
        first: float,
        first_timeout: float,
        deadline: float,
        timeout: float,
    ) -> UpstreamStream:
        stream = UpstreamStream(conn, deadline, timeout, self._stream_done)
        try:
            await stream.start(*request, first, first_timeout)
        except BaseException:
            stream.detach()
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


class _Exchange:
    """One request sent with ``UpstreamPool.send``, until its outcome is passed on: the
    pool's retry rule and in-flight count, in one place for all three kinds of connection."""

    __slots__ = ("body", "conn", "deadline", "head", "on_done", "pool", "timeout")

    def __init__(
        self,
        pool: UpstreamPool,
        head: bytes,
        body: Payload | SplicedBody,
        deadline: float,
        timeout: float,
        on_done: Done,
    ) -> None:
        self.pool = pool
        self.head = head
        self.body = body
        self.deadline = deadline
        self.timeout = timeout
        self.on_done = on_done
        self.conn: UpstreamConnection | None = None

    def on_pooled(self, result: UpstreamResponse | UpstreamError) -> None:
        """On an idle connection: closed before any answer byte means the instance had
        closed it while idle, so once more on a fresh one."""
        pool = self.pool
        conn = self.conn
        assert conn is not None
        if type(result) is UpstreamResponse:
            pool.in_flight -= 1
            pool._release(conn)
            self.on_done(result)
        elif isinstance(result, ClosedBeforeResponse) and _resendable(self.body):
            conn.abort()
            pool._spawn(pool._send_fresh(self))
        else:
            pool.in_flight -= 1
            conn.abort()  # never reuse a half-used connection
            if isinstance(result, ClosedBeforeResponse):
                result = UpstreamProtocolError(result.reason)
            self.on_done(result)

    def on_piped(self, result: UpstreamResponse | UpstreamError) -> None:
        """On the pipelined connection: a request that was never started (the connection
        dropped, or the request ahead of it timed out) goes on a fresh connection."""
        if isinstance(result, ClosedBeforeResponse):
            pool = self.pool
            pool._spawn(pool._send_fresh(self))
            return
        self.pool.in_flight -= 1
        self.on_done(result)

    def on_fresh(self, result: UpstreamResponse | UpstreamError) -> None:
        """On a new connection: no retry."""
        pool = self.pool
        conn = self.conn
        assert conn is not None
        pool.in_flight -= 1
        if type(result) is UpstreamResponse:
            pool._release(conn)
        else:
            conn.abort()
            if isinstance(result, ClosedBeforeResponse):
                result = UpstreamProtocolError(result.reason)
        self.on_done(result)


def _resendable(body: Payload | SplicedBody) -> bool:
    """Whether a request can be sent again: a spliced body only until bytes were taken from
    the client's socket."""
    return not isinstance(body, SplicedBody) or not body.taken
