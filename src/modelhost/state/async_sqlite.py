"""The asynchronous queue's busy statements on SQLite, through the sqlite3 module directly
(``Store.sqlite_transaction``): queueing a batch, and a batch of endings and claims.

SQLAlchemy's machinery per statement (and per transaction: a pooled connection's checkout,
its reset on return) cost more than the statements themselves, several times per request
(bench/async_throughput.py, docs/benchmarks.md). These say the same as async_queue.py's
statements, on the same table; PostgreSQL keeps those.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from modelhost.asyncinf.records import AsyncRequest, RequestStatus

COLUMNS = (
    "seq",
    "request_id",
    "endpoint",
    "inference_id",
    "status",
    "created",
    "expires",
    "timeout_s",
    "input_location",
    "output_location",
    "failure_location",
    "content_type",
    "accept",
    "custom_attributes",
    "attempts",
    "lease_owner",
    "lease_until",
    "started",
    "finished",
    "reason",
    "body",
)
# The condition of the open-requests index (async_queue.py): a query of open requests
# includes it as written, or SQLite does not use the index (nor may PostgreSQL's generic plans).
OPEN = "status IN ('queued', 'running')"
_INSERTED = (*COLUMNS[1:15], "body")  # seq is the store's; no lease, times or reason yet
_INSERT = (
    f"INSERT INTO async_requests ({', '.join(_INSERTED)}) "
    f"VALUES ({', '.join('?' * len(_INSERTED))})"
)
_QUEUED = (
    "SELECT seq FROM async_requests WHERE endpoint = ? AND status = 'queued' "
    f"AND {OPEN} ORDER BY seq LIMIT ?"
)
_LAPSED = (
    "SELECT seq FROM async_requests WHERE endpoint = ? AND status = 'running' "
    f"AND {OPEN} AND lease_until < ? ORDER BY seq LIMIT ?"
)
_TAKE = (
    "UPDATE async_requests SET status = 'running', lease_owner = ?, lease_until = ?, "
    "attempts = attempts + 1, started = coalesce(started, ?) WHERE seq IN ({}) "
    f"RETURNING {', '.join(COLUMNS)}"
)
_END = (
    "UPDATE async_requests SET status = ?, finished = ?, reason = ?, lease_owner = NULL, "
    "lease_until = NULL WHERE request_id IN ({}) AND lease_owner = ? AND status = 'running' "
    "RETURNING request_id"
)
_STATUS = {s.value: s for s in RequestStatus}
_MAX_VARIABLES = 900  # under SQLite's oldest limit on bound parameters (999)


def enqueue_many(conn: sqlite3.Connection, reqs: Sequence[AsyncRequest]) -> None:
    conn.executemany(_INSERT, [_row(req) for req in reqs])


def end(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    owner: str,
    status: RequestStatus,
    now: float,
    reason: str | None,
) -> set[str]:
    """End the requests of ``ids`` still held under ``owner``'s lease; those ended."""
    ended: set[str] = set()
    for start in range(0, len(ids), _MAX_VARIABLES):
        part = list(ids[start : start + _MAX_VARIABLES])
        sql = _END.format(", ".join("?" * len(part)))
        rows = conn.execute(sql, (status.value, now, reason, *part, owner)).fetchall()
        ended.update(r[0] for r in rows)
    return ended


def claim(
    conn: sqlite3.Connection, endpoint: str, owner: str, now: float, lease_s: float, limit: int
) -> list[AsyncRequest]:
    """Up to ``limit`` of the endpoint's oldest claimable requests (queued, or running under
    a lease that ran out), now running under ``owner``'s lease (AsyncQueue.claim)."""
    if limit <= 0:
        return []
    name = endpoint.lower()
    found = [r[0] for r in conn.execute(_QUEUED, (name, limit))]
    found += [r[0] for r in conn.execute(_LAPSED, (name, now, limit))]
    seqs = sorted(found)[: min(limit, _MAX_VARIABLES)]
    if not seqs:
        return []
    sql = _TAKE.format(", ".join("?" * len(seqs)))
    rows = conn.execute(sql, (owner, now + lease_s, now, *seqs)).fetchall()
    return sorted((request(r) for r in rows), key=lambda r: r.seq)


def _row(req: AsyncRequest) -> tuple[Any, ...]:
    return (
        req.request_id,
        req.endpoint.lower(),
        req.inference_id,
        req.status.value,
        req.created,
        req.expires,
        req.timeout_s,
        req.input_location,
        req.output_location,
        req.failure_location,
        req.content_type,
        req.accept,
        req.custom_attributes,
        req.attempts,
        req.body,
    )


def request(r: Sequence[Any]) -> AsyncRequest:
    """An AsyncRequest from a row of ``COLUMNS``."""
    return AsyncRequest(
        request_id=r[1],
        endpoint=r[2],
        inference_id=r[3],
        input_location=r[8],
        output_location=r[9],
        failure_location=r[10],
        created=r[5],
        expires=r[6],
        timeout_s=r[7],
        content_type=r[11],
        accept=r[12],
        custom_attributes=r[13],
        status=_STATUS[r[4]],
        attempts=r[14],
        reason=r[19],
        started=r[17],
        finished=r[18],
        seq=r[0],
        body=r[20],
    )
