"""modelhost's front HTTP server (httpserver.py) on its own: a tiny ASGI app and a fast path,
driven over raw loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

from modelhost.fastpath import Reply, head_bytes
from modelhost.http11 import Payload
from modelhost.serving import Server

pytestmark = pytest.mark.e2e
MAX_BODY = 1024


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = (await receive())["body"]
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    answer = b"%s %s %d" % (scope["method"].encode(), scope["path"].encode(), len(body))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"asgi")]})
    await send({"type": "http.response.body", "body": answer})


class Fast:
    def accepts(self, method: bytes, path: bytes) -> bool:
        return path == b"/fast"

    def dispatch(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None:
        reply(head_bytes(201, [(b"x-app", b"fast")]), body[::-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    port = free_port()
    server = Server(app, "127.0.0.1", port, MAX_BODY, drain_s=5, fast=Fast(), idle_timeout_s=1)
    with running(server):
        yield "127.0.0.1", port


@contextlib.contextmanager
def running(server: Server) -> Iterator[asyncio.AbstractEventLoop]:
    """Serve on an event loop in a thread until the block ends."""
    loop = asyncio.new_event_loop()
    listening = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        # signal handlers only work in the main thread: stop through server.stop instead
        loop.add_signal_handler = lambda *args: None  # type: ignore[method-assign]
        loop.run_until_complete(server.serve(listening.set))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert listening.wait(10)
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(server.stop)
        thread.join(10)
        assert not thread.is_alive()


def exchange(address: tuple[str, int], data: bytes, until: bytes, limit: int = 1) -> bytes:
    """Send raw bytes; read until ``until`` has appeared ``limit`` times or the peer closes."""
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(data)
        got = b""
        while got.count(until) < limit:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_asgi_request_and_keep_alive(address: tuple[str, int]) -> None:
    req = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    got = exchange(address, req + req, b"POST /x 3", limit=2)
    assert got.count(b"HTTP/1.1 200 OK") == 2  # pipelined on one connection, in order
    assert b"x-app: asgi" in got and b"content-length: 9" in got


def test_fast_path_single_write(address: tuple[str, int]) -> None:
    got = exchange(address, b"POST /fast HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", b"cba")
    assert got.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"x-app: fast" in got and got.endswith(b"\r\n\r\ncba")


def test_pipelined_fast_path_and_asgi_requests_are_answered_in_order(
    address: tuple[str, int],
) -> None:
    fast = b"POST /fast HTTP/1.1\r\nContent-Length: %d\r\n\r\n%b"
    asgi = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    requests = [fast % (3, b"one"), fast % (3, b"two"), asgi, fast % (5, b"three")]
    got = exchange(address, b"".join(requests), b"eerht")  # the last answer
    bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in got.split(b"HTTP/1.1 ")[1:]]
    assert bodies == [b"eno", b"owt", b"POST /x 3", b"eerht"]


def test_chunked_request_and_response(address: tuple[str, int]) -> None:
    req = b"POST /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    got = exchange(address, req, b"0\r\n\r\n")
    assert b"transfer-encoding: chunked" in got
    assert got.endswith(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")


def test_expect_continue(address: tuple[str, int]) -> None:
    req = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"
    got = exchange(address, req, b"POST /x 2")
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


def test_body_is_capped_not_buffered_whole(address: tuple[str, int]) -> None:
    body = b"x" * (MAX_BODY * 4)
    req = b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    assert b"POST /x %d" % (MAX_BODY + 1) in exchange(address, req, b"POST /x")


def test_app_error_is_500_and_closes(address: tuple[str, int]) -> None:
    got = exchange(address, b"GET /boom HTTP/1.1\r\n\r\n", b"\r\n\r\nInternal Server Error")
    assert got.startswith(b"HTTP/1.1 500 ") and b"connection: close" in got


def test_malformed_request_is_400(address: tuple[str, int]) -> None:
    got = exchange(address, b"NOT HTTP AT ALL\r\n\r\n", b"Malformed")
    assert got.startswith(b"HTTP/1.1 400 ")


def test_oversized_head_is_431(address: tuple[str, int]) -> None:
    req = b"GET /x HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    got = exchange(address, req, b"too large")
    assert got.startswith(b"HTTP/1.1 431 ")


def test_head_has_no_body(address: tuple[str, int]) -> None:
    got = exchange(address, b"HEAD /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n", b"GET /y 0")
    first, _, second = got.partition(b"\r\n\r\n")
    assert b"content-length: 9" in first  # the length the body would have had
    assert second.startswith(b"HTTP/1.1 200 OK")  # nothing between the two responses


def test_idle_and_half_sent_connections_are_closed(address: tuple[str, int]) -> None:
    for opening in (b"", b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"):
        with socket.create_connection(address, timeout=10) as conn:
            conn.sendall(opening)
            assert conn.recv(100) == b""  # closed by the server after its idle timeout


def test_an_upgrade_request_is_answered_in_http_1_1(address: tuple[str, int]) -> None:
    req = b"GET /h2 HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    got = exchange(address, req, b"GET /h2 0")
    assert got.startswith(b"HTTP/1.1 200 OK")


def test_an_upgrade_request_on_the_fast_path_is_answered_then_closed(
    address: tuple[str, int],
) -> None:
    req = b"POST /fast HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n"
    # closed right after the answer, not later by the idle sweep: a server whose idle timeout
    # is far longer than exchange's 5 s read timeout, which would raise if it waited for it
    port = free_port()
    with running(Server(app, "127.0.0.1", port, MAX_BODY, fast=Fast(), idle_timeout_s=600)):
        got = exchange(("127.0.0.1", port), req, b"until the server closes")
    assert got.startswith(b"HTTP/1.1 201 ")
    assert got.endswith(b"content-length: 0\r\n\r\n")


class Awake:
    """A fast path that answers whether the server's loop is being kept awake."""

    server: Server

    def accepts(self, method: bytes, path: bytes) -> bool:
        return True

    def dispatch(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None:
        reply(head_bytes(200, []), b"polling" if self.server.awake.polling else b"asleep")


@pytest.mark.parametrize(("busy_poll_s", "expected"), [(0.05, b"polling"), (0.0, b"asleep")])
def test_a_request_keeps_the_loop_awake_unless_busy_polling_is_off(
    busy_poll_s: float, expected: bytes
) -> None:
    fast = Awake()
    port = free_port()
    fast.server = Server(app, "127.0.0.1", port, MAX_BODY, fast=fast, busy_poll_s=busy_poll_s)
    with running(fast.server):
        request = b"POST /x HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        reply = exchange(("127.0.0.1", port), request, b"until the server closes")
        assert reply.startswith(b"HTTP/1.1 200 ")
        assert reply.endswith(b"\r\n\r\n" + expected), reply


class Later:
    """A fast path that answers 0.3 s after the request, from a timer (no task)."""

    def accepts(self, method: bytes, path: bytes) -> bool:
        return True

    def dispatch(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None:
        asyncio.get_running_loop().call_later(0.3, reply, head_bytes(200, []), b"late answer")


def test_stopping_waits_for_fast_path_answers_in_flight() -> None:
    port = free_port()
    server = Server(app, "127.0.0.1", port, MAX_BODY, drain_s=5, fast=Later())
    with (
        running(server) as loop,
        socket.create_connection(("127.0.0.1", port), timeout=5) as conn,
    ):
        conn.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        deadline = time.monotonic() + 5
        while server.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert server.in_flight == 1
        loop.call_soon_threadsafe(server.stop)
        got = b""
        for _ in range(100):  # read until the server closes the connection
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        assert got.startswith(b"HTTP/1.1 200 ")
        assert got.endswith(b"late answer")  # answered before the server closed it


class PartsFast(Fast):
    """Answers with a large payload given as parts, and with the body repeated as one."""

    def dispatch(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None:
        if body == b"parts":
            reply(head_bytes(200, []), [b"a" * 70_000, b"b" * 70_000, b"c"])
        else:
            reply(head_bytes(200, []), body * 100_000)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"parts", b"a" * 70_000 + b"b" * 70_000 + b"c"), (b"xy", b"xy" * 100_000)],
)
def test_large_fast_path_payloads_arrive_whole(body: bytes, expected: bytes) -> None:
    port = free_port()
    server = Server(app, "127.0.0.1", port, MAX_BODY, drain_s=5, fast=PartsFast())
    with running(server):
        request = b"POST /fast HTTP/1.1\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        head = b"content-length: %d\r\n\r\n" % len(expected)
        got = exchange(("127.0.0.1", port), request + request, head + expected, limit=2)
    assert got.count(head + expected) == 2  # both, whole, in order on one connection
