"""Wake requests: a server that does not run the controller asks it to wake a variant that
scaled to zero (state/wakes.py).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "wake_requests",
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("variant", sa.String(64), primary_key=True),
        sa.Column("asked", sa.Float, nullable=False),
    )
