"""UpstreamPool against tiny in-test HTTP servers on 127.0.0.1 (this module is a network client)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from modelhost.publish import Address
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)

WAIT = 10.0  # upper bound on any single wait in these tests


@dataclass
class Req:
    method: bytes
    path: bytes
    headers: dict[bytes, bytes]
    body: bytes
    conn: int  # which server-side connection carried it (0-based)
    seq: int  # its position on that connection (0-based)


Reply = bytes | None  # None: close the connection without answering
Handler = Callable[[Req], Awaitable[Reply]]


def response(
    status: int = 200, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    head = [b"HTTP/1.1 %d X\r\n" % status]
    head += [b"%s: %s\r\n" % pair for pair in headers or []]
    if not any(name.lower() == b"transfer-encoding" for name, _ in headers or []):
        head.append(b"Content-Length: %d\r\n" % len(body))
    return b"".join([*head, b"\r\n", body])


def chunked(body_parts: list[bytes]) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in body_parts)
    return response(200, chunks + b"0\r\n\r\n", [(b"Transfer-Encoding", b"chunked")])


async def echo(req: Req) -> Reply:
    return response(200, req.body, [(b"X-Path", req.path)])


@dataclass
class Server:
    handler: Handler
    port: int = 0
    connections: int = 0
    closed_connections: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, self.connections = self.connections, self.connections + 1
        self._writers.append(writer)
        try:
            for seq in range(10_000):
                req = await _read_request(reader, conn, seq)
                reply = None if req is None else await self.handler(req)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                head = reply.split(b"\r\n\r\n", 1)[0].lower()
                if b"connection: close" in head or b"x-then-close" in head:
                    break
        except ConnectionError:
            pass
        finally:
            self.closed_connections += 1
            writer.close()


async def _read_request(reader: asyncio.StreamReader, conn: int, seq: int) -> Req | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    method, path, _ = lines[0].split(b" ")
    headers = {}
    for line in lines[1:]:
        name, value = line.split(b":", 1)
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return Req(method, path, headers, body, conn, seq)


Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a test's main() on the stock loop and on uvloop (what the server uses)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(60):
                await coro

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(bounded())

    return runner


async def request(
    pool: UpstreamPool,
    method: bytes,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    timeout: float,
) -> UpstreamResponse:
    """``UpstreamPool.send`` awaited: the response, or the UpstreamError it got, raised."""
    got: asyncio.Future[UpstreamResponse | UpstreamError] = (
        asyncio.get_running_loop().create_future()
    )

    def done(result: UpstreamResponse | UpstreamError) -> None:
        assert not got.done(), "a second outcome for one request"
        got.set_result(result)

    pool.send(pool.head(method, path, headers, len(body)), body, timeout, done)
    result = await got
    if isinstance(result, UpstreamError):
        raise result
    return result


async def post(pool: UpstreamPool, body: bytes = b"x", timeout: float = WAIT) -> UpstreamResponse:
    return await request(pool, b"POST", b"/invocations", [(b"Content-Type", b"a/b")], body, timeout)


def test_keep_alive_reuses_one_connection(run: Run) -> None:
    async def main() -> None:
        async with Server(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for i in range(20):
                resp = await post(pool, b"n%d" % i)
                assert (resp.status, resp.body) == (200, b"n%d" % i)
                assert resp.header(b"x-path") == b"/invocations"
                assert resp.header(b"content-length") == b"%d" % len(resp.body)
            assert server.connections == 1
            assert pool.idle == 1
            await pool.close()

    run(main())


def test_request_carries_host_content_length_and_headers(run: Run) -> None:
    seen: list[Req] = []

    async def record(req: Req) -> Reply:
        seen.append(req)
        return response(200)

    async def main() -> None:
        async with Server(record) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            await request(pool, b"POST", b"/invocations?a=1", [(b"X-A", b"1")], b"abc", WAIT)
            await pool.close()
            req = seen[0]
            assert (req.method, req.path, req.body) == (b"POST", b"/invocations?a=1", b"abc")
            assert req.headers[b"host"] == b"127.0.0.1:%d" % server.port
            assert req.headers[b"content-length"] == b"3"
            assert req.headers[b"x-a"] == b"1"

    run(main())


def test_chunked_response_is_reassembled_and_connection_reused(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return chunked([b"hello ", b"chunked ", b"world"])

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for _ in range(3):
                assert (await post(pool)).body == b"hello chunked world"
            assert server.connections == 1
            await pool.close()

    run(main())


@pytest.mark.parametrize("status", [204, 304])
def test_response_without_body(status: int, run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return f"HTTP/1.1 {status} X\r\nX-A: 1\r\n\r\n".encode()

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for _ in range(2):
                resp = await post(pool)
                assert (resp.status, resp.body, resp.header(b"x-a")) == (status, b"", b"1")
            assert server.connections == 1
            await pool.close()

    run(main())


def test_connection_close_is_honoured(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return response(200, b"bye", [(b"Connection", b"close")])

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for _ in range(3):
                assert (await post(pool)).body == b"bye"
            assert server.connections == 3
            assert pool.idle == 0
            await pool.close()

    run(main())


def test_body_delimited_by_end_of_stream(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            assert (await post(pool)).body == b"until the end"
            await pool.close()

    run(main())


def test_server_closing_idle_connection_is_retried_on_a_fresh_one(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        # The second request on any connection finds it closed by the server, as a
        # keep-alive timeout on the instance would; fresh connections answer.
        return None if req.seq == 1 else response(200, b"ok %d" % req.conn)

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            assert (await post(pool)).body == b"ok 0"
            assert (await post(pool)).body == b"ok 1"
            assert server.connections == 2
            await pool.close()

    run(main())


def test_server_closing_after_response_without_telling_is_survived(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return response(200, b"ok", [(b"X-Then-Close", b"1")])  # no Connection: close

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for _ in range(5):
                assert (await post(pool)).body == b"ok"
            assert server.connections == 5
            await pool.close()

    run(main())


def test_fresh_connection_closed_before_response_is_not_retried(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return None

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            with pytest.raises(UpstreamProtocolError, match="before any response"):
                await post(pool)
            assert server.connections == 1
            await pool.close()

    run(main())


def test_reused_connection_dropped_mid_response_is_not_retried(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        if req.seq == 0:
            return response(200, b"ok")
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\npartial"

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            await post(pool)
            with pytest.raises(UpstreamProtocolError, match="mid-response"):
                await post(pool)
            assert server.connections == 1
            await pool.close()

    run(main())


def test_malformed_response_is_a_protocol_error(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        return b"NOT HTTP AT ALL\r\n\r\n"

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            with pytest.raises(UpstreamProtocolError, match="malformed"):
                await post(pool)
            await pool.close()

    run(main())


def test_timeout_raises_and_connection_is_not_reused(run: Run) -> None:
    release = asyncio.Event()

    async def reply(req: Req) -> Reply:
        if req.path == b"/slow":
            await release.wait()
        return response(200, b"fast")

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            assert (await post(pool)).body == b"fast"
            with pytest.raises(UpstreamTimeout, match=r"within 0\.05 s"):
                await request(pool, b"POST", b"/slow", [], b"", 0.05)
            assert pool.idle == 0
            release.set()
            assert (await post(pool)).body == b"fast"
            assert server.connections == 2
            await pool.close()

    run(main())


def test_refused_port_is_a_connect_error(run: Run) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there

    async def main() -> None:
        pool = UpstreamPool(Address("127.0.0.1", port))
        with pytest.raises(UpstreamConnectError, match=f"127.0.0.1:{port}") as info:
            await post(pool)
        assert "refused" in info.value.reason.lower()
        assert pool.in_flight == 0

    run(main())


def test_concurrent_requests_and_in_flight(run: Run) -> None:
    arrived = 0
    all_arrived = asyncio.Event()
    release = asyncio.Event()

    async def reply(req: Req) -> Reply:
        nonlocal arrived
        arrived += 1
        if arrived == 50:
            all_arrived.set()
        await release.wait()
        return response(200, req.body)

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port), max_idle=8)
            calls = asyncio.gather(*(post(pool, b"req-%d" % i) for i in range(50)))
            async with asyncio.timeout(WAIT):
                await all_arrived.wait()
            assert pool.in_flight == 50
            release.set()
            responses = await calls
            assert [r.body for r in responses] == [b"req-%d" % i for i in range(50)]
            assert pool.in_flight == 0
            assert server.connections == 50
            assert pool.idle == 8
            await pool.close()

    run(main())


def test_large_bodies_both_ways(run: Run) -> None:
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256)

    async def main() -> None:
        async with Server(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for _ in range(2):
                assert (await post(pool, big)).body == big
            assert server.connections == 1
            await pool.close()

    run(main())


def test_close_fails_busy_requests_and_refuses_new_ones(run: Run) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def reply(req: Req) -> Reply:
        arrived.set()
        await release.wait()
        return response(200)

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            task = asyncio.create_task(post(pool))
            async with asyncio.timeout(WAIT):
                await arrived.wait()
            await pool.close()
            with pytest.raises(UpstreamConnectError, match="closed"):
                await task
            with pytest.raises(UpstreamConnectError, match="closed"):
                await post(pool)
            release.set()

    run(main())


def test_connections_set_tcp_nodelay(run: Run) -> None:
    async def main() -> None:
        async with Server(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            await post(pool)
            (conn,) = pool._idle
            assert conn.transport is not None
            sock = conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            await pool.close()

    run(main())


def test_errors_share_a_base_with_a_reason() -> None:
    for cls in (UpstreamConnectError, UpstreamTimeout, UpstreamProtocolError):
        err = cls("why")
        assert isinstance(err, UpstreamError) and err.reason == "why" and str(err) == "why"
