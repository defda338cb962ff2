"""The asynchronous inference queue: one table in the state store, FIFO per endpoint.

A request is ``queued`` until a worker claims it; a claim makes it ``running`` under a lease
(an owner and a time), and counts an attempt. A worker renews the leases of what it holds; a
lease that runs out (its worker died) makes the request claimable again. ``done`` and
``failed`` are final, and only the lease's owner may set them, so a request ends once.

Only one server runs the workers at a time (the one data directory's server, cli/main.py's
lock; or, with several servers on PostgreSQL, the holder of the controller lease), so when
they start every lease is a dead or deposed server's: ``recover`` hands them all back at once.
Claims skip rows another transaction has locked (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so
claimers never wait on each other nor take the same request.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from modelhost.asyncinf.records import AsyncRequest, RequestStatus
from modelhost.state import async_sqlite
from modelhost.state.store import Store

metadata = MetaData()

async_requests = Table(
    "async_requests",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("endpoint", String(64), nullable=False),  # lower-cased
    Column("inference_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("expires", Float, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("input_location", String(1024), nullable=False),
    Column("output_location", String(2048), nullable=False),
    Column("failure_location", String(2048), nullable=False),
    Column("content_type", String(1024)),
    Column("accept", String(1024)),
    Column("custom_attributes", String(1024)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("started", Float),
    Column("finished", Float),
    Column("reason", Text),
    Column("body", LargeBinary),  # an inline input (InvokeEndpointAsync's Body)
)
# The table's one index beside its keys (migration 0005): the requests not yet ended, by
# endpoint, status and arrival. A claim reads an endpoint's queued requests in order from here,
# and its running ones (to find lapsed leases); expiry, recovery and the backlogs read it
# whole. It holds only open requests (the table keeps those that ended), so it stays a page
# or two, and a request's ending only deletes its entry. A query may use it only when its
# WHERE has the index's condition as written (SQLite compares the expressions), so every query
# of open requests includes ``async_sqlite.OPEN`` itself, literals and all.
_open = text(async_sqlite.OPEN)
_by_state = Index(
    "ix_async_requests_open",
    async_requests.c.endpoint,
    async_requests.c.status,
    async_requests.c.seq,
    sqlite_where=_open,
    postgresql_where=_open,
)

# The busy path's statements, built once with bound parameters: building a statement costs more
# than running it, and a statement object's compiled form is cached. (Parameter names are not
# column names: those are reserved for the SET clause.)
_t = async_requests
_INSERT = insert(_t)
_QUEUED = (
    select(_t.c.seq)
    .where(
        _t.c.endpoint == bindparam("p_endpoint"),
        _t.c.status == RequestStatus.QUEUED.value,
        _open,
    )
    .order_by(_t.c.seq)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)
_LAPSED = (  # running under a lease that ran out: its worker died
    select(_t.c.seq)
    .where(
        _t.c.endpoint == bindparam("p_endpoint"),
        _t.c.status == RequestStatus.RUNNING.value,
        _open,
        _t.c.lease_until < bindparam("p_now"),
    )
    .order_by(_t.c.seq)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)
_EXPIRED = (  # queued past its TTL; oldest first per endpoint (the index's order)
    select(_t.c.seq)
    .where(_open, _t.c.status == RequestStatus.QUEUED.value, _t.c.expires < bindparam("p_now"))
    .order_by(_t.c.endpoint, _t.c.status, _t.c.seq)
    .limit(bindparam("p_limit"))
    .with_for_update(skip_locked=True)
)
_TAKE = (
    update(_t)
    .where(_t.c.seq.in_(bindparam("p_seqs", expanding=True)))
    .values(
        status=RequestStatus.RUNNING.value,
        lease_owner=bindparam("p_owner"),
        lease_until=bindparam("p_until"),
        attempts=_t.c.attempts + 1,
        started=func.coalesce(_t.c.started, bindparam("p_now")),
    )
    .returning(*_t.c)
)
_END = (
    update(_t)
    .where(
        _t.c.request_id.in_(bindparam("p_ids", expanding=True)),
        _t.c.lease_owner == bindparam("p_owner"),
        _t.c.status == RequestStatus.RUNNING.value,
    )
    .values(
        status=bindparam("p_status"),
        finished=bindparam("p_now"),
        reason=bindparam("p_reason"),
        lease_owner=None,
        lease_until=None,
    )
    .returning(_t.c.request_id)
)
# The endpoints with open requests, by a loose scan of the index: one seek per endpoint rather
# than a read of every open request (the dispatcher asks each second, whatever the backlog).
_OPEN_ENDPOINTS = text(
    "WITH RECURSIVE e(name) AS ("
    f"SELECT min(endpoint) FROM async_requests WHERE {async_sqlite.OPEN} "
    "UNION ALL "
    "SELECT (SELECT min(endpoint) FROM async_requests "
    f"WHERE {async_sqlite.OPEN} AND endpoint > e.name) "
    "FROM e WHERE e.name IS NOT NULL"
    ") SELECT name FROM e WHERE name IS NOT NULL"
)
_OPEN_BEFORE = (  # whether the endpoint has an open request made before p_before
    select(_t.c.seq)
    .where(_t.c.endpoint == bindparam("p_endpoint"), _open, _t.c.created < bindparam("p_before"))
    .limit(1)
)


@dataclass(frozen=True, slots=True)
class Backlog:
    """An endpoint's requests not yet ended, and the creation time of the oldest."""

    size: int
    oldest: float | None


class AsyncQueue:
    def __init__(self, store: Store) -> None:
        self._store = store  # its migrations (state/migrations/) made the table
        # On a SQLite file the busy statements skip SQLAlchemy (state/async_sqlite.py).
        self._direct = store.direct

    def here(self) -> AbstractContextManager[bool]:
        """True (until the block ends) when the busy statements may run on the event loop
        now: a SQLite store no other thread is writing (``Store.unless_busy``)."""
        return self._store.unless_busy() if self._direct else nullcontext(False)

    def checkpoint(self) -> None:
        """SQLite: fold the WAL into the database (in a thread; the busy statements'
        connection, which may commit on the event loop, leaves it to this)."""
        self._store.checkpoint()

    def enqueue(self, req: AsyncRequest) -> None:
        self.enqueue_many([req])

    def enqueue_many(self, reqs: Sequence[AsyncRequest]) -> None:
        """Queue ``reqs`` in one transaction (group commit): all are committed, or none."""
        if not reqs:
            return
        if self._direct:
            with self._store.sqlite_transaction() as raw:
                async_sqlite.enqueue_many(raw, reqs)
            return
        with self._store.transaction() as conn:
            conn.execute(_INSERT, [_row(req) for req in reqs])

    def get(self, request_id: str) -> AsyncRequest | None:
        with self._store.transaction() as conn:
            row = conn.execute(
                select(async_requests).where(async_requests.c.request_id == request_id)
            ).first()
        return None if row is None else _request(row._mapping)

    def recover(self) -> int:
        """Hand back every lease (a server starting on this data directory owns them all);
        the number of requests that were running."""
        with self._store.transaction() as conn:
            result = conn.execute(
                update(async_requests)
                .where(_open, async_requests.c.status == RequestStatus.RUNNING.value)
                .values(status=RequestStatus.QUEUED.value, lease_owner=None, lease_until=None)
            )
        return int(result.rowcount)

    def claim(
        self, endpoint: str, owner: str, now: float, lease_s: float, limit: int
    ) -> list[AsyncRequest]:
        """Up to ``limit`` of the endpoint's oldest claimable requests (queued, or running
        under a lease that ran out), now running under ``owner``'s lease."""
        with self._store.transaction() as conn:
            return self._claim_in(conn, endpoint, owner, now, lease_s, limit)

    def _claim_in(
        self, conn: Connection, endpoint: str, owner: str, now: float, lease_s: float, limit: int
    ) -> list[AsyncRequest]:
        if limit <= 0:
            return []
        params = {"p_endpoint": endpoint.lower(), "p_now": now, "p_limit": limit}
        selects = [(_QUEUED, params), (_LAPSED, params)]
        return self._take_in(conn, selects, owner, now, lease_s, limit)

    def claim_expired(
        self, owner: str, now: float, lease_s: float, limit: int
    ) -> list[AsyncRequest]:
        """Queued requests whose TTL passed before any worker started them, now running under
        ``owner``'s lease (to be failed)."""
        params = {"p_now": now, "p_limit": limit}
        with self._store.transaction() as conn:
            return self._take_in(conn, [(_EXPIRED, params)], owner, now, lease_s, limit)

    def _take_in(
        self,
        conn: Connection,
        selects: Sequence[tuple[Select[Any], dict[str, Any]]],
        owner: str,
        now: float,
        lease_s: float,
        limit: int,
    ) -> list[AsyncRequest]:
        """The first ``limit`` requests (by arrival) that any of ``selects`` finds (each
        reads one index range in order, rather than an OR over the table), now running
        under ``owner``'s lease; inside the caller's transaction."""
        found: list[int] = []
        for stmt, params in selects:
            found += conn.execute(stmt, params).scalars()
        seqs = sorted(found)[:limit]
        if not seqs:
            return []
        claimed = conn.execute(
            _TAKE, {"p_seqs": seqs, "p_owner": owner, "p_until": now + lease_s, "p_now": now}
        ).all()
        return sorted((_request(r._mapping) for r in claimed), key=lambda r: r.seq)

    def renew(self, request_ids: Sequence[str], owner: str, until: float) -> None:
        if not request_ids:
            return
        t = async_requests
        with self._store.transaction() as conn:
            conn.execute(
                update(t)
                .where(
                    t.c.request_id.in_(list(request_ids)),
                    t.c.lease_owner == owner,
                    t.c.status == RequestStatus.RUNNING.value,
                )
                .values(lease_until=until)
            )

    def finish(
        self, request_id: str, owner: str, status: RequestStatus, now: float, reason: str | None
    ) -> bool:
        """End a request held under ``owner``'s lease; False when the lease was lost."""
        return self._end_lease(request_id, owner, status=status.value, finished=now, reason=reason)

    def finish_many(
        self, ends: Sequence[tuple[str, RequestStatus, str | None]], owner: str, now: float
    ) -> set[str]:
        """End several requests held under ``owner``'s lease in one transaction: each
        (request id, final status, reason). The ids whose lease was still held (those ended)."""
        return self.finish_and_claim(ends, owner, now, [], 0.0)[0]

    def finish_and_claim(
        self,
        ends: Sequence[tuple[str, RequestStatus, str | None]],
        owner: str,
        now: float,
        wants: Sequence[tuple[str, int]],
        lease_s: float,
        queued: Sequence[AsyncRequest] = (),
    ) -> tuple[set[str], list[list[AsyncRequest]]]:
        """``enqueue_many(queued)``, ``finish_many``, then ``claim`` for each (endpoint, limit)
        of ``wants`` (the requests just queued among those claimable), all in one transaction
        on SQLite (the workers' group commit, which takes InvokeEndpointAsync's queueing too:
        one commit, and the pages both touch written once); elsewhere the queueing commits
        first, on its own. The ids ended, and each want's requests."""
        groups: dict[tuple[RequestStatus, str | None], list[str]] = {}
        for request_id, status, reason in ends:
            groups.setdefault((status, reason), []).append(request_id)
        totals: dict[str, int] = {}
        for endpoint, limit in wants:
            totals[endpoint.lower()] = totals.get(endpoint.lower(), 0) + max(0, limit)
        if self._direct:
            ended, claimed = self._finish_and_claim_direct(
                groups, owner, now, totals, lease_s, queued
            )
        else:
            self.enqueue_many(queued)
            ended, claimed = self._finish_and_claim_sql(groups, owner, now, totals, lease_s)
        shares: list[list[AsyncRequest]] = []
        for endpoint, limit in wants:  # in order: the first wants get the oldest requests
            mine = claimed[endpoint.lower()]
            n = max(0, limit)
            shares.append(mine[:n])
            claimed[endpoint.lower()] = mine[n:]
        return ended, shares

    def _finish_and_claim_direct(
        self,
        groups: dict[tuple[RequestStatus, str | None], list[str]],
        owner: str,
        now: float,
        totals: dict[str, int],
        lease_s: float,
        queued: Sequence[AsyncRequest],
    ) -> tuple[set[str], dict[str, list[AsyncRequest]]]:
        ended: set[str] = set()
        with self._store.sqlite_transaction() as raw:
            if queued:
                async_sqlite.enqueue_many(raw, queued)
            for (status, reason), ids in groups.items():
                ended |= async_sqlite.end(raw, ids, owner, status, now, reason)
            claimed = {
                endpoint: async_sqlite.claim(raw, endpoint, owner, now, lease_s, total)
                for endpoint, total in totals.items()
            }
        return ended, claimed

    def _finish_and_claim_sql(
        self,
        groups: dict[tuple[RequestStatus, str | None], list[str]],
        owner: str,
        now: float,
        totals: dict[str, int],
        lease_s: float,
    ) -> tuple[set[str], dict[str, list[AsyncRequest]]]:
        ended: set[str] = set()
        with self._store.transaction() as conn:
            for (status, reason), ids in groups.items():
                params = {
                    "p_ids": ids,
                    "p_owner": owner,
                    "p_status": status.value,
                    "p_now": now,
                    "p_reason": reason,
                }
                ended.update(conn.execute(_END, params).scalars())
            claimed = {
                endpoint: self._claim_in(conn, endpoint, owner, now, lease_s, total)
                for endpoint, total in totals.items()
            }
        return ended, claimed

    def release(self, request_id: str, owner: str, reason: str | None = None) -> bool:
        """Put a held request back in the queue (in its place: FIFO by arrival)."""
        return self._end_lease(request_id, owner, status=RequestStatus.QUEUED.value, reason=reason)

    def _end_lease(self, request_id: str, owner: str, **values: object) -> bool:
        """Set ``values`` on a request held under ``owner``'s lease and drop the lease; False
        when the lease was lost."""
        t = async_requests
        with self._store.transaction() as conn:
            result = conn.execute(
                update(t)
                .where(
                    t.c.request_id == request_id,
                    t.c.lease_owner == owner,
                    t.c.status == RequestStatus.RUNNING.value,
                )
                .values(lease_owner=None, lease_until=None, **values)
            )
        return bool(result.rowcount)

    def backlogs(self) -> dict[str, Backlog]:
        """Per endpoint (lower-cased), the requests queued or running and the oldest's age."""
        t = async_requests
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(t.c.endpoint, func.count(), func.min(t.c.created))
                .where(_open)
                .group_by(t.c.endpoint)
            ).all()
        return {r[0]: Backlog(int(r[1]), r[2]) for r in rows}

    def open_requests(self, endpoint: str, limit: int = 100) -> list[AsyncRequest]:
        t = async_requests
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.endpoint == endpoint.lower(), _open)
                .order_by(t.c.seq)
                .limit(limit)
            ).all()
        return [_request(r._mapping) for r in rows]

    def orphans(self, live: set[str], before: float, limit: int = 100) -> list[str]:
        """Endpoints (lower-cased) with open requests made before ``before`` that are not
        in ``live``: their endpoint was deleted."""
        found: list[str] = []
        with self._store.transaction() as conn:
            for endpoint in conn.execute(_OPEN_ENDPOINTS).scalars():
                if endpoint in live:
                    continue
                params = {"p_endpoint": endpoint, "p_before": before}
                if conn.execute(_OPEN_BEFORE, params).first() is not None:
                    found.append(endpoint)
                    if len(found) >= limit:
                        break
        return found


def _row(req: AsyncRequest) -> dict[str, Any]:
    return {
        "request_id": req.request_id,
        "endpoint": req.endpoint.lower(),
        "inference_id": req.inference_id,
        "status": req.status.value,
        "created": req.created,
        "expires": req.expires,
        "timeout_s": req.timeout_s,
        "input_location": req.input_location,
        "output_location": req.output_location,
        "failure_location": req.failure_location,
        "content_type": req.content_type,
        "accept": req.accept,
        "custom_attributes": req.custom_attributes,
        "attempts": req.attempts,
        "body": req.body,
    }


def _request(m: Any) -> AsyncRequest:
    return AsyncRequest(
        request_id=m["request_id"],
        endpoint=m["endpoint"],
        inference_id=m["inference_id"],
        input_location=m["input_location"],
        output_location=m["output_location"],
        failure_location=m["failure_location"],
        created=m["created"],
        expires=m["expires"],
        timeout_s=m["timeout_s"],
        content_type=m["content_type"],
        accept=m["accept"],
        custom_attributes=m["custom_attributes"],
        status=RequestStatus(m["status"]),
        attempts=m["attempts"],
        reason=m["reason"],
        started=m["started"],
        finished=m["finished"],
        seq=m["seq"],
        body=m["body"],
    )
