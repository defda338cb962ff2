"""The state store: SQLAlchemy Core over SQLite (WAL) by default, or PostgreSQL (psycopg 3)
when several servers share it.

Resources are rows of (kind, name) -> JSON document; tags are rows keyed by ARN. Every write is
one transaction, so an accepted change is either fully there or not at all; a read-modify-write
locks its row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one server and a lock). The
schema is versioned (state/migrate.py) and brought up to date when the store opens.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from modelhost.state import migrate
from modelhost.state.records import Endpoint, Resource

T = TypeVar("T")
# The write-ahead log is truncated back to this size after a checkpoint (a burst of async
# requests would otherwise leave it at its high-water mark on disk).
WAL_SIZE_LIMIT = 16 * 1024 * 1024

metadata = MetaData()

resources = Table(
    "resources",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),  # lower-cased: names are case-insensitive
    Column("created", Float, nullable=False),
    Column("doc", JSON, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("arn", String(2048), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)


class Duplicate(Exception):
    """A resource with that kind and name already exists."""


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.shared = url.startswith("postgres")
        if self.shared:
            self._engine = create_engine(engine_url(url), pool_pre_ping=True, pool_size=8)
        else:
            self._engine = create_engine(url)
            event.listen(self._engine, "connect", _sqlite_pragmas)
        migrate.upgrade(self._engine)
        # SQLite: one writer at a time, so this process's writers take turns here rather than
        # wait on the database's busy timeout. PostgreSQL locks rows itself.
        self._rlock = None if self.shared else threading.RLock()
        self._lock: AbstractContextManager[Any] = self._rlock or nullcontext()
        self._direct: sqlite3.Connection | None = None  # sqlite_transaction's connection

    @property
    def engine(self) -> Engine:
        return self._engine

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._lock, self._engine.begin() as conn:
            yield conn

    def close(self) -> None:
        if self._direct is not None:
            with self._lock:
                self._direct.close()
                self._direct = None
        self._engine.dispose()

    @property
    def direct(self) -> bool:
        """Whether ``sqlite_transaction`` is available (a SQLite file)."""
        return not self.shared and self._engine.url.database not in (None, "", ":memory:")

    @contextmanager
    def unless_busy(self) -> Iterator[bool]:
        """True, holding this process's writer lock, when no other thread holds it (SQLite:
        a short ``sqlite_transaction`` may then run on the event loop without waiting);
        False otherwise."""
        if self._rlock is None or not self._rlock.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            self._rlock.release()

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file, as far as no reader
        holds them (SQLite; ``sqlite_transaction``'s connection leaves this to its caller)."""
        if not self.direct:
            return
        with self._lock:
            if self._direct is not None:
                self._direct.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextmanager
    def sqlite_transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction on a connection of the sqlite3 module's own, without SQLAlchemy
        (the asynchronous queue's busy statements: state/async_sqlite.py), under the same lock
        as every other writer of this process. Only where ``direct``."""
        with self._lock:
            conn = self._direct
            if conn is None:
                database = self._engine.url.database
                assert database and self.direct
                conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                # Its commits may run on the event loop (``unless_busy``): it leaves the WAL's
                # checkpoints (which sync the disk) to ``checkpoint``, run in a thread.
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self._direct = conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def transaction(self) -> AbstractContextManager[Connection]:
        """One transaction, for stores of their own that keep tables beside these
        (state/async_queue.py)."""
        return self._tx()

    # --- generic documents ------------------------------------------------------------

    def insert(self, kind: str, name: str, created: float, doc: dict[str, Any]) -> None:
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(resources).values(kind=kind, name=name.lower(), created=created, doc=doc)
                )
        except IntegrityError as exc:
            raise Duplicate(name) from exc

    def upsert(self, kind: str, name: str, created: float, doc: dict[str, Any]) -> None:
        """Insert the document, or replace the one of that kind and name."""
        try:
            self.insert(kind, name, created, doc)
        except Duplicate:
            self.put(kind, name, doc)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._tx() as conn:
            row = conn.execute(
                select(resources.c.doc).where(
                    resources.c.kind == kind, resources.c.name == name.lower()
                )
            ).first()
        return None if row is None else dict(row[0])

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute(
                select(resources.c.doc)
                .where(resources.c.kind == kind)
                .order_by(resources.c.created, resources.c.name)
            ).all()
        return [dict(r[0]) for r in rows]

    def put(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        with self._tx() as conn:
            _put(conn, kind, name, doc)

    def update_doc(
        self, kind: str, name: str, change: Callable[[dict[str, Any]], tuple[dict[str, Any], T]]
    ) -> T | None:
        """Read-modify-write one document atomically: ``change`` gets the document and returns
        the new one and a value; None when there is no such document."""
        with self._tx() as conn:
            doc = _locked_doc(conn, kind, name)
            if doc is None:
                return None
            new, result = change(doc)
            _put(conn, kind, name, new)
            return result

    def delete(self, kind: str, name: str) -> bool:
        with self._tx() as conn:
            result = conn.execute(
                delete(resources).where(resources.c.kind == kind, resources.c.name == name.lower())
            )
        return bool(result.rowcount)

    # --- typed helpers ------------------------------------------------------------------

    def resource(self, kind: str, name: str) -> Resource | None:
        doc = self.get(kind, name)
        return (
            None if doc is None else Resource(doc["name"], doc["arn"], doc["created"], doc["spec"])
        )

    def resources(self, kind: str) -> list[Resource]:
        return [Resource(d["name"], d["arn"], d["created"], d["spec"]) for d in self.all(kind)]

    def add_resource(self, kind: str, res: Resource) -> None:
        doc = {"name": res.name, "arn": res.arn, "created": res.created, "spec": res.spec}
        self.insert(kind, res.name, res.created, doc)

    def endpoint(self, name: str) -> Endpoint | None:
        doc = self.get("endpoint", name)
        return None if doc is None else Endpoint.from_doc(doc)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint.from_doc(d) for d in self.all("endpoint")]

    def add_endpoint(self, ep: Endpoint) -> None:
        self.insert("endpoint", ep.name, ep.created, ep.to_doc())

    def update_endpoint(self, name: str, change: Callable[[Endpoint], T]) -> T | None:
        """Read-modify-write one endpoint atomically. ``change`` mutates it in place and returns
        a value; None when the endpoint does not exist (anymore)."""
        with self._tx() as conn:
            doc = _locked_doc(conn, "endpoint", name)
            if doc is None:
                return None
            ep = Endpoint.from_doc(doc)
            result = change(ep)
            _put(conn, "endpoint", name, ep.to_doc())
            return result

    # --- tags -----------------------------------------------------------------------------

    def add_tags(self, arn: str, items: list[dict[str, str]]) -> None:
        with self._tx() as conn:
            for tag in items:
                conn.execute(delete(tags).where(tags.c.arn == arn, tags.c.key == tag["Key"]))
                conn.execute(insert(tags).values(arn=arn, key=tag["Key"], value=tag["Value"]))

    def list_tags(self, arn: str) -> list[dict[str, str]]:
        with self._tx() as conn:
            rows = conn.execute(
                select(tags.c.key, tags.c.value).where(tags.c.arn == arn).order_by(tags.c.key)
            ).all()
        return [{"Key": k, "Value": v} for k, v in rows]

    def delete_tags(self, arn: str, keys: list[str] | None = None) -> None:
        with self._tx() as conn:
            stmt = delete(tags).where(tags.c.arn == arn)
            if keys is not None:
                stmt = stmt.where(tags.c.key.in_(keys))
            conn.execute(stmt)


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def _locked_doc(conn: Connection, kind: str, name: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(resources.c.doc)
        .where(resources.c.kind == kind, resources.c.name == name.lower())
        .with_for_update()
    ).first()
    return None if row is None else dict(row[0])


def _put(conn: Connection, kind: str, name: str, doc: dict[str, Any]) -> None:
    conn.execute(
        update(resources)
        .where(resources.c.kind == kind, resources.c.name == name.lower())
        .values(doc=doc)
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cur.close()
