"""Batching connections: invocations that share predict_fn calls (see batching.py)."""

from __future__ import annotations

import functools
import os
import traceback
from typing import Any

from modelhost.runtime.batching import Batcher, BatchPolicy
from modelhost.runtime.codecs import InvocationError
from modelhost.runtime.handlers import (
    Context,
    InvocationResult,
    ModelHandler,
    StreamingResult,
)
from modelhost.runtime.protocol import (
    _CUSTOM_ATTRIBUTES,
    _CUSTOM_ATTRIBUTES_LINE,
    _INVOKE,
    _OK,
    HttpConnection,
    ServerOptions,
    ServerState,
    _error_text,
    _header_value,
    _say,
    _text,
)


class BatchingConnection(HttpConnection):
    """A connection whose invocations share predict_fn calls through the server's `Batcher`.

    While a request waits for its batch the connection is busy: a request pipelined behind it
    is left unanswered and the connection closes after the response (as behind a stream).
    """

    def __init__(self, state: ServerState, batcher: Batcher) -> None:
        super().__init__(state)
        self._batcher = batcher
        self._reading = False
        self._keep = True  # the waiting request's keep-alive (the parser moves on)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done_reading()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._route == _INVOKE:
            self._reading = True
            self._state.reading += 1

    def on_message_complete(self) -> None:
        self._done_reading()
        self._keep = self._parser.should_keep_alive()
        super().on_message_complete()

    def _done_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._state.reading -= 1

    def _keep_alive(self) -> bool:
        return self._keep and not self._state.stopping

    def _ignore_input(self) -> None:
        super()._ignore_input()
        self._keep = False

    def _invoke(self) -> None:
        headers, handler = self._headers, self._handler
        chunks = self._body
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        ctx_headers = self._context_headers() if handler.uses_context else None
        accept, echo = _text(headers.get(b"accept")), headers.get(_CUSTOM_ATTRIBUTES)
        try:
            data, ctx = handler.decode(body, _text(headers.get(b"content-type")), ctx_headers)
            done = functools.partial(self._predicted, accept, ctx, echo)
            if self._batcher.add(data, ctx, done):
                return  # answered from _predicted once the batch is done
            prediction = handler.predict(data, ctx)
        except Exception as exc:
            self._fail(exc)
            return
        done(prediction, None)

    def _predicted(
        self,
        accept: str | None,
        ctx: Context | None,
        echo: bytes | None,
        prediction: Any,
        error: Exception | None,
    ) -> None:
        if self._closing:
            return  # the client is gone
        try:
            if error is not None:
                raise error
            result = self._handler.encode(prediction, accept, ctx)
            content_type = _header_value(result.content_type)
        except Exception as exc:
            self._fail(exc)
            return
        if type(result) is StreamingResult:
            self._start_stream(result.stream, content_type, echo)
        else:
            self._answer(result, content_type, echo)

    def _answer(self, result: InvocationResult, content_type: bytes, echo: bytes | None) -> None:
        attributes = result.custom_attributes
        custom = _header_value(attributes) if attributes is not None else echo
        extra = _CUSTOM_ATTRIBUTES_LINE + custom if custom is not None else b""
        self._respond(_OK, content_type, result.body, extra)

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, InvocationError):
            self._reply(exc.status, exc.message.encode("utf-8"))
            return
        traceback.print_exception(exc)
        self._reply(500, _error_text(exc))


def make_batcher(
    handler: ModelHandler, options: ServerOptions, state: ServerState
) -> Batcher | None:
    """The server's Batcher when batching is on and the handlers allow it, else None."""
    policy = options.batching or BatchPolicy.from_env(os.environ)
    if not policy.enabled:
        return None
    if not handler.batchable:
        _say("MODELHOST_BATCHING ignored: transform_fn, or a predict_fn taking a context")
        return None
    ms = policy.max_delay_s * 1000
    _say(f"batching on: up to {policy.max_batch_size} rows, waiting at most {ms:g} ms")
    return Batcher(policy, handler.predict, coming=lambda: state.reading)
