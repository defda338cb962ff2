"""The HTTP/1.1 pieces both servers share (http11.py), and each server's use of its flow
control."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from modelhost.fastpath import head_bytes as front_head_bytes
from modelhost.http11 import (
    CONTINUE,
    LAST_CHUNK,
    FlowControl,
    chunk,
    head_bytes,
    response_head,
    status_line,
)
from modelhost.httpserver import HttpProtocol
from modelhost.runtime.handlers import ModelHandler
from modelhost.runtime.protocol import HttpConnection
from modelhost.runtime.serverstate import ServerOptions, ServerState

WAIT_S = 5.0


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, WAIT_S)

    return asyncio.run(bounded())


# --- bytes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (400, b"HTTP/1.1 400 Bad Request\r\n"),
        (404, b"HTTP/1.1 404 Not Found\r\n"),
        (405, b"HTTP/1.1 405 Method Not Allowed\r\n"),
        (406, b"HTTP/1.1 406 Not Acceptable\r\n"),
        (413, b"HTTP/1.1 413 Content Too Large\r\n"),  # RFC 9110's phrase on every Python
        (415, b"HTTP/1.1 415 Unsupported Media Type\r\n"),
        (424, b"HTTP/1.1 424 Failed Dependency\r\n"),
        (431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        (500, b"HTTP/1.1 500 Internal Server Error\r\n"),
        (530, b"HTTP/1.1 530 Unknown\r\n"),  # SageMaker's, not in HTTPStatus
    ],
)
def test_status_lines(status: int, line: bytes) -> None:
    assert status_line(status) == line


def test_interim_and_last_chunk() -> None:
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_chunk_framing_in_hex() -> None:
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def test_no_data_is_no_chunk() -> None:
    assert chunk(b"") == b""  # an empty chunk would end the body


def test_head_bytes_is_status_and_header_lines_without_the_blank_line() -> None:
    head = head_bytes(201, [(b"content-type", b"text/plain"), (b"x-a", b"1")])
    assert head == b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nx-a: 1\r\n"


def test_the_front_server_still_exports_head_bytes() -> None:
    assert front_head_bytes is head_bytes  # router/invoke.py imports it from httpserver


def test_response_head_adds_the_length_of_a_body_sent_at_once() -> None:
    head, chunked = response_head(200, [(b"content-type", b"a/b")], 12, False, True)
    assert head == b"HTTP/1.1 200 OK\r\ncontent-type: a/b\r\ncontent-length: 12\r\n\r\n"
    assert not chunked


def test_response_head_chunks_a_body_sent_in_parts() -> None:
    head, chunked = response_head(200, [], 3, True, False)
    assert head == (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
    assert chunked


def test_response_head_keeps_the_callers_length() -> None:
    head, chunked = response_head(200, [(b"Content-Length", b"9")], 3, True, True)
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"
    assert not chunked


# --- flow control ------------------------------------------------------------------------------


def test_a_waiting_sender_goes_on_at_resume() -> None:
    async def go() -> list[str]:
        flow = FlowControl()
        events: list[str] = []

        async def sender(name: str) -> None:
            while flow.write_paused:
                await flow.resumed()
            events.append(name)

        flow.pause_writing()
        tasks = [asyncio.ensure_future(sender(name)) for name in ("a", "b")]
        for _ in range(5):
            await asyncio.sleep(0)
        events.append("resume")
        flow.resume_writing()
        await asyncio.gather(*tasks)
        return events

    assert run(go()) == ["resume", "a", "b"]


def test_one_future_per_pause() -> None:
    async def go() -> None:
        flow = FlowControl()
        flow.pause_writing()
        first = flow.resumed()
        assert flow.resumed() is first
        flow.resume_writing()
        assert first.done() and not flow.write_paused
        flow.pause_writing()
        assert flow.resumed() is not first and not flow.resumed().done()

    run(go())


def test_resume_without_waiters_is_harmless() -> None:
    flow = FlowControl()
    flow.resume_writing()
    flow.pause_writing()
    flow.resume_writing()
    assert not flow.write_paused


class _FrontServer:
    """What HttpProtocol needs of serving.Server for these tests."""

    def __init__(self) -> None:
        self.connections: set[HttpProtocol] = set()


class _Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_extra_info(self, name: str) -> None:
        return None

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _NoHandler:
    uses_context = False

    def invoke(self, *args: Any) -> Any:
        raise AssertionError("not called")


def test_front_server_senders_stop_waiting_when_the_connection_is_lost() -> None:
    async def go() -> None:
        proto = HttpProtocol(cast(Any, _FrontServer()))
        proto.connection_made(cast(asyncio.Transport, _Transport()))
        proto.pause_writing()
        waiter = proto.resumed()
        proto.connection_lost(None)
        assert waiter.done()
        assert not proto.write_paused  # a later part does not wait for a transport that is gone

    run(go())


def test_model_server_stops_reading_while_writes_are_paused() -> None:
    async def go() -> list[str]:
        state = ServerState(cast(ModelHandler, _NoHandler()), ServerOptions())
        conn = HttpConnection(state)
        transport = _Transport()
        conn.connection_made(cast(asyncio.Transport, transport))
        conn.pause_writing()
        assert conn.write_paused
        waiter = conn.resumed()
        conn.resume_writing()
        assert waiter.done() and not conn.write_paused
        return transport.calls

    assert run(go()) == ["pause_reading", "resume_reading"]
