"""The pipelined connection to a built-in instance (upstream_pipe.py), as UpstreamPool opens it,
against a real Unix-socket server that answers requests in order, as the built-in one does."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from modelhost.publish import Address
from modelhost.router.forwarder import (
    PIPE_BODY_MAX,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.router.upstream_pipe import FLUSH_AT, Pipeline
from modelhost.router.upstream_types import ClosedBeforeResponse, UpstreamError
from tests.unit.router.test_forwarder import (
    WAIT,
    Reply,
    Req,
    Run,
    Server,
    chunked,
    echo,
    response,
)
from tests.unit.router.test_forwarder import run as run

Outcome = UpstreamResponse | UpstreamError


class UnixServer(Server):
    """The test server on a Unix socket (in a temporary directory)."""

    path: str = ""

    async def __aenter__(self) -> UnixServer:
        self._tmp = tempfile.TemporaryDirectory()
        self.path = str(Path(self._tmp.name) / "instance.sock")
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        self._tmp.cleanup()


async def open_pipe(pool: UpstreamPool) -> Pipeline:
    """The pool's pipelined connection, once connected: the first request sent finds none and
    starts connecting it (that request goes on a connection of its own)."""
    got: list[Outcome] = []
    pool.send(*request(b"first"), WAIT, got.append)
    async with asyncio.timeout(WAIT):
        while (pipe := pool.pipeline) is None or not got:
            await asyncio.sleep(0.001)
    return pipe


def request(body: bytes) -> tuple[bytes, bytes]:
    """A request's head and body."""
    return b"POST /invocations HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body), body


async def send_all(pipe: Pipeline, bodies: list[bytes], timeout: float = WAIT) -> list[Outcome]:
    """Send every body in one loop pass; each outcome, in the order sent (each exactly once)."""
    loop = asyncio.get_running_loop()
    outcomes: list[list[Outcome]] = [[] for _ in bodies]
    for i, body in enumerate(bodies):
        pipe.send(*request(body), loop.time() + timeout, timeout, outcomes[i].append)
    return await collected(outcomes)


async def collected(outcomes: list[list[Outcome]]) -> list[Outcome]:
    """Once every request has its outcome: each one's, checking it got exactly one."""
    async with asyncio.timeout(WAIT):
        while not all(outcomes):
            await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)  # a second outcome would come now
    assert all(len(got) == 1 for got in outcomes)
    return [got[0] for got in outcomes]


def test_requests_of_one_pass_share_a_connection_and_are_answered_in_order(run: Run) -> None:
    async def main() -> None:
        async with UnixServer(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            bodies = [b"request %d" % i for i in range(40)]
            got = await send_all(pipe, bodies)
            assert [r.body if isinstance(r, UpstreamResponse) else r for r in got] == bodies
            got = await send_all(pipe, [b"again"])
            assert isinstance(got[0], UpstreamResponse) and got[0].body == b"again"
            assert server.connections == 2  # the pipeline, and the first request's own
            assert pool.pipeline is pipe and pipe.depth == 0
            await pool.close()
            assert not pipe.open

    run(main())


def test_requests_are_written_every_flush_at_and_at_the_end_of_the_loop_pass(run: Run) -> None:
    async def main() -> None:
        async with UnixServer(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            loop = asyncio.get_running_loop()
            answers: list[Outcome] = []
            for i in range(FLUSH_AT + 3):
                pipe.send(*request(b"%d" % i), loop.time() + WAIT, WAIT, answers.append)
                assert pipe.unsent == (i + 1) % FLUSH_AT  # written at once every FLUSH_AT
            await asyncio.sleep(0)  # the end of this pass writes the rest
            assert pipe.unsent == 0
            async with asyncio.timeout(WAIT):
                while len(answers) < FLUSH_AT + 3:
                    await asyncio.sleep(0.001)
            assert [a.body for a in answers if isinstance(a, UpstreamResponse)] == [
                b"%d" % i for i in range(FLUSH_AT + 3)
            ]
            await pool.close()

    run(main())


def test_a_pool_without_pipelining_or_a_unix_socket_has_no_pipe(run: Run) -> None:
    async def main() -> None:
        async with UnixServer(echo) as server:
            plain = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path))
            got: list[Outcome] = []
            plain.send(*request(b"x"), WAIT, got.append)
            async with asyncio.timeout(WAIT):
                while not got:
                    await asyncio.sleep(0.001)
            assert plain.pipeline is None and not plain.pipelined
            assert not UpstreamPool(Address("127.0.0.1", 1, pipelined=True)).pipelined
            assert server.connections == 1
            await plain.close()

    run(main())


def test_when_the_head_request_times_out_the_rest_are_returned_unsent(run: Run) -> None:
    async def slow_first(req: Req) -> Reply:
        if req.body == b"slow":
            await asyncio.sleep(WAIT)
        return response(200, req.body)

    async def main() -> None:
        async with UnixServer(slow_first) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            got = await send_all(pipe, [b"slow", b"b", b"c"], timeout=0.2)
            assert isinstance(got[0], UpstreamTimeout)
            assert all(isinstance(r, ClosedBeforeResponse) for r in got[1:])
            assert not pipe.open
            fresh = await open_pipe(pool)  # the pool connects a new one
            assert fresh is not pipe
            answer = (await send_all(fresh, [b"d"]))[0]
            assert isinstance(answer, UpstreamResponse) and answer.body == b"d"
            await pool.close()

    run(main())


def test_when_the_instance_closes_the_unanswered_requests_are_returned_unsent(run: Run) -> None:
    async def close_on_second(req: Req) -> Reply:
        return None if req.seq == 1 else response(200, req.body)

    async def main() -> None:
        async with UnixServer(close_on_second) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            got = await send_all(pipe, [b"a", b"b", b"c"])
            assert isinstance(got[0], UpstreamResponse) and got[0].body == b"a"
            assert all(isinstance(r, ClosedBeforeResponse) for r in got[1:])
            await pool.close()

    run(main())


def test_an_answer_that_closes_the_connection_ends_the_pipeline_after_it(run: Run) -> None:
    async def close_after_first(req: Req) -> Reply:
        if req.seq == 0:
            return response(200, req.body, [(b"Connection", b"close")])
        return response(200, req.body)

    async def main() -> None:
        async with UnixServer(close_after_first) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            got = await send_all(pipe, [b"a", b"b"])
            assert isinstance(got[0], UpstreamResponse) and got[0].body == b"a"
            assert isinstance(got[1], ClosedBeforeResponse)
            assert not pipe.open
            await pool.close()

    run(main())


def test_a_malformed_answer_fails_the_head_request_and_returns_the_rest(run: Run) -> None:
    async def garbage(req: Req) -> Reply:
        return b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"

    async def main() -> None:
        async with UnixServer(garbage) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            got = await send_all(pipe, [b"a", b"b"])
            assert isinstance(got[0], UpstreamError)
            assert not isinstance(got[0], ClosedBeforeResponse)
            assert isinstance(got[1], ClosedBeforeResponse)
            await pool.close()

    run(main())


def test_a_pool_stops_pipelining_to_an_instance_that_streams(run: Run) -> None:
    async def chunks_then_close(req: Req) -> Reply:
        # as the built-in server does behind a chunked answer: the rest is not answered
        return chunked([b"a", b"b"]) if req.seq == 0 else None

    async def main() -> None:
        async with UnixServer(chunks_then_close) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            got = await send_all(pipe, [b"x", b"y"])
            assert isinstance(got[0], UpstreamResponse) and got[0].body == b"ab"
            assert isinstance(got[1], ClosedBeforeResponse)
            async with asyncio.timeout(WAIT):
                while pipe.transport is not None:
                    await asyncio.sleep(0.001)
            assert not pool.pipelined and pool.pipeline is None
            await pool.close()

    run(main())


async def send_through(
    pool: UpstreamPool, bodies: list[bytes], timeouts: list[float] | None = None
) -> list[Outcome]:
    """``pool.send`` each body in one loop pass; each outcome, in the order sent."""
    outcomes: list[list[Outcome]] = [[] for _ in bodies]
    for i, body in enumerate(bodies):
        pool.send(*request(body), timeouts[i] if timeouts else WAIT, outcomes[i].append)
    return await collected(outcomes)


def test_the_pool_sends_on_its_open_pipeline_and_counts_in_flight(run: Run) -> None:
    async def main() -> None:
        async with UnixServer(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            bodies = [b"r%d" % i for i in range(20)]
            outcomes: list[list[Outcome]] = [[] for _ in bodies]
            for i, body in enumerate(bodies):
                pool.send(*request(body), WAIT, outcomes[i].append)
            assert pool.in_flight == 20 and pipe.depth + pipe.unsent >= 20 - FLUSH_AT
            got = await send_through(pool, [b"last"])
            assert isinstance(got[0], UpstreamResponse)
            assert [o[0].body for o in outcomes if isinstance(o[0], UpstreamResponse)] == bodies
            assert pool.in_flight == 0 and server.connections == 2
            await pool.close()

    run(main())


def test_requests_behind_a_timed_out_head_are_sent_again_on_fresh_connections(run: Run) -> None:
    async def slow_first(req: Req) -> Reply:
        if req.body == b"slow":
            await asyncio.sleep(WAIT)
        return response(200, req.body)

    async def main() -> None:
        async with UnixServer(slow_first) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            await open_pipe(pool)
            got = await send_through(pool, [b"slow", b"b", b"c"], [0.3, WAIT, WAIT])
            assert isinstance(got[0], UpstreamTimeout)
            assert [r.body for r in got[1:] if isinstance(r, UpstreamResponse)] == [b"b", b"c"]
            assert pool.in_flight == 0
            await pool.close()

    run(main())


def test_large_bodies_go_on_connections_of_their_own_and_arrive_intact(run: Run) -> None:
    async def tagged(req: Req) -> Reply:
        return response(200, b"%d:%b" % (req.conn, req.body))

    async def main() -> None:
        async with UnixServer(tagged) as server:
            pool = UpstreamPool(Address("127.0.0.1", 1, unix_path=server.path, pipelined=True))
            pipe = await open_pipe(pool)
            small, large = b"s" * PIPE_BODY_MAX, bytes(range(256)) * (4 * PIPE_BODY_MAX // 256)
            got = await send_through(pool, [small, large, small])
            conns, bodies = zip(
                *(r.body.split(b":", 1) for r in got if isinstance(r, UpstreamResponse)),
                strict=True,
            )
            assert list(bodies) == [small, large, small]
            assert conns[0] == conns[2] != conns[1]  # the small ones on the pipeline
            assert pipe.open
            await pool.close()

    run(main())
