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

from modelhost.asyncinf.objects import ObjectIOError, is_local, read_small_local, write_object
from modelhost.asyncinf.records import AsyncRequest, RequestStatus
from modelhost.state.async_queue import AsyncQueue
from modelhost.storage import ObjectStore

T = TypeVar("T")
R = TypeVar("R")
# Told an item's result, or the exception that ended its batch.
Done = Callable[[R | BaseException], None]

MAX_BATCH = 256  # items per batch (and per transaction)


class GroupCommit(Generic[T, R]):
    """Run ``run`` (synchronous: off the event loop, in a thread) over batches of items; it
    returns one result per item, in order. ``here``, when given, is tried first, on the event
    loop: it runs a batch there when that cannot wait on anything (a SQLite store no other
    thread is writing, local objects), or returns None, and the batch goes to ``run``."""

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        max_batch: int = MAX_BATCH,
        here: Callable[[list[T]], Sequence[R] | None] | None = None,
        slow: Callable[[T], bool] | None = None,
    ) -> None:
        self._run = run
        self._here = here
        # An item that keeps its batch off the loop whatever the store (a large or remote
        # object to write): the others of its batch go first, in a batch of their own, so
        # that they do not wait on it (an accepted request's 202 on an upload).
        self._slow = slow
        self._max = max_batch
        self._pending: list[tuple[T, Done[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop ``_task`` runs on
        self.batches = 0  # batches run (tests and benchmarks read it)

    async def submit(self, item: T) -> R:
        # The batch under way runs on this loop: no lookup (on 3.11 it makes a system call).
        loop = self._loop
        if self._task is None or loop is None:
            loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()

        def done(result: R | BaseException) -> None:
            if future.done():
                return
            if isinstance(result, asyncio.CancelledError):
                future.cancel()
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.add(item, done)
        return await future

    def add(self, item: T, done: Done[R]) -> None:
        """``submit`` without a future or a task: ``done`` gets the item's result (or the
        batch's exception; ``CancelledError`` when the loop stops first), once, on the event
        loop (the front server's fast path answers from it)."""
        self._pending.append((item, done))
        if self._task is None:  # (one loop lookup per batch: on 3.11 it makes a system call)
            self._loop = loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            for _ in range(1 << 30):  # bounded: every pass takes at least one item
                if not self._pending:
                    break
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                if self._slow is not None:
                    slow = [entry for entry in batch if self._slow(entry[0])]
                    if slow and len(slow) < len(batch):
                        await self._one([entry for entry in batch if not self._slow(entry[0])])
                        batch = slow
                await self._one(batch)
        finally:
            self._task = None
            pending, self._pending = self._pending, []
            for _, done in pending:  # only when cancelled (the loop is stopping)
                done(asyncio.CancelledError())

    async def _one(self, batch: list[tuple[T, Done[R]]]) -> None:
        self.batches += 1
        items = [item for item, _ in batch]
        try:
            results = None if self._here is None else self._here(items)
            if results is None:
                results = await asyncio.to_thread(self._run, items)
        except asyncio.CancelledError as exc:
            for _, done in batch:
                done(exc)
            raise
        except Exception as exc:
            for _, done in batch:
                done(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done(result)


# -- the workers' batches (each runs in one thread hop) ------------------------------------

PREFETCH_BYTES = 1 << 20  # local inputs up to this size are read in the claim's thread hop
# A batch runs on the event loop (GroupCommit's ``here``) when each object it writes is local
# and at most this large; its claims then read local inputs up to this size with it.
HERE_BYTES = 64 * 1024

Input = bytes | None  # the input, read in the claim's hop; None: to be read on its own


Claimed = tuple[AsyncRequest, Input]
Want = tuple[str, int]  # (endpoint, how many requests)


@dataclass(frozen=True, slots=True)
class Ending:
    """A request to end: write ``data`` to ``location`` (none: nothing to write), then set
    ``status``; with ``then_claim``, claim that endpoint's next request in the same
    transaction (for the slot this one leaves). A result that cannot be written leaves a DONE
    request running (the caller fails it, and nothing is claimed); a failure document that
    cannot be written still fails the request, with the write's error added to the reason."""

    req: AsyncRequest
    status: RequestStatus
    location: str | None
    data: bytes
    reason: str | None
    then_claim: str | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    error: ObjectIOError | None  # the object could not be written
    ended: bool  # the request ended (False: not written, or the lease was lost)
    reason: str | None  # the reason recorded
    next: list[Claimed] | None  # claimed for ``then_claim`` (None: no claim was made)


Item = Ending | Want | AsyncRequest  # (an AsyncRequest: to be queued)
Result = Ended | list[Claimed] | None  # (None: the request was queued)


class Batches:
    """The workers' group commit: claims (with their small local inputs read in the same
    hop), endings (objects written, then every request ended) and InvokeEndpointAsync's
    accepted requests (``queue``: api/async_invocations.py) that arrive together share one
    thread hop and one transaction."""

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
        self.commits: GroupCommit[Item, Result] = GroupCommit(
            self._run, here=self._here, slow=_slow
        )

    async def claim(self, endpoint: str, limit: int) -> list[Claimed]:
        """Up to ``limit`` of the endpoint's oldest requests, claimed."""
        result = await self.commits.submit((endpoint, limit))
        assert isinstance(result, list)
        return result

    async def end(self, ending: Ending) -> Ended:
        result = await self.commits.submit(ending)
        assert isinstance(result, Ended)
        return result

    def queue_request(self, req: AsyncRequest, done: Done[None]) -> None:
        """Queue ``req`` with the next batch; ``done`` is told None once it is committed (or
        the batch's exception), on the event loop (``GroupCommit.add``)."""
        self.commits.add(req, done)  # type: ignore[arg-type]  # (told None: see _run)

    async def submit_request(self, req: AsyncRequest) -> None:
        """``queue_request``, awaited."""
        await self.commits.submit(req)

    def _here(self, items: list[Item]) -> list[Result] | None:
        """``_run`` on the event loop, when nothing in it can wait: else None."""
        for item in items:
            if isinstance(item, Ending) and not _writes_here(item):
                return None
        with self.queue.here() as free:
            return self._run(items, HERE_BYTES) if free else None

    def _run(self, items: list[Item], prefetch: int = PREFETCH_BYTES) -> list[Result]:
        written: dict[int, tuple[ObjectIOError | None, str | None]] = {}
        ends: list[tuple[str, RequestStatus, str | None]] = []
        wants: list[Want] = []
        queued: list[AsyncRequest] = []
        asked: dict[int, int] = {}  # item -> its index in wants
        for i, item in enumerate(items):
            if isinstance(item, AsyncRequest):
                queued.append(item)
                continue
            if not isinstance(item, Ending):
                asked[i] = len(wants)
                wants.append(item)
                continue
            error, reason = self._write(item)
            written[i] = (error, reason)
            if error is None or item.status is RequestStatus.FAILED:
                ends.append((item.req.request_id, item.status, reason))
                if item.then_claim is not None:
                    asked[i] = len(wants)
                    wants.append((item.then_claim, 1))
        done, shares = self.queue.finish_and_claim(
            ends, self.owner, self._clock(), wants, self._lease_s, queued
        )
        out: list[Result] = []
        for i, item in enumerate(items):
            if isinstance(item, AsyncRequest):
                out.append(None)
                continue
            mine = shares[asked[i]] if i in asked else None
            claimed = None if mine is None else [(r, self._prefetch(r, prefetch)) for r in mine]
            if isinstance(item, Ending):
                error, reason = written[i]
                out.append(Ended(error, item.req.request_id in done, reason, claimed))
            else:
                out.append(claimed or [])
        return out

    def _write(self, e: Ending) -> tuple[ObjectIOError | None, str | None]:
        if e.location is None:
            return None, e.reason
        try:
            write_object(self.objects, e.location, e.data)
        except ObjectIOError as exc:
            if e.status is RequestStatus.FAILED:
                return exc, f"{e.reason} The failure object could not be written: {exc}"
            return exc, e.reason
        return None, e.reason

    def _prefetch(self, req: AsyncRequest, limit: int) -> Input:
        if req.body is not None:
            return None
        return read_small_local(req.input_location, min(limit, self._max_input))


def _slow(item: Item) -> bool:
    """An ending whose object cannot be written on the event loop (large, or not local)."""
    return isinstance(item, Ending) and not _writes_here(item)


def _writes_here(e: Ending) -> bool:
    """Whether the ending's object (if any) is small and local: quick to write anywhere."""
    return e.location is None or (len(e.data) <= HERE_BYTES and is_local(e.location))
