"""The async queue's claim index: (endpoint, status, seq). Servers of the version that
brought it made it at start, so a data directory may have it already.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

NAME = "ix_async_requests_endpoint_status_seq"


def upgrade() -> None:
    have = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("async_requests")}
    if NAME not in have:
        op.create_index(NAME, "async_requests", ["endpoint", "status", "seq"])
