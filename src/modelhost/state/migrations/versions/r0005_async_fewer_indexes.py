"""The async queue keeps one index beside its keys: its open requests (queued or running) by
(endpoint, status, seq), a partial index. It replaces three: on status alone, on endpoint
alone, and revision 0003's (endpoint, status, seq) over every request. A request's two status
changes then rewrite one small index instead of two that grow with every request ever made,
and its ending only deletes its entry (docs/benchmarks.md, "one index"). A data directory made
by create_all (before migrations) may lack some of the old ones or have the new one already.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

DROPPED = (
    "ix_async_requests_status",
    "ix_async_requests_endpoint",
    "ix_async_requests_endpoint_status_seq",
)
NAME = "ix_async_requests_open"
# As state/async_sqlite.py's OPEN says it: the queries name this condition as written.
OPEN = "status IN ('queued', 'running')"


def upgrade() -> None:
    have = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("async_requests")}
    if NAME not in have:
        op.create_index(
            NAME,
            "async_requests",
            ["endpoint", "status", "seq"],
            sqlite_where=sa.text(OPEN),
            postgresql_where=sa.text(OPEN),
        )
    for name in DROPPED:
        if name in have:
            op.drop_index(name, table_name="async_requests")
