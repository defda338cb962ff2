"""Bring a state database to the newest schema (Alembic, revisions in state/migrations/).

Runs at every start, for SQLite and PostgreSQL alike, in one transaction. On PostgreSQL the
transaction first takes an advisory lock, so servers starting together migrate one at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic logs its plugin list at INFO when first imported: not news at every start.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import Connection, Engine, text  # noqa: E402

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock's key for "migrating the modelhost schema" (any fixed number)
MIGRATION_LOCK = 0x6D6F64656C  # "model"


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None
    return found


log = logging.getLogger(__name__)


def upgrade(engine: Engine) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        if current(conn) == head():
            return
        was = current(conn)
        cfg = config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        log.info("state store schema: revision %s -> %s", was, head())


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()
