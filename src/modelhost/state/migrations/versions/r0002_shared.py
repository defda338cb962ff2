"""Several servers on one database: the controller lease and the published routes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
    )
    op.create_table(
        "routes",
        sa.Column("endpoint", sa.String(64), primary_key=True),  # lower-cased
        sa.Column("owner", sa.String(64), nullable=False),  # the lease holder that wrote it
        sa.Column("variants", sa.JSON, nullable=False),
        sa.Column("stamp", sa.String(32), nullable=False),  # new on every write
    )
