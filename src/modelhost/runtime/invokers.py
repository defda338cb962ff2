"""How the model server runs an invocation, apart from HTTP.

The connection (protocol.py) parses a request and hands its body and headers to the server's
invoker; the invoker runs the model's handler chain and answers through the connection's
`Responder` methods, now or later. Two invokers, one interface, chosen once per server:

- `PlainInvoker` runs the whole chain inline and answers before `invoke` returns: the default,
  and the fastest path for CPU-bound models.
- `BatchingInvoker` runs input_fn now, hands the input to the shared `Batcher` (batching.py) to
  be predicted with other requests' inputs, and runs output_fn and answers when its batch is
  done. The connection stays busy meanwhile.

Composition rather than a connection subclass: the connection's parsing, streaming and error
answers are one piece of code whichever way the model is called.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from modelhost.runtime.batching import Batcher
from modelhost.runtime.handlers import (
    Context,
    InvocationResult,
    ModelHandler,
    StreamingResult,
)

_CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"  # echoed when a handler sets none


class Responder(Protocol):
    """What an invoker may do with the connection whose request it runs."""

    @property
    def closing(self) -> bool:
        """The connection is closing or closed: an answer would go nowhere."""
        ...

    def answer(self, result: InvocationResult | StreamingResult, echo: bytes | None) -> None:
        """Send the chain's result (one response, or a chunked stream); ``echo`` is the
        request's custom attributes, sent back when the handler set none."""
        ...

    def fail(self, exc: Exception) -> None:
        """Answer with the error: an InvocationError's own status, anything else a 500."""
        ...


class Invoker(Protocol):
    """Runs each invocation of a server's connections."""

    @property
    def counts_reading(self) -> bool:
        """Whether connections should count invocations whose body is still arriving
        (`ServerState.reading`): a batch waits for those."""
        ...

    def invoke(self, conn: Responder, body: bytes, headers: dict[bytes, bytes]) -> None:
        """Run one invocation (``headers``: lower-case names) and answer it through ``conn``,
        exactly once."""
        ...


class PlainInvoker:
    """The whole handler chain at once, inline on the event loop."""

    __slots__ = ("_run", "_uses_context")
    counts_reading = False

    def __init__(self, handler: ModelHandler) -> None:
        self._run = handler.invoke  # bound once: this is the per-request path
        self._uses_context = handler.uses_context

    def invoke(self, conn: Responder, body: bytes, headers: dict[bytes, bytes]) -> None:
        try:
            result = self._run(
                body,
                _text(headers.get(b"content-type")),
                _text(headers.get(b"accept")),
                _context_headers(headers) if self._uses_context else None,
            )
        except Exception as exc:
            conn.fail(exc)
            return
        conn.answer(result, headers.get(_CUSTOM_ATTRIBUTES))


class BatchingInvoker:
    """input_fn per request, predict_fn through the server's `Batcher`, then output_fn.

    The answer comes from the batcher's callback, so a connection waits (busy) meanwhile: a
    request pipelined behind it is left unanswered and the connection closes after the
    response, as behind a stream.
    """

    __slots__ = ("_batcher", "_handler")
    counts_reading = True

    def __init__(self, handler: ModelHandler, batcher: Batcher) -> None:
        self._handler = handler
        self._batcher = batcher

    def invoke(self, conn: Responder, body: bytes, headers: dict[bytes, bytes]) -> None:
        handler = self._handler
        ctx_headers = _context_headers(headers) if handler.uses_context else None
        accept, echo = _text(headers.get(b"accept")), headers.get(_CUSTOM_ATTRIBUTES)
        try:
            data, ctx = handler.decode(body, _text(headers.get(b"content-type")), ctx_headers)
            done = functools.partial(self._predicted, conn, accept, ctx, echo)
            if self._batcher.add(data, ctx, done):
                return  # answered from _predicted once the batch is done
            prediction = handler.predict(data, ctx)
        except Exception as exc:
            conn.fail(exc)
            return
        done(prediction, None)

    def _predicted(
        self,
        conn: Responder,
        accept: str | None,
        ctx: Context | None,
        echo: bytes | None,
        prediction: Any,
        error: Exception | None,
    ) -> None:
        if conn.closing:
            return  # the client is gone
        try:
            if error is not None:
                raise error
            result = self._handler.encode(prediction, accept, ctx)
        except Exception as exc:
            conn.fail(exc)
            return
        conn.answer(result, echo)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _context_headers(headers: dict[bytes, bytes]) -> dict[str, str]:
    """The request's headers as a handler's context shows them (lower-case names)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items()}
