"""Group commit: calls made together share one batch; a lone call goes at once; a batch's
failure reaches each of its callers. And the local object writes the batches make."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from modelhost.asyncinf import objects
from modelhost.asyncinf.batches import Batches, Ended, Ending, GroupCommit
from modelhost.asyncinf.objects import read_small_local, write_object
from modelhost.asyncinf.records import AsyncRequest, RequestStatus
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.store import Store
from modelhost.storage.local import LocalObjectStore


def test_concurrent_calls_share_a_batch_and_each_gets_its_result() -> None:
    seen: list[list[int]] = []
    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        seen.append(items)
        if len(seen) == 1:
            assert release.wait(5.0)  # hold the first batch while more calls arrive
        return [i * 10 for i in items]

    async def scenario() -> list[int]:
        commit: GroupCommit[int, int] = GroupCommit(run)
        first = asyncio.ensure_future(commit.submit(1))
        for _ in range(200):  # poll until the first batch is in its thread
            if seen:
                break
            await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(commit.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        release.set()
        return list(await asyncio.gather(first, *rest))

    assert asyncio.run(scenario()) == [10, 20, 30, 40]
    assert seen == [[1], [2, 3, 4]]  # the lone call went alone; the waiting ones together


def test_the_quick_items_of_a_batch_do_not_wait_on_its_slow_ones() -> None:
    # (an accepted request's 202 must not wait on another request's upload)
    seen: list[list[int]] = []
    told: list[int] = []

    def run(items: list[int]) -> list[int]:
        seen.append(items)
        return items

    async def scenario() -> None:
        commit: GroupCommit[int, int] = GroupCommit(run, slow=lambda n: n % 2 == 1)
        for n in (1, 2, 3, 4):
            commit.add(n, lambda r: told.append(r if isinstance(r, int) else -1))
        for _ in range(200):
            if len(told) == 4:
                break
            await asyncio.sleep(0.005)

    asyncio.run(scenario())
    assert seen == [[2, 4], [1, 3]] and told == [2, 4, 1, 3]


def test_a_batch_is_bounded_and_its_failure_reaches_every_caller() -> None:
    def run(items: list[int]) -> list[int]:
        if 99 in items:
            raise RuntimeError("store down")
        return items

    async def scenario() -> tuple[list[object], int]:
        commit: GroupCommit[int, int] = GroupCommit(run, max_batch=2)
        calls = [commit.submit(n) for n in (1, 2, 99, 4)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return list(results), commit.batches

    results, batches = asyncio.run(scenario())
    assert results[:2] == [1, 2] and batches == 2
    assert all(isinstance(r, RuntimeError) for r in results[2:])  # (99, 4): one batch


def test_a_batch_runs_on_the_loop_when_here_takes_it_else_in_a_thread(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    threads: list[tuple[str, bool]] = []  # (where, on the loop's thread)
    loop_thread = threading.get_ident()

    def run(items: list[int]) -> list[int]:
        threads.append(("run", threading.get_ident() == loop_thread))
        return items

    def here(items: list[int]) -> list[int] | None:
        with store.unless_busy() as free:  # (the queue's AsyncQueue.here)
            if not free:
                return None
            threads.append(("here", threading.get_ident() == loop_thread))
            return [-i for i in items]

    async def scenario() -> list[int]:
        commit: GroupCommit[int, int] = GroupCommit(run, here=here)
        first = await commit.submit(1)
        with store.transaction():  # held by this thread: not "busy" for it (reentrant) ...
            second = await commit.submit(2)
        holder = threading.Thread(target=hold)
        holder.start()
        assert taken.wait(5.0)
        try:  # ... but held by another thread it is: the batch goes to a thread of its own
            third = await commit.submit(3)
        finally:
            release.set()
            holder.join(5.0)
        return [first, second, third]

    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            taken.set()
            assert release.wait(5.0)

    assert asyncio.run(scenario()) == [-1, -2, 3]
    assert threads == [("here", True), ("here", True), ("run", False)]


def test_requests_queued_and_ended_together_share_one_batch(tmp_path: Path) -> None:
    # InvokeEndpointAsync's requests go in the workers' group commit: accepted while a slot
    # ends its request, they are committed in its transaction, and its claim may take them.
    queue = AsyncQueue(Store(f"sqlite:///{tmp_path / 'state.db'}"))
    out = tmp_path / "out"

    def req(n: int) -> AsyncRequest:
        return AsyncRequest(
            f"r{n}", "ep", f"i{n}", "s3://b/in", f"{out}/{n}.out", f"{out}/{n}.err", 1.0, 1e10, 9.0
        )

    queue.enqueue_many([req(0)])
    (held,) = queue.claim("ep", "me", 2.0, 60.0, 1)
    batches = Batches(queue, LocalObjectStore(tmp_path / "objects"), "me", lambda: 3.0, 60.0, 99)
    told: list[object] = []

    async def main() -> Ended:
        batches.queue_request(req(1), told.append)
        ending = Ending(held, RequestStatus.DONE, f"{out}/0.out", b"out", None, then_claim="ep")
        return await batches.end(ending)

    ended = asyncio.run(main())
    assert told == [None] and batches.commits.batches == 1
    assert ended.ended and (out / "0.out").read_bytes() == b"out"
    assert ended.next is not None and [r.request_id for r, _ in ended.next] == ["r1"]


def test_local_writes_are_whole_and_make_their_folder(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    target = tmp_path / "new" / "folder" / "id.out"
    write_object(store, f"file://{target}", b"first")
    write_object(store, str(target), b"second")  # replaced whole
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["id.out"]  # no temporary names left
    assert read_small_local(str(target), 6) == b"second"
    assert read_small_local(str(target), 5) is None  # too large: read on its own
    assert read_small_local(str(tmp_path / "missing"), 5) is None
    assert read_small_local("s3://bucket/key", 5) is None


def test_a_new_local_object_is_named_only_once_whole(tmp_path: Path) -> None:
    # An unnamed file (O_TMPFILE) linked into place where the file system can; else the
    # named temporary file and rename: either way whole, private, and nothing left beside it.
    folder = tmp_path / "out"
    folder.mkdir()
    unnamed = objects._write_unnamed(str(folder / "a.out"), b"a" * 70000)
    if unnamed:
        assert (folder / "a.out").read_bytes() == b"a" * 70000
        assert not objects._write_unnamed(str(folder / "a.out"), b"b")  # no replacing
    write_object(LocalObjectStore(tmp_path / "objects"), str(folder / "b.out"), b"b")
    assert (folder / "b.out").read_bytes() == b"b"
    assert (folder / "b.out").stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(folder)) == (["a.out", "b.out"] if unnamed else ["b.out"])


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="Linux's unnamed files")
def test_a_forked_child_links_its_own_unnamed_files(tmp_path: Path) -> None:
    # /proc/self/fd is opened once per process: a child must not use its parent's, which
    # names the parent's descriptors (the link would fail, or name another file).
    assert objects._write_unnamed(str(tmp_path / "parent.out"), b"parent")
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 when its own file was linked, whole
        ok = objects._write_unnamed(str(tmp_path / "child.out"), b"child")
        os._exit(0 if ok and (tmp_path / "child.out").read_bytes() == b"child" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / "child.out").read_bytes() == b"child"


def test_a_local_write_that_fails_leaves_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "id.out").mkdir()  # the name is taken by a folder: the rename fails
    with pytest.raises(Exception, match="could not be written"):
        write_object(store, str(folder / "id.out"), b"x")
    assert sorted(os.listdir(folder)) == ["id.out"]
