"""Leases in the state store: a named row that one owner holds until a time, renewed while it
lives. Several servers sharing one database elect the controller's runner with it (whoever
holds ``controller``); a holder that stops renewing loses it when ``until`` passes.

Every change is one conditional UPDATE, so two servers racing for a lease never both get it:
PostgreSQL locks the row and re-checks the condition for the second; SQLite has one writer.
``until`` is the taker's clock: the servers' clocks must agree to well within the lease's
length (NTP does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, case, select, update
from sqlalchemy.dialects import postgresql, sqlite

from modelhost.state.store import Store

metadata = MetaData()

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("until", Float, nullable=False),
    Column("epoch", Integer, nullable=False),  # +1 each time the lease changes hands
)


@dataclass(frozen=True, slots=True)
class Holder:
    owner: str
    until: float
    epoch: int


class Lease:
    def __init__(
        self,
        store: Store,
        name: str,
        owner: str,
        length_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.length_s = length_s
        self.clock = clock

    def acquire(self) -> bool:
        """Take the lease if it is free or ran out, or renew it if held: whether this owner
        holds it now (for ``length_s`` from now)."""
        now = self.clock()
        t = leases
        with self.store.transaction() as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            conn.execute(
                dialect.insert(t)
                .values(name=self.name, owner="", until=0.0, epoch=0)
                .on_conflict_do_nothing()
            )
            result = conn.execute(
                update(t)
                .where(t.c.name == self.name, (t.c.owner == self.owner) | (t.c.until < now))
                .values(
                    owner=self.owner,
                    until=now + self.length_s,
                    epoch=case((t.c.owner == self.owner, t.c.epoch), else_=t.c.epoch + 1),
                )
            )
        return bool(result.rowcount)

    def release(self) -> None:
        """Give the lease up now (a server stopping cleanly): another may take it at once."""
        t = leases
        with self.store.transaction() as conn:
            conn.execute(
                update(t).where(t.c.name == self.name, t.c.owner == self.owner).values(until=0.0)
            )

    def holder(self) -> Holder | None:
        t = leases
        with self.store.transaction() as conn:
            row = conn.execute(
                select(t.c.owner, t.c.until, t.c.epoch).where(t.c.name == self.name)
            ).first()
        return None if row is None else Holder(row[0], row[1], row[2])
