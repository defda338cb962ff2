"""The published routes in the state store: per endpoint, its variants and their instances'
addresses, as the controller's runner last published them (cluster/routes.py writes them,
the other servers read them into their own route tables).

A row carries its writer; a write or delete is done only while the writer holds the
controller lease, so a deposed runner cannot overwrite its successor's routes. A row also
names the writer's host (``"host"`` in its document): a reader on another host cannot use the
instances' Unix sockets, so ``from_doc`` gives it their TCP addresses only (``same_host``).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Column, Connection, MetaData, String, Table, delete, insert, select

from modelhost.publish import (
    Address,
    MultiModelSpec,
    PublishedContainer,
    PublishedInstance,
    PublishedVariant,
)
from modelhost.state.leases import leases
from modelhost.state.store import Store

metadata = MetaData()

routes = Table(
    "routes",
    metadata,
    Column("endpoint", String(64), primary_key=True),  # lower-cased
    Column("owner", String(64), nullable=False),
    Column("variants", JSON, nullable=False),  # {"endpoint": name, "variants": [...]}
    # New on every write: a reader compares stamps and reads only the routes that changed.
    Column("stamp", String(32), nullable=False),
)
READ_CHUNK = 500  # endpoints per IN (...) list


class RouteStore:
    def __init__(self, store: Store, lease: str, owner: str, host_id: str = "") -> None:
        self.store = store
        self.lease = lease
        self.owner = owner
        self.host_id = host_id  # this server's host, written with its routes

    def write(self, changes: Mapping[str, Sequence[PublishedVariant] | None]) -> bool:
        """Set (or, for None, delete) these endpoints' routes in one transaction; False (and
        nothing written) when this owner does not hold the lease."""
        with self.store.transaction() as conn:
            if not self._holds(conn):
                return False
            names = [name.lower() for name in changes]
            conn.execute(delete(routes).where(routes.c.endpoint.in_(names)))
            rows = [
                {
                    "endpoint": name.lower(),
                    "owner": self.owner,
                    "variants": {
                        "endpoint": name,
                        "host": self.host_id,
                        "variants": to_doc(variants),
                    },
                    "stamp": uuid.uuid4().hex,
                }
                for name, variants in changes.items()
                if variants is not None
            ]
            if rows:
                conn.execute(insert(routes), rows)
        return True

    def clear_others(self) -> int:
        """Delete every route another owner wrote (a new runner: their instances are gone)."""
        with self.store.transaction() as conn:
            if not self._holds(conn):
                return 0
            result = conn.execute(delete(routes).where(routes.c.owner != self.owner))
        return int(result.rowcount)

    def stamps(self) -> dict[str, str]:
        """Every endpoint's (lower-cased) current stamp: what changed since the last look."""
        with self.store.transaction() as conn:
            rows = conn.execute(select(routes.c.endpoint, routes.c.stamp)).all()
        return {r[0]: r[1] for r in rows}

    def read(self, names: Collection[str] | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
        """These endpoints' (every one's, for None) routes as stored: lower-cased name ->
        (stamp, ``{"endpoint": name as published, "host": the writer's host, "variants":
        [...]}``; ``from_doc`` makes the variants ``PublishedVariant``s)."""
        query = select(routes.c.endpoint, routes.c.stamp, routes.c.variants)
        if names is None:
            chunks = [query]
        else:
            wanted = sorted(names)
            chunks = [
                query.where(routes.c.endpoint.in_(wanted[i : i + READ_CHUNK]))
                for i in range(0, len(wanted), READ_CHUNK)
            ]
        out = {}
        with self.store.transaction() as conn:
            for chunk in chunks:
                out.update({r[0]: (r[1], dict(r[2])) for r in conn.execute(chunk)})
        return out

    def _holds(self, conn: Connection) -> bool:
        owner = conn.execute(
            select(leases.c.owner).where(leases.c.name == self.lease).with_for_update()
        ).scalar()
        return owner == self.owner


def to_doc(variants: Sequence[PublishedVariant]) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "weight": v.weight,
            "max_concurrency": v.max_concurrency,
            "wakes": v.wakes,
            "memory_mb": v.memory_mb,
            "mode": v.mode,
            "multi_model": None if v.multi_model is None else _multi_model_doc(v.multi_model),
            "instances": [
                {
                    "id": i.instance_id,
                    **_address_doc(i.address),
                    "mode": i.mode,
                    "containers": [
                        {"name": c.name, **_address_doc(c.address)} for c in i.containers
                    ],
                }
                for i in v.instances
            ],
        }
        for v in variants
    ]


def _address_doc(a: Address) -> dict[str, Any]:
    return {"host": a.host, "port": a.port, "unix_path": a.unix_path, "pipelined": a.pipelined}


def _address(doc: Mapping[str, Any], same_host: bool) -> Address:
    if not same_host:  # another host's socket path means nothing here: TCP, never pipelined
        return Address(doc["host"], doc["port"])
    return Address(doc["host"], doc["port"], doc["unix_path"], doc["pipelined"])


def _multi_model_doc(spec: MultiModelSpec) -> dict[str, Any]:
    return {
        "prefix": spec.prefix,
        "memory_budget_bytes": spec.memory_budget_bytes,
        "model_cache": spec.model_cache,
        "mount": None if spec.mount is None else list(spec.mount),
    }


def _multi_model_spec(doc: Mapping[str, Any]) -> MultiModelSpec:
    mount = doc.get("mount")
    return MultiModelSpec(
        doc["prefix"],
        doc["memory_budget_bytes"],
        doc["model_cache"],
        None if mount is None else (str(mount[0]), str(mount[1])),
    )


def _instance(i: Mapping[str, Any], same_host: bool) -> PublishedInstance:
    containers = tuple(
        PublishedContainer(c["name"], _address(c, same_host)) for c in i.get("containers", ())
    )
    return PublishedInstance(i["id"], _address(i, same_host), containers, i.get("mode", ""))


def from_doc(doc: Sequence[Mapping[str, Any]], same_host: bool = True) -> list[PublishedVariant]:
    """The variants a ``to_doc`` document describes; read on another host than the writer's
    (``same_host`` False), every address is its TCP host and port only."""
    return [
        PublishedVariant(
            v["name"],
            v["weight"],
            tuple(_instance(i, same_host) for i in v["instances"]),
            v["max_concurrency"],
            v.get("wakes", False),
            v.get("memory_mb", 0),
            v.get("mode", ""),
            None if v.get("multi_model") is None else _multi_model_spec(v["multi_model"]),
        )
        for v in doc
    ]
