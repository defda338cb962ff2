"""The seam between the model server's connection and how an invocation runs (invokers.py):
each invoker on its own against a recording Responder, and the connection with an injected
invoker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest

from modelhost.runtime.batched import BatchingConnection
from modelhost.runtime.batching import Batcher, BatchPolicy
from modelhost.runtime.codecs import InvocationError, UnsupportedContentType
from modelhost.runtime.handlers import (
    Context,
    InvocationResult,
    ModelHandler,
    StreamingResult,
)
from modelhost.runtime.invokers import BatchingInvoker, PlainInvoker, Responder
from modelhost.runtime.protocol import HttpConnection
from modelhost.runtime.serverstate import ServerOptions, ServerState
from tests.unit.runtime.test_batching import FakeTransport

WAIT_S = 5.0
ON = BatchPolicy(enabled=True, max_batch_size=32, max_delay_s=0.002)


class FakeHandler:
    """Duck-typed ModelHandler: records calls; rows are summed; bodies are JSON-ish text."""

    def __init__(self, uses_context: bool = False, fail: Exception | None = None) -> None:
        self.uses_context = uses_context
        self.fail = fail
        self.calls: list[tuple[Any, ...]] = []

    def invoke(self, body: bytes, *rest: Any) -> InvocationResult:
        self.calls.append(("invoke", body, *rest))  # content type, accept, context headers
        if self.fail is not None:
            raise self.fail
        return InvocationResult(body[::-1], "text/plain", None)

    def decode(
        self, body: bytes, content_type: str | None, headers: dict[str, str] | None = None
    ) -> tuple[Any, Context | None]:
        self.calls.append(("decode", body, content_type, headers))
        if self.fail is not None:
            raise self.fail
        if body == b"scalar":
            return "not an array", None
        return np.array([float(x) for x in body.split(b",")]), None

    def predict(self, data: Any, ctx: Context | None) -> Any:
        self.calls.append(("predict", data.shape if isinstance(data, np.ndarray) else data))
        if isinstance(data, np.ndarray):
            return (data.reshape(1, -1) if data.ndim == 1 else data).sum(axis=1)
        return data

    def encode(
        self, prediction: Any, accept: str | None, ctx: Context | None
    ) -> InvocationResult | StreamingResult:
        self.calls.append(("encode", accept))
        body = str(np.asarray(prediction).tolist()).encode()
        return InvocationResult(body, accept or "text/plain", None)


class Recorder:
    """A Responder that writes down what the invoker asked of it."""

    def __init__(self, closing: bool = False) -> None:
        self.closing = closing
        self.answers: list[tuple[InvocationResult | StreamingResult, bytes | None]] = []
        self.failures: list[Exception] = []

    def answer(self, result: InvocationResult | StreamingResult, echo: bytes | None) -> None:
        self.answers.append((result, echo))

    def fail(self, exc: Exception) -> None:
        self.failures.append(exc)


def as_handler(fake: FakeHandler) -> ModelHandler:
    return cast(ModelHandler, fake)


def batching(handler: FakeHandler) -> BatchingInvoker:
    return BatchingInvoker(as_handler(handler), Batcher(ON, handler.predict))


def run(make: Callable[[], Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(make(), WAIT_S)

    return asyncio.run(bounded())


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


HEADERS = {
    b"content-type": b"text/csv",
    b"accept": b"application/json",
    b"x-amzn-sagemaker-custom-attributes": b"trace=1",
}


# --- the plain invoker -------------------------------------------------------------------------


def test_plain_runs_the_chain_and_answers_before_returning() -> None:
    handler = FakeHandler()
    conn = Recorder()
    PlainInvoker(as_handler(handler)).invoke(conn, b"abc", HEADERS)
    assert handler.calls == [("invoke", b"abc", "text/csv", "application/json", None)]
    assert conn.answers == [(InvocationResult(b"cba", "text/plain", None), b"trace=1")]
    assert conn.failures == []


def test_plain_gives_a_context_its_headers_only_when_a_handler_takes_one() -> None:
    handler = FakeHandler(uses_context=True)
    PlainInvoker(as_handler(handler)).invoke(Recorder(), b"", {b"x-a": b"1"})
    assert handler.calls == [("invoke", b"", None, None, {"x-a": "1"})]


def test_plain_hands_a_failure_to_the_connection() -> None:
    error = UnsupportedContentType("text/csv")
    conn = Recorder()
    PlainInvoker(as_handler(FakeHandler(fail=error))).invoke(conn, b"abc", HEADERS)
    assert conn.failures == [error] and conn.answers == []


def test_neither_invoker_asks_for_reading_counts_but_batching() -> None:
    assert PlainInvoker.counts_reading is False
    assert BatchingInvoker.counts_reading is True


# --- the batching invoker ----------------------------------------------------------------------


def test_batching_answers_concurrent_requests_from_one_predict_call() -> None:
    handler = FakeHandler()

    async def go() -> list[Recorder]:
        invoker = batching(handler)
        conns = [Recorder(), Recorder()]
        invoker.invoke(conns[0], b"1,2", HEADERS)
        invoker.invoke(conns[1], b"3,4", {})
        assert all(not conn.answers for conn in conns)  # queued for the batch
        await until(lambda: all(conn.answers for conn in conns))
        return conns

    first, second = run(go)
    assert [call for call in handler.calls if call[0] == "predict"] == [("predict", (2, 2))]
    assert first.answers == [(InvocationResult(b"[3.0]", "application/json", None), b"trace=1")]
    assert second.answers == [(InvocationResult(b"[7.0]", "text/plain", None), None)]


def test_batching_predicts_what_cannot_be_stacked_at_once() -> None:
    handler = FakeHandler()

    async def go() -> Recorder:
        conn = Recorder()
        batching(handler).invoke(conn, b"scalar", {})
        assert len(conn.answers) == 1  # answered before invoke returned
        return conn

    run(go)
    assert [call[0] for call in handler.calls] == ["decode", "predict", "encode"]


def test_batching_does_not_answer_a_connection_that_is_closing() -> None:
    handler = FakeHandler()

    async def go() -> Recorder:
        conn = Recorder()
        batching(handler).invoke(conn, b"1,2", {})
        conn.closing = True  # the client went away while its request waited for the batch
        await until(lambda: any(call[0] == "predict" for call in handler.calls))
        await asyncio.sleep(0)
        return conn

    conn = run(go)
    assert conn.answers == [] and conn.failures == []
    assert "encode" not in [call[0] for call in handler.calls]  # output_fn is not run either


def test_batching_hands_a_decode_failure_to_the_connection() -> None:
    error = InvocationError("bad input")
    handler = FakeHandler(fail=error)

    async def go() -> Recorder:
        conn = Recorder()
        batching(handler).invoke(conn, b"1,2", {})
        return conn

    assert run(go).failures == [error]


# --- the connection with an injected invoker ---------------------------------------------------


class Deferred:
    """An invoker that keeps each request's Responder, to answer it later."""

    counts_reading = False

    def __init__(self) -> None:
        self.requests: list[tuple[Responder, bytes, dict[bytes, bytes]]] = []

    def invoke(self, conn: Responder, body: bytes, headers: dict[bytes, bytes]) -> None:
        self.requests.append((conn, body, headers))


def connect(conn: HttpConnection) -> FakeTransport:
    transport = FakeTransport()
    conn.connection_made(cast(asyncio.Transport, transport))
    return transport


def deferred_connection() -> tuple[HttpConnection, Deferred, FakeTransport]:
    """A connection whose invoker answers nothing by itself."""
    invoker = Deferred()
    conn = HttpConnection(ServerState(as_handler(FakeHandler()), ServerOptions()), invoker)
    return conn, invoker, connect(conn)


def invocation(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: text/csv\r\n"
        b"Content-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)
    )


def test_the_connection_hands_the_invoker_the_body_and_lower_case_headers() -> None:
    async def go() -> None:
        conn, invoker, transport = deferred_connection()
        conn.data_received(invocation(b"1,2", b"X-Thing: A\r\n"))
        [(responder, body, headers)] = invoker.requests
        assert responder is conn
        assert body == b"1,2"
        assert headers[b"content-type"] == b"text/csv" and headers[b"x-thing"] == b"A"
        assert transport.data == b""  # nothing until the invoker answers
        conn.answer(InvocationResult(b"ok", "text/plain", None), b"trace=1")
        assert bytes(transport.data) == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2"
            b"\r\nX-Amzn-SageMaker-Custom-Attributes: trace=1\r\n\r\nok"
        )

    run(go)


@pytest.mark.parametrize(
    ("error", "head"),
    [
        (UnsupportedContentType("text/csv"), b"HTTP/1.1 415 Unsupported Media Type\r\n"),
        (ValueError("boom"), b"HTTP/1.1 500 Internal Server Error\r\n"),
    ],
)
def test_a_failure_is_answered_with_its_status(error: Exception, head: bytes) -> None:
    async def go() -> bytes:
        conn, _, transport = deferred_connection()
        conn.data_received(invocation(b"x"))
        conn.fail(error)
        return bytes(transport.data)

    response = run(go)
    assert response.startswith(head)
    assert response.endswith(b"boom" if isinstance(error, ValueError) else b"text/csv")


def test_a_request_pipelined_behind_a_pending_answer_closes_the_connection_after_it() -> None:
    async def go() -> FakeTransport:
        conn, invoker, transport = deferred_connection()
        conn.data_received(invocation(b"1") + invocation(b"2"))
        assert len(invoker.requests) == 1  # the second is left unanswered
        conn.answer(InvocationResult(b"one", "text/plain", None), None)
        return transport

    transport = run(go)
    assert b"Connection: close" in transport.data and transport.closed


def test_the_plain_invoker_is_the_default() -> None:
    async def go() -> bytes:
        handler = FakeHandler()
        state = ServerState(as_handler(handler), ServerOptions())
        conn = HttpConnection(state)
        transport = connect(conn)
        conn.data_received(invocation(b"abc"))
        return bytes(transport.data)

    assert run(go).endswith(b"\r\n\r\ncba")


def test_only_a_batching_connection_counts_requests_being_read() -> None:
    async def go() -> list[int]:
        handler = FakeHandler()
        state = ServerState(as_handler(handler), ServerOptions())
        batcher = Batcher(ON, handler.predict, coming=lambda: state.reading)
        counts = []
        for conn in (HttpConnection(state), BatchingConnection(state, batcher)):
            connect(conn)
            whole = invocation(b"1,2")
            conn.data_received(whole[:-2])  # head in, body still arriving
            counts.append(state.reading)
            conn.data_received(whole[-2:])
            counts.append(state.reading)
            conn.connection_lost(None)
        return counts

    assert run(go) == [0, 0, 1, 0]


def test_a_batching_connection_lost_mid_body_stops_being_counted() -> None:
    async def go() -> int:
        handler = FakeHandler()
        state = ServerState(as_handler(handler), ServerOptions())
        conn = BatchingConnection(state, Batcher(ON, handler.predict))
        connect(conn)
        conn.data_received(invocation(b"1,2")[:-1])
        assert state.reading == 1
        conn.connection_lost(None)
        return state.reading

    assert run(go) == 0
