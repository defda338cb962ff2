"""Group commit for the asynchronous inference path: calls that arrive while a batch is in
the store go together in the next one, so concurrent requests share one thread hop and one
transaction.

There is no window: a call made while nothing is running starts its batch on the event loop's
next turn (it waits only for the calls made in the same turn), so a lone request pays no added
latency; under load a batch collects whatever arrived while the previous one ran. Each caller
gets its own item's result, or the batch's exception, once the batch function has returned
(for a store write: once it is committed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from modelhost.asyncinf.objects import ObjectIOError, read_small_local, write_object
from modelhost.asyncinf.records import AsyncRequest, RequestStatus
from modelhost.state.async_queue import AsyncQueue
from modelhost.storage import ObjectStore

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 256  # items per batch (and per transaction)


class GroupCommit(Generic[T, R]):
    """Run ``run`` (synchronous: off the event loop, in a thread) over batches of items; it
    returns one result per item, in order."""

    def __init__(self, run: Callable[[list[T]], Sequence[R]], max_batch: int = MAX_BATCH) -> None:
        self._run = run
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches run (tests and benchmarks read it)

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            for _ in range(1 << 30):  # bounded: every pass takes at least one item
                if not self._pending:
                    break
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                await self._one(batch)
        finally:
            self._task = None
            for _, future in self._pending:  # only when cancelled (the loop is stopping)
                future.cancel()
            self._pending.clear()

    async def _one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        try:
            results = await asyncio.to_thread(self._run, [item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


# -- the workers' batches (each runs in one thread hop) ------------------------------------

PREFETCH_BYTES = 1 << 20  # local inputs up to this size are read in the claim's thread hop

Input = bytes | None  # the input, read in the claim's hop; None: to be read on its own


@dataclass(frozen=True, slots=True)
class Ending:
    """A request to end: write ``data`` to ``location`` (none: nothing to write), then set
    ``status``. A result that cannot be written leaves a DONE request running (the caller
    fails it); a failure document that cannot be written still fails the request, with the
    write's error added to the reason."""

    req: AsyncRequest
    status: RequestStatus
    location: str | None
    data: bytes
    reason: str | None


@dataclass(frozen=True, slots=True)
class Ended:
    error: ObjectIOError | None  # the object could not be written
    ended: bool  # the request ended (False: not written, or the lease was lost)
    reason: str | None  # the reason recorded


class Batches:
    """The workers' group commits: claims (with their small local inputs read in the same
    hop) and endings (objects written, then every request ended in one transaction)."""

    def __init__(
        self,
        queue: AsyncQueue,
        objects: ObjectStore,
        owner: str,
        clock: Callable[[], float],
        lease_s: float,
        max_input: int,
    ) -> None:
        self.queue, self.objects, self.owner = queue, objects, owner
        self._clock, self._lease_s, self._max_input = clock, lease_s, max_input
        self.claims: GroupCommit[tuple[str, int], list[tuple[AsyncRequest, Input]]]
        self.claims = GroupCommit(self._claim)
        self.ends: GroupCommit[Ending, Ended] = GroupCommit(self._end)

    def _claim(self, wants: list[tuple[str, int]]) -> list[list[tuple[AsyncRequest, Input]]]:
        """Each (endpoint, limit) gets up to ``limit`` of that endpoint's oldest requests; one
        claim per endpoint for the batch's wants together."""
        totals: dict[str, int] = {}
        for endpoint, limit in wants:
            totals[endpoint.lower()] = totals.get(endpoint.lower(), 0) + max(0, limit)
        now = self._clock()
        claimed = {
            endpoint: self.queue.claim(endpoint, self.owner, now, self._lease_s, total)
            for endpoint, total in totals.items()
        }
        out: list[list[tuple[AsyncRequest, Input]]] = []
        for endpoint, limit in wants:
            mine = claimed[endpoint.lower()]
            share, claimed[endpoint.lower()] = mine[: max(0, limit)], mine[max(0, limit) :]
            out.append([(req, self._prefetch(req)) for req in share])
        return out

    def _prefetch(self, req: AsyncRequest) -> Input:
        if req.body is not None:
            return None
        return read_small_local(req.input_location, min(PREFETCH_BYTES, self._max_input))

    def _end(self, endings: list[Ending]) -> list[Ended]:
        results: list[tuple[ObjectIOError | None, str | None]] = []
        ends: list[tuple[str, RequestStatus, str | None]] = []
        for e in endings:
            error, reason = None, e.reason
            if e.location is not None:
                try:
                    write_object(self.objects, e.location, e.data)
                except ObjectIOError as exc:
                    error = exc
            if error is not None and e.status is RequestStatus.FAILED:
                reason = f"{reason} The failure object could not be written: {error}"
            if error is None or e.status is RequestStatus.FAILED:
                ends.append((e.req.request_id, e.status, reason))
            results.append((error, reason))
        done = self.queue.finish_many(ends, self.owner, self._clock()) if ends else set()
        return [
            Ended(error, e.req.request_id in done, reason)
            for e, (error, reason) in zip(endings, results, strict=True)
        ]
