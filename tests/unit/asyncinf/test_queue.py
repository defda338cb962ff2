"""The durable queue: FIFO per endpoint, leases, ending once, recovery."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.asyncinf.records import AsyncRequest, RequestStatus
from modelhost.state import async_queue, async_sqlite
from modelhost.state.async_queue import AsyncQueue, async_requests
from modelhost.state.store import Store


@pytest.fixture
def queue(tmp_path: Path) -> AsyncQueue:
    return AsyncQueue(Store(f"sqlite:///{tmp_path / 'state.db'}"))


def _req(n: int, endpoint: str = "ep", created: float = 100.0, ttl: float = 60.0) -> AsyncRequest:
    return AsyncRequest(
        f"r{n}",
        endpoint,
        f"inf-{n}",
        "s3://b/in",
        f"s3://b/o/{n}.out",
        f"s3://b/f/{n}.err",
        created,
        created + ttl,
        900.0,
    )


def test_claims_are_fifo_per_endpoint_and_bounded(queue: AsyncQueue) -> None:
    for n in range(5):
        queue.enqueue(_req(n, "ep" if n != 2 else "Other"))
    first = queue.claim("EP", "me", 101.0, 30.0, 2)
    assert [r.request_id for r in first] == ["r0", "r1"]
    assert all(r.status is RequestStatus.RUNNING and r.attempts == 1 for r in first)
    assert first[0].started == 101.0
    assert [r.request_id for r in queue.claim("ep", "me", 101.0, 30.0, 10)] == ["r3", "r4"]
    assert queue.claim("ep", "me", 101.0, 30.0, 10) == []
    assert [r.request_id for r in queue.claim("other", "me", 101.0, 30.0, 0)] == []
    assert [r.request_id for r in queue.claim("other", "me", 101.0, 30.0, 1)] == ["r2"]


def test_an_expired_lease_is_claimed_again(queue: AsyncQueue) -> None:
    queue.enqueue(_req(1))
    assert queue.claim("ep", "dead", 100.0, 30.0, 1)
    assert queue.claim("ep", "me", 120.0, 30.0, 1) == []  # still leased
    queue.renew(["r1"], "dead", 200.0)
    assert queue.claim("ep", "me", 150.0, 30.0, 1) == []
    again = queue.claim("ep", "me", 201.0, 30.0, 1)
    assert [(r.request_id, r.attempts, r.started) for r in again] == [("r1", 2, 100.0)]
    # The old owner lost it: it can neither end nor release it.
    assert not queue.finish("r1", "dead", RequestStatus.DONE, 202.0, None)
    assert not queue.release("r1", "dead")
    assert queue.finish("r1", "me", RequestStatus.DONE, 202.0, None)
    assert not queue.finish("r1", "me", RequestStatus.FAILED, 203.0, "twice")
    got = queue.get("r1")
    assert got is not None and got.status is RequestStatus.DONE and got.finished == 202.0


def test_release_keeps_the_place_in_line(queue: AsyncQueue) -> None:
    queue.enqueue(_req(1))
    queue.enqueue(_req(2))
    queue.claim("ep", "me", 100.0, 30.0, 1)
    assert queue.release("r1", "me", "instance gone")
    assert [r.request_id for r in queue.claim("ep", "me", 100.0, 30.0, 1)] == ["r1"]


def test_recover_hands_back_every_lease(queue: AsyncQueue) -> None:
    queue.enqueue(_req(1))
    queue.enqueue(_req(2))
    queue.claim("ep", "dead", 100.0, 3600.0, 1)
    assert queue.recover() == 1
    assert [r.request_id for r in queue.claim("ep", "me", 100.0, 30.0, 5)] == ["r1", "r2"]


def test_claim_expired_takes_only_queued_requests_past_their_ttl(queue: AsyncQueue) -> None:
    queue.enqueue(_req(1, ttl=60.0))
    queue.enqueue(_req(2, ttl=600.0))
    queue.enqueue(_req(3, ttl=60.0))
    queue.claim("ep", "me", 100.0, 30.0, 1)  # r1 started in time
    assert [r.request_id for r in queue.claim_expired("me", 161.0, 30.0, 10)] == ["r3"]


def test_backlogs_and_orphans(queue: AsyncQueue) -> None:
    queue.enqueue(_req(1, created=100.0))
    queue.enqueue(_req(2, created=105.0))
    queue.enqueue(_req(3, "gone", created=90.0))
    queue.enqueue(_req(4, "ended", created=90.0))  # (only ended requests: no orphan)
    assert [r.request_id for r in queue.claim("ended", "me", 110.0, 30.0, 1)] == ["r4"]
    assert queue.finish("r4", "me", RequestStatus.DONE, 111.0, None)
    queue.claim("ep", "me", 110.0, 30.0, 1)
    backlogs = queue.backlogs()
    assert backlogs["ep"].size == 2 and backlogs["ep"].oldest == 100.0
    assert queue.orphans({"ep"}, before=95.0) == ["gone"]
    assert queue.orphans({"ep"}, before=80.0) == []
    assert [r.request_id for r in queue.open_requests("EP")] == ["r1", "r2"]


def test_enqueue_many_and_finish_and_claim_share_one_transaction(queue: AsyncQueue) -> None:
    queue.enqueue_many([_req(n) for n in range(4)] + [_req(9, "Other")])
    held = queue.claim("ep", "me", 101.0, 30.0, 2)
    assert [r.request_id for r in held] == ["r0", "r1"]
    ends = [("r0", RequestStatus.DONE, None), ("r1", RequestStatus.FAILED, "bad")]
    ended, shares = queue.finish_and_claim(
        ends, "me", 102.0, [("EP", 1), ("other", 2), ("ep", 5)], 30.0
    )
    assert ended == {"r0", "r1"}
    assert [[r.request_id for r in s] for s in shares] == [["r2"], ["r9"], ["r3"]]
    r1 = queue.get("r1")
    assert r1 is not None and r1.status is RequestStatus.FAILED and r1.reason == "bad"
    assert queue.finish_many([("r0", RequestStatus.DONE, None)], "me", 103.0) == set()  # once


def test_requests_queued_with_endings_are_claimable_in_the_same_transaction(
    queue: AsyncQueue,
) -> None:
    queue.enqueue_many([_req(0)])
    held = queue.claim("ep", "me", 101.0, 30.0, 1)
    ended, shares = queue.finish_and_claim(
        [("r0", RequestStatus.DONE, None)], "me", 102.0, [("ep", 1)], 30.0, [_req(1), _req(2)]
    )
    assert [r.request_id for r in held] == ["r0"] and ended == {"r0"}
    assert [[r.request_id for r in s] for s in shares] == [["r1"]]  # queued, then claimed
    r2 = queue.get("r2")
    assert r2 is not None and r2.status is RequestStatus.QUEUED


def test_a_claim_skips_ended_requests_and_takes_lapsed_leases_in_order(
    queue: AsyncQueue,
) -> None:
    queue.enqueue_many([_req(n) for n in range(6)])
    ended = queue.claim("ep", "me", 100.0, 30.0, 2)  # r0, r1
    queue.finish_many([(r.request_id, RequestStatus.DONE, None) for r in ended], "me", 100.5)
    queue.claim("ep", "dead", 101.0, 30.0, 1)  # r2: its lease runs out at 131
    assert [r.request_id for r in queue.claim("ep", "me", 120.0, 30.0, 2)] == ["r3", "r4"]
    again = queue.claim("ep", "me", 140.0, 30.0, 2)  # r2 (lapsed) before r5 (queued)
    assert [(r.request_id, r.attempts) for r in again] == [("r2", 2), ("r5", 1)]


def test_the_direct_sqlite_statements_name_the_tables_columns_in_order() -> None:
    # state/async_sqlite.py reads rows by position: its column list is the table's
    assert tuple(c.name for c in async_requests.c) == async_sqlite.COLUMNS


def test_every_query_of_open_requests_reads_the_open_requests_index(tmp_path: Path) -> None:
    """The index holds only open requests, and SQLite uses it only for a query that names
    its condition as written: a query that lost it would read the whole table (every request
    ever made) instead, and nothing else would fail."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    queue = AsyncQueue(store)
    queue.enqueue(_req(0))
    plans: list[str] = []
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        for sql, params in [
            (async_sqlite._QUEUED, ("ep", 8)),
            (async_sqlite._LAPSED, ("ep", 1.0, 8)),
        ]:
            rows = raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plans.append(" ".join(str(r[-1]) for r in rows))
        for stmt in (
            async_queue._QUEUED,
            async_queue._LAPSED,
            async_queue._EXPIRED,
            async_queue._OPEN_ENDPOINTS,
            async_queue._OPEN_BEFORE,
        ):
            compiled = stmt.compile(dialect=conn.dialect)
            ones = tuple(1 for _ in compiled.positiontup or ())  # (values change no plan)
            found = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", ones)
            plans.append(" ".join(str(r[-1]) for r in found))
    store.close()
    for plan in plans:
        assert "ix_async_requests_open" in plan, plans
