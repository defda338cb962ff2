"""UpstreamPool.send, the callback interface every invoke path uses."""

from __future__ import annotations

import asyncio
import socket

import pytest

from modelhost.publish import Address
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from tests.unit.router.test_forwarder import WAIT, Reply, Req, Run, Server, echo, response, run

__all__ = ["run"]  # the fixture, shared with test_forwarder


async def submitted(
    pool: UpstreamPool, path: bytes = b"/invocations", body: bytes = b"x", timeout: float = WAIT
) -> UpstreamResponse | UpstreamError:
    """Submit one request; the outcome its callback got (it must get exactly one)."""
    outcomes: list[UpstreamResponse | UpstreamError] = []
    got = asyncio.Event()

    def done(result: UpstreamResponse | UpstreamError) -> None:
        outcomes.append(result)
        got.set()

    pool.send(pool.head(b"POST", path, [(b"content-type", b"a/b")], len(body)), body, timeout, done)
    await asyncio.wait_for(got.wait(), WAIT)
    await asyncio.sleep(0)  # a second call would come now
    assert len(outcomes) == 1
    return outcomes[0]


def test_submit_answers_through_the_callback_on_one_kept_alive_connection(run: Run) -> None:
    async def main() -> None:
        async with Server(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for i in range(10):
                resp = await submitted(pool, body=b"n%d" % i)
                assert isinstance(resp, UpstreamResponse)
                assert (resp.status, resp.body) == (200, b"n%d" % i)
            assert server.connections == 1
            assert (pool.idle, pool.in_flight) == (1, 0)
            await pool.close()

    run(main())


def test_submit_retries_once_when_the_idle_connection_was_closed(run: Run) -> None:
    async def reply(req: Req) -> Reply:
        # The second request on any connection finds it closed by the server (a keep-alive
        # timeout on the instance); fresh connections answer.
        return None if req.seq == 1 else response(200, b"ok %d" % req.conn)

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            for expected in (b"ok 0", b"ok 1"):
                resp = await submitted(pool)
                assert isinstance(resp, UpstreamResponse) and resp.body == expected
            assert server.connections == 2
            assert pool.in_flight == 0
            await pool.close()

    run(main())


def test_submit_reports_a_refused_connection(run: Run) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there

    async def main() -> None:
        pool = UpstreamPool(Address("127.0.0.1", port))
        err = await submitted(pool)
        assert isinstance(err, UpstreamConnectError) and f"127.0.0.1:{port}" in err.reason
        assert pool.in_flight == 0
        await pool.close()
        closed = await submitted(pool)
        assert isinstance(closed, UpstreamConnectError) and "closed" in closed.reason

    run(main())


def test_each_request_gets_its_own_deadline_on_a_reused_connection(run: Run) -> None:
    """The connection keeps one lazy timer: a short deadline set for an earlier request must
    not cut a later, longer one short, and a later short one must still fire."""

    async def reply(req: Req) -> Reply:
        if req.path == b"/slow":
            await asyncio.sleep(0.3)
        return response(200, req.path)

    async def main() -> None:
        async with Server(reply) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            fast = await submitted(pool, b"/fast", timeout=0.1)
            assert isinstance(fast, UpstreamResponse)
            slow = await submitted(pool, b"/slow", timeout=WAIT)  # outlives the 0.1 s timer
            assert isinstance(slow, UpstreamResponse) and slow.body == b"/slow"
            assert server.connections == 1
            late = await submitted(pool, b"/slow", timeout=0.05)
            assert isinstance(late, UpstreamTimeout) and "within 0.05 s" in late.reason
            assert (pool.idle, pool.in_flight) == (0, 0)  # a timed-out connection is dropped
            await pool.close()

    run(main())


@pytest.mark.parametrize("count", [32])
def test_concurrent_submits_each_get_their_own_answer(count: int, run: Run) -> None:
    async def main() -> None:
        async with Server(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            results = await asyncio.gather(*(submitted(pool, body=b"%d" % i) for i in range(count)))
            bodies = [r.body for r in results if isinstance(r, UpstreamResponse)]
            assert bodies == [b"%d" % i for i in range(count)]
            assert pool.in_flight == 0
            await pool.close()

    run(main())


def test_closing_while_connecting_still_answers_every_request(run: Run) -> None:
    """A request waiting for a new connection when the pool closes (an instance lost) gets a
    connect error, never silence: the caller retries it elsewhere."""

    async def main() -> None:
        async with Server(echo) as server:
            pool = UpstreamPool(Address("127.0.0.1", server.port))
            outcomes: list[UpstreamResponse | UpstreamError] = []
            for _ in range(4):  # no idle connection: each starts connecting
                pool.send(pool.head(b"POST", b"/", [], 1), b"x", WAIT, outcomes.append)
            await pool.close()
            async with asyncio.timeout(WAIT):
                while len(outcomes) < 4:
                    await asyncio.sleep(0.001)
            assert all(isinstance(o, UpstreamConnectError) for o in outcomes), outcomes
            assert pool.in_flight == 0

    run(main())
