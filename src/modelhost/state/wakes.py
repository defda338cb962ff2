"""Wake requests in the state store: a server that does not run the controller holds a
request for a variant scaled to zero and asks here for its instances; the controller's server
takes the requests (cluster/wakes.py) and wakes the variants.

One row per (endpoint, variant): asking again before it was taken changes nothing.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, MetaData, String, Table, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from modelhost.state.store import Store

metadata = MetaData()

wake_requests = Table(
    "wake_requests",
    metadata,
    Column("endpoint", String(64), primary_key=True),  # as the request named it
    Column("variant", String(64), primary_key=True),
    Column("asked", Float, nullable=False),  # the asker's clock (for whoever looks)
)


class WakeRequests:
    def __init__(self, store: Store) -> None:
        self.store = store

    def ask(self, endpoint: str, variant: str) -> None:
        """Record that a request waits for ``variant`` of ``endpoint``."""
        with self.store.transaction() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(
                dialect.insert(wake_requests)
                .values(endpoint=endpoint, variant=variant, asked=time.time())
                .on_conflict_do_nothing()
            )

    def take(self) -> list[tuple[str, str]]:
        """Every (endpoint, variant) asked for, removed from the store (one short query when
        there is none)."""
        t = wake_requests
        with self.store.transaction() as conn:
            rows = [(r[0], r[1]) for r in conn.execute(select(t.c.endpoint, t.c.variant))]
            if rows:
                conn.execute(delete(t).where(tuple_(t.c.endpoint, t.c.variant).in_(rows)))
        return rows
