"""The per-instance budget of batches in memory: a file waiting for a token writes out its own
answers meanwhile, so files sharing an instance never wait on each other forever."""

from __future__ import annotations

import asyncio

from modelhost.jobs.transform import _take


def test_a_free_token_is_taken_at_once() -> None:
    async def scenario() -> None:
        budget = asyncio.Semaphore(1)
        assert await _take(budget, None)
        assert budget.locked()

    asyncio.run(scenario())


def test_the_head_answering_first_wins_and_no_token_is_lost() -> None:
    async def scenario() -> None:
        budget = asyncio.Semaphore(1)
        await budget.acquire()  # held by this file's own pending request
        head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, head.set_result, b"answer")
        assert await asyncio.wait_for(_take(budget, head), 5) is False
        budget.release()  # the caller wrote the head out
        assert await asyncio.wait_for(_take(budget, None), 5)
        assert budget.locked()

    asyncio.run(scenario())


def test_a_token_freed_by_another_file_is_taken() -> None:
    async def scenario() -> None:
        budget = asyncio.Semaphore(1)
        await budget.acquire()
        head: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, budget.release)
        assert await asyncio.wait_for(_take(budget, head), 5) is True
        head.cancel()

    asyncio.run(scenario())
