"""The model server's HTTP/1.1 layer: a raw asyncio.Protocol over httptools, no framework.

Routes: `GET /ping` (200, empty body) and `POST /invocations` (the handler chain). The handler
runs inline on the event-loop thread, one request at a time: for CPU-bound models that is the
fastest path. The hot path avoids logging, regexes and per-request header formatting.

Streaming: a handler that returns a generator gets a `Transfer-Encoding: chunked` response,
one chunk per item. A task drives the generator on the event-loop thread (user code stays on
one thread, as for every other request) and yields to the loop after each chunk, so the chunk
is on the wire before the next item is computed; it waits while the socket's buffer is full.
The head goes out with the first item, so a generator that fails before yielding gets a 500.
A failure after that closes the connection without the last chunk, so the caller sees a
truncated body; the traceback goes to stderr.

How an invocation runs is the invoker's business (invokers.py): the connection hands it the
body and headers and the invoker answers through `answer` or `fail`. The server's invoker is a
`PlainInvoker` (the whole chain inline) unless batching is on (opt-in, MODELHOST_BATCHING; see
batching.py): then a `BatchingInvoker` runs input_fn as a request completes, queues its input
on the shared `Batcher`, and answers (output_fn) when its batch has been predicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import httptools

from modelhost.http11 import CONTINUE, LAST_CHUNK, FlowControl, chunk, status_line
from modelhost.runtime.codecs import InvocationError
from modelhost.runtime.handlers import (
    InvocationResult,
    ResponseStream,
    StreamingResult,
)
from modelhost.runtime.invokers import Invoker
from modelhost.runtime.serverstate import ServerState

_OK = status_line(200)
_PING_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_TEXT_PLAIN = b"text/plain; charset=utf-8"
_CUSTOM_ATTRIBUTES_LINE = b"\r\nX-Amzn-SageMaker-Custom-Attributes: "
_CLOSE_LINE = b"\r\nConnection: close"
_JOIN_LIMIT = 64 * 1024  # bodies above this are written separately instead of copied
_CHUNKED_LINE = b"\r\nTransfer-Encoding: chunked"

# routes, decided once the request line and headers are in
_INVOKE, _PING, _NOT_FOUND, _BAD_METHOD, _MODELS = range(5)
_ROUTES = {b"/invocations": (b"POST", _INVOKE), b"/ping": (b"GET", _PING)}

_header_bytes: dict[str, bytes] = {}


class _Abort(Exception):
    """Raised from a parser callback to stop parsing a connection that is being closed."""


class _Discard:
    """Stands in for the parser once input is being ignored until the connection closes."""

    def feed_data(self, data: bytes) -> None:
        pass


def _route(method: bytes, url: bytes) -> int:
    path = url.partition(b"?")[0]
    entry = _ROUTES.get(path)
    if entry is None:
        return _NOT_FOUND
    return entry[1] if entry[0] == method else _BAD_METHOD


def _header_value(value: str) -> bytes:
    """A response header value as bytes, memoised; CR/LF would split the header, so refuse."""
    encoded = _header_bytes.get(value)
    if encoded is None:
        if "\r" in value or "\n" in value:
            raise ValueError(f"header value contains a line break: {value!r}")
        encoded = value.encode("latin-1", "replace")
        if len(_header_bytes) < 256:
            _header_bytes[value] = encoded
    return encoded


class HttpConnection(FlowControl):
    """One client connection: parse requests with httptools, answer each in order.

    Invocations go to ``invoker`` (the server's, ``state.invoker``, unless given), which answers
    through `answer` and `fail`; pings and routing errors are answered here.
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_busy",
        "_counts_reading",
        "_headers",
        "_invoke",
        "_keep",
        "_parser",
        "_pending",
        "_reading",
        "_route",
        "_state",
        "_stream_keep_alive",
        "_stream_task",
        "_transport",
        "_url",
        "closing",
    )

    def __init__(self, state: ServerState, invoker: Invoker | None = None) -> None:
        super().__init__()
        if invoker is None:
            invoker = state.invoker
        self._state = state
        self._invoke = invoker.invoke  # bound once: called for every invocation
        self._counts_reading = invoker.counts_reading
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._route = _NOT_FOUND
        self._busy = False
        self._keep = True  # the request's keep-alive, kept: an answer may come after parsing
        self._reading = False  # counted in state.reading (when the invoker wants that)
        self.closing = False
        self._stream_task: asyncio.Task[None] | None = None
        self._stream_keep_alive = False
        self._pending: list[bytes] | None = None  # writes held while a read is parsed

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reading:
            self._done_reading()
        self.closing = True
        self._state.forget(self)
        if self._stream_task is not None:
            self._stream_task.cancel()  # the client is gone: stop (and close) the generator

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        # Answers to the requests in this read go out together, in one write (a router that
        # pipelines requests gets them in one read; one request: the same single write).
        self._pending = []
        try:
            self._feed(data)
        finally:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and self._transport is not None:
            if len(pending) == 1:
                self._transport.write(pending[0])
            else:
                self._transport.writelines(pending)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Abort):
                traceback.print_exception(exc.__context__ or exc)
                self._close()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._stream_task is not None:  # mid-stream: no reply, close after the stream
                self._ignore_input()
                return
            self._reply(400, f"malformed HTTP request: {exc}".encode(), keep_alive=False)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._transport is not None:  # requests behind a stalled answer wait unread
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._transport is not None:
            self._transport.resume_reading()

    def close_when_idle(self) -> None:
        if not self._busy:
            self._close()

    def _close(self) -> None:
        self.closing = True
        self._flush()
        if self._transport is not None:
            self._transport.close()

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._busy:  # pipelined behind a pending answer: unanswered, closed after it
            self._ignore_input()
            raise _Abort
        self._busy = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._route = _route(self._parser.get_method(), self._url)
        if self._route != _INVOKE:
            if self._state.models is not None and self._url.startswith(b"/models"):
                self._route = _MODELS  # the MMS API of a multi-model server
            return
        length = self._headers.get(b"content-length")
        if length is not None and int(length) > self._state.max_body:
            self._reject_too_large()
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            self._write(CONTINUE)
        if self._counts_reading:
            self._reading = True
            self._state.reading += 1

    def on_body(self, body: bytes) -> None:
        if self._route != _INVOKE and self._route != _MODELS:
            return
        self._body_size += len(body)
        if self._body_size > self._state.max_body:
            self._reject_too_large()
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._reading:
            self._done_reading()
        self._keep = self._parser.should_keep_alive()
        route = self._route
        if route == _INVOKE:
            chunks = self._body
            self._invoke(self, chunks[0] if len(chunks) == 1 else b"".join(chunks), self._headers)
        elif route == _PING:
            self._finish(_PING_RESPONSE, keep_alive=self._keep_alive())
        elif route == _MODELS and self._state.models is not None:
            chunks = self._body
            self._state.models.handle(
                self, self._parser.get_method(), self._url, b"".join(chunks), self._headers
            )
        elif route == _NOT_FOUND:
            self._reply(404, b"not found: " + self._url)
        else:
            self._reply(405, b"method not allowed: " + self._parser.get_method() + b" " + self._url)
        if self.closing:
            raise _Abort  # Connection: close; ignore anything pipelined behind this request

    def _done_reading(self) -> None:
        self._reading = False
        self._state.reading -= 1

    # --- answers (the invoker's Responder) -----------------------------------------------------

    def answer(self, result: InvocationResult | StreamingResult, echo: bytes | None) -> None:
        """Send an invocation's result: one response, or a chunked stream for a generator.
        ``echo`` is the request's custom attributes, sent back when the handler set none."""
        attributes = result.custom_attributes
        try:
            content_type = _header_value(result.content_type)
            custom = _header_value(attributes) if attributes is not None else echo
        except Exception as exc:
            self.fail(exc)
            return
        if type(result) is StreamingResult:
            self._start_stream(result.stream, content_type, echo if attributes is None else None)
            return
        body = result.body
        keep_alive = self._keep and not self._state.stopping
        head = b"".join(
            (
                _OK,
                b"Content-Type: ",
                content_type,
                b"\r\nContent-Length: ",
                b"%d" % len(body),
                _CUSTOM_ATTRIBUTES_LINE + custom if custom is not None else b"",
                b"" if keep_alive else _CLOSE_LINE,
                b"\r\n\r\n",
            )
        )
        if len(body) <= _JOIN_LIMIT:
            self._finish(head + body, keep_alive)
        else:
            self._write(head)
            self._finish(body, keep_alive)

    def fail(self, exc: Exception) -> None:
        """Answer a failed invocation: an InvocationError with its own status and message,
        anything else with a 500 naming the exception (its traceback goes to stderr)."""
        if isinstance(exc, InvocationError):
            self._reply(exc.status, exc.message.encode("utf-8"))
            return
        traceback.print_exception(exc)
        self._reply(500, _error_text(exc))

    # --- streamed responses ----------------------------------------------------------------------

    def _start_stream(
        self, stream: ResponseStream, content_type: bytes, echo: bytes | None
    ) -> None:
        self._stream_keep_alive = self._keep_alive()
        task = asyncio.get_running_loop().create_task(self._send_stream(stream, content_type, echo))
        self._stream_task = task
        task.add_done_callback(self._stream_done)

    def _stream_done(self, task: asyncio.Task[None]) -> None:
        self._stream_task = None

    async def _send_stream(
        self, stream: ResponseStream, content_type: bytes, echo: bytes | None
    ) -> None:
        def head() -> bytes:  # built late: the generator may set custom attributes first
            return self._stream_head(content_type, stream.custom_attributes, echo)

        started = False
        try:
            async with contextlib.aclosing(_items(stream.items)) as items:
                async for item in items:
                    framed = _chunk(item)
                    if framed:
                        self._write(framed if started else head() + framed)
                        started = True
                        await self._flushed()
        except InvocationError as exc:
            self._stream_failed(started, exc.status, exc.message.encode("utf-8"))
            return
        except Exception as exc:
            traceback.print_exc()
            self._stream_failed(started, 500, _error_text(exc))
            return
        keep_alive = self._stream_keep_alive and not self._state.stopping
        self._finish(LAST_CHUNK if started else head() + LAST_CHUNK, keep_alive)

    def _stream_head(
        self, content_type: bytes, attributes: str | None, echo: bytes | None
    ) -> bytes:
        custom = _header_value(attributes) if attributes is not None else echo
        return b"".join(
            (
                _OK,
                b"Content-Type: ",
                content_type,
                _CHUNKED_LINE,
                _CUSTOM_ATTRIBUTES_LINE + custom if custom is not None else b"",
                b"" if self._stream_keep_alive else _CLOSE_LINE,
                b"\r\n\r\n",
            )
        )

    def _ignore_input(self) -> None:
        self._parser = cast(httptools.HttpRequestParser, _Discard())
        self._stream_keep_alive = False
        self._keep = False

    def _stream_failed(self, started: bool, status: int, message: bytes) -> None:
        if not started:  # nothing sent yet: an ordinary error response
            self._respond_status(status, message, self._stream_keep_alive)
        else:  # end the body abnormally: no last chunk, just close
            self._busy = False
            self._close()

    async def _flushed(self) -> None:
        """Return once the loop has written the last chunk and the socket can take more."""
        await asyncio.sleep(0)
        while self.write_paused and not self.closing:
            await self.resumed()
        if self.closing:
            raise asyncio.CancelledError  # the client went away

    # --- plain responses -----------------------------------------------------------------------

    def _keep_alive(self) -> bool:
        return self._keep and not self._state.stopping

    def _reply(self, status: int, message: bytes, keep_alive: bool | None = None) -> None:
        """A text/plain response; errors after a body we did not read close the connection."""
        self._respond_status(
            status, message, self._keep_alive() if keep_alive is None else keep_alive
        )

    def _respond_status(self, status: int, message: bytes, keep_alive: bool) -> None:
        head = b"".join(
            (
                status_line(status),
                b"Content-Type: ",
                _TEXT_PLAIN,
                b"\r\nContent-Length: ",
                b"%d" % len(message),
                b"" if keep_alive else _CLOSE_LINE,
                b"\r\n\r\n",
            )
        )
        self._finish(head + message, keep_alive)

    def respond(self, status: int, body: bytes, content_type: bytes) -> None:
        """Any answer with a body (the models API's)."""
        keep_alive = self._keep_alive()
        head = b"".join(
            (
                status_line(status),
                b"Content-Type: ",
                content_type,
                b"\r\nContent-Length: ",
                b"%d" % len(body),
                b"" if keep_alive else _CLOSE_LINE,
                b"\r\n\r\n",
            )
        )
        self._finish(head + body, keep_alive)

    def _reject_too_large(self) -> None:
        limit = self._state.max_body
        self._reply(413, b"request body exceeds %d bytes" % limit, keep_alive=False)
        raise _Abort  # stop parsing: the rest of the body is not read

    def _write(self, data: bytes) -> None:
        if self._pending is not None:
            self._pending.append(data)
        elif self._transport is not None:
            self._transport.write(data)

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        self._write(data)
        self._busy = False
        if not keep_alive:
            self._close()


def _error_text(exc: Exception) -> bytes:
    return f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")


def _chunk(item: Any) -> bytes:
    """One yielded item as an HTTP chunk; b"" for an empty item (an empty chunk ends a body)."""
    if isinstance(item, str):
        item = item.encode("utf-8")
    elif isinstance(item, bytearray | memoryview):
        item = bytes(item)
    elif not isinstance(item, bytes):
        raise TypeError(f"a streaming handler must yield bytes or str; got {type(item).__name__}")
    return chunk(item)


async def _items(items: Iterator[Any] | AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """The items of a sync or async iterator; the iterator is closed however this ends."""
    try:
        if isinstance(items, AsyncIterator):
            async for item in items:
                yield item
        else:
            for item in items:
                yield item
    finally:
        close = getattr(items, "aclose", None) or getattr(items, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
