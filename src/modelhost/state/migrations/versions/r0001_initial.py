"""The schema as it was before migrations: resources, tags, the asynchronous inference queue.

Data directories made by older versions have some or all of these tables and no
``alembic_version``: only the missing tables are created, so they open as they are.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "resources" not in have:
        op.create_table(
            "resources",
            sa.Column("kind", sa.String(32), primary_key=True),
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("doc", sa.JSON, nullable=False),
        )
    if "tags" not in have:
        op.create_table(
            "tags",
            sa.Column("arn", sa.String(2048), primary_key=True),
            sa.Column("key", sa.String(128), primary_key=True),
            sa.Column("value", sa.String(256), nullable=False),
        )
    if "async_requests" not in have:
        _async_requests()


def _async_requests() -> None:
    op.create_table(
        "async_requests",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("endpoint", sa.String(64), nullable=False, index=True),
        sa.Column("inference_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("input_location", sa.String(1024), nullable=False),
        sa.Column("output_location", sa.String(2048), nullable=False),
        sa.Column("failure_location", sa.String(2048), nullable=False),
        sa.Column("content_type", sa.String(1024)),
        sa.Column("accept", sa.String(1024)),
        sa.Column("custom_attributes", sa.String(1024)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.Float),
        sa.Column("started", sa.Float),
        sa.Column("finished", sa.Float),
        sa.Column("reason", sa.Text),
        sa.Column("body", sa.LargeBinary),
    )
