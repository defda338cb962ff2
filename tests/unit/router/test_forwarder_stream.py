"""UpstreamPool.stream against scripted in-test HTTP servers on 127.0.0.1, plus its flow
control driven through a fake transport (no sockets)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import uvloop

from modelhost.publish import Address
from modelhost.router import upstream_conn, upstream_stream
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamStream,
    UpstreamTimeout,
)
from tests.unit.router.test_forwarder import request

WAIT = 10.0  # upper bound on any single wait in these tests
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Run = Callable[[Coroutine[Any, Any, None]], None]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(60):
                await coro

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(bounded())

    return runner


class Upstream:
    """A loopback server that runs `script` for each connection; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.port = 0
        self.connections = 0
        self.closed = asyncio.Event()  # set whenever a connection ends
        self._writers: list[asyncio.StreamWriter] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()


@asynccontextmanager
async def upstream(script: Script) -> AsyncIterator[Upstream]:
    up = Upstream(script)
    server = await asyncio.start_server(up._serve, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()
        for writer in up._writers:
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


async def open_stream(
    pool: UpstreamPool, timeout: float = WAIT, first_byte_timeout: float = WAIT
) -> UpstreamStream:
    head = pool.head(b"POST", b"/invocations", [(b"Content-Type", b"a/b")], 1)
    return await pool.stream(head, b"x", timeout, first_byte_timeout)


async def drain(stream: UpstreamStream) -> list[bytes]:
    return [part async for part in stream]


def test_parts_arrive_as_they_are_sent(run: Run) -> None:
    release = asyncio.Queue[bytes | None]()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        while (data := await release.get()) is not None:
            writer.write(chunk(data))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await reader.read()  # keep the connection open until the client closes it

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            stream = await open_stream(pool)
            assert (stream.status, stream.header(b"content-type")) == (200, b"text/plain")
            assert pool.in_flight == 1
            parts = aiter(stream)
            for word in (b"one", b"two", b"three"):
                release.put_nowait(word)  # the next part is only sent after the last arrived
                assert await anext(parts) == word
            release.put_nowait(None)
            assert await drain(stream) == []
            await stream.aclose()
            assert (pool.in_flight, pool.idle) == (0, 1)
            await pool.close()

    run(main())


def test_connection_is_reused_after_a_complete_stream(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await read_request(reader)
            writer.write(CHUNKED_HEAD + chunk(b"a") + chunk(b"bc") + b"0\r\n\r\n")
        await reader.read()

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            for _ in range(2):
                stream = await open_stream(pool)
                assert await drain(stream) == [b"a", b"bc"]
            resp = await request(pool, b"POST", b"/invocations", [], b"x", WAIT)
            assert resp.body == b"abc"  # send reuses a connection a stream used
            assert up.connections == 1
            await pool.close()

    run(main())


def test_content_length_body_is_one_part(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        await writer.drain()
        writer.write(b"world")
        await reader.read()

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            assert await drain(await open_stream(pool)) == [b"helloworld"]
            await pool.close()

    run(main())


def test_error_status_and_body_before_the_stream(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom")
        await reader.read()

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            stream = await open_stream(pool)
            assert (stream.status, b"".join(await drain(stream))) == (500, b"boom")
            await pool.close()

    run(main())


def test_abnormal_end_raises_after_the_parts_that_arrived(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"first") + chunk(b"second"))
        # returning closes the connection without the last chunk

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            stream = await open_stream(pool)
            got = []
            with pytest.raises(UpstreamProtocolError):
                async for part in stream:
                    got.append(part)
            assert got == [b"first", b"second"]
            await stream.aclose()
            assert (pool.in_flight, pool.idle) == (0, 0)
            await pool.close()

    run(main())


def test_first_byte_timeout(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(UpstreamTimeout):
                await open_stream(pool, timeout=WAIT, first_byte_timeout=0.2)
            assert loop.time() - start < WAIT / 2
            assert (pool.in_flight, pool.idle) == (0, 0)
            await pool.close()

    run(main())


def test_whole_stream_timeout_after_the_head(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"only"))
        await reader.read()  # stalls mid-body

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            stream = await open_stream(pool, timeout=0.3, first_byte_timeout=0.2)
            parts = aiter(stream)
            assert await anext(parts) == b"only"
            with pytest.raises(UpstreamTimeout):
                await anext(parts)
            await stream.aclose()
            assert pool.in_flight == 0
            await pool.close()

    run(main())


def test_refused_port_is_a_connect_error(run: Run) -> None:
    async def main() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # closed again: nothing listens there
        pool = UpstreamPool(Address("127.0.0.1", port))
        with pytest.raises(UpstreamConnectError):
            await open_stream(pool)
        assert pool.in_flight == 0

    run(main())


def test_stale_idle_connection_is_retried_on_a_fresh_one(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close the keep-alive connection, as an instance's idle timeout would

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            assert (await request(pool, b"POST", b"/", [], b"", WAIT)).body == b"ok"
            await up.closed.wait()
            assert await drain(await open_stream(pool)) == [b"ok"]
            assert up.connections == 2
            await pool.close()

    run(main())


def test_aclose_before_the_end_drops_the_connection(run: Run) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"one"))
        await reader.read()  # returns once the client drops the connection

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            stream = await open_stream(pool)
            assert await anext(aiter(stream)) == b"one"
            await stream.aclose()
            await stream.aclose()  # idempotent
            async with asyncio.timeout(WAIT):
                await up.closed.wait()
            assert (pool.in_flight, pool.idle) == (0, 0)
            await pool.close()

    run(main())


def test_large_stream_arrives_intact(run: Run) -> None:
    parts = [bytes([i % 251]) * (1000 + i) for i in range(2000)]  # ~3 MB

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(CHUNKED_HEAD)
        for part in parts:
            writer.write(chunk(part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await reader.read()

    async def main() -> None:
        async with upstream(script) as up:
            pool = UpstreamPool(Address("127.0.0.1", up.port))
            stream = await open_stream(pool)
            got = []
            async for part in stream:
                got.append(part)
                await asyncio.sleep(0)  # a consumer slower than the socket
            assert got == parts
            assert pool.idle == 1
            await pool.close()

    run(main())


# -- flow control, through a fake transport -------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.aborted

    def get_extra_info(self, name: str) -> None:
        return None

    def abort(self) -> None:
        self.aborted = True

    close = abort


def test_slow_consumer_pauses_and_resumes_reading(run: Run) -> None:
    async def main() -> None:
        pool = UpstreamPool(Address("127.0.0.1", 1))
        conn = upstream_conn.UpstreamConnection(set())
        transport = FakeTransport()
        conn.connection_made(cast(asyncio.Transport, transport))
        pool._idle.append(conn)  # as if kept alive from an earlier request
        opening = asyncio.ensure_future(pool.stream(b"req", b"", WAIT, WAIT))
        await asyncio.sleep(0)  # let the pool send the request
        conn.data_received(CHUNKED_HEAD)
        stream = await opening
        part = b"x" * 16384
        sent = 0
        while transport.reading:  # bounded: the high-water mark is finite
            conn.data_received(chunk(part))
            sent += 1
            assert sent * len(part) <= upstream_stream.STREAM_HIGH_WATER + len(part)
        parts = aiter(stream)
        received = 0
        while not transport.reading:
            assert await anext(parts) == part
            received += 1
        assert (sent - received) * len(part) <= upstream_stream.STREAM_LOW_WATER
        conn.data_received(b"0\r\n\r\n")
        assert len([p async for p in parts]) == sent - received
        assert pool.idle == 1  # complete: the connection went back to the pool

    run(main())
