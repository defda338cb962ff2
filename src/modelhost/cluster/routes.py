"""The routes between servers sharing a state store.

``SharedRoutes`` is the ``Publisher`` of the server that runs the controller: it passes every
call to its own route table and writes each endpoint's routes to the store (state/routes.py),
from one background task that coalesces changes (the newest routes of an endpoint win).

``RouteFollower`` runs on every other server: every ``interval`` seconds it reads the stored
routes and publishes what changed into its own route table, so a server learns a change at
most ``interval`` (plus one read) after the runner wrote it. Each server spreads requests by
its own in-flight counts (router/routing.py ``pick_target``); it does not see the others'.
Routes written on another host (their ``"host"`` is not the follower's) reach the instances
over TCP at the address the runner advertised, never by its Unix sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from modelhost.publish import PublishedVariant, Publisher
from modelhost.state.routes import RouteStore, from_doc

log = logging.getLogger(__name__)


class SharedRoutes:
    """A ``Publisher`` that also writes what it publishes to the store."""

    def __init__(self, inner: Publisher, store: RouteStore) -> None:
        self.inner = inner
        self.store = store
        # lower-cased name -> (the name as published, its variants)
        self.current: dict[str, tuple[str, tuple[PublishedVariant, ...]]] = {}
        self._dirty: set[str] = set()
        self._changed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    # -- Publisher -------------------------------------------------------------------------

    def publish(self, endpoint: str, variants: Sequence[PublishedVariant]) -> None:
        self.inner.publish(endpoint, variants)
        self.current[endpoint.lower()] = (endpoint, tuple(variants))
        self._mark(endpoint)

    def withdraw(self, endpoint: str) -> None:
        self.inner.withdraw(endpoint)
        self.current.pop(endpoint.lower(), None)
        self._mark(endpoint)

    def lost(self, instance_id: str) -> None:
        self.inner.lost(instance_id)
        for key, (name, variants) in list(self.current.items()):
            kept = tuple(_without(v, instance_id) for v in variants)
            if kept != variants:
                self.current[key] = (name, kept)
                self._mark(name)

    async def drain(self, instance_ids: Collection[str], timeout: float) -> None:
        await self.inner.drain(instance_ids, timeout)

    # -- writing ---------------------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="routes")

    async def stop(self) -> None:
        """Write what is pending, then stop writing."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def flush(self) -> None:
        names, self._dirty = self._dirty, set()
        self._changed.clear()
        if not names:
            return
        changes: dict[str, Sequence[PublishedVariant] | None] = {}
        for key in names:
            name, variants = self.current.get(key, (key, None))
            changes[name] = variants
        try:
            if not await asyncio.to_thread(self.store.write, changes):
                log.warning("not writing routes: this server no longer holds the controller")
        except Exception:
            self._dirty |= names  # written on the next pass
            self._changed.set()
            raise

    def _mark(self, endpoint: str) -> None:
        self._dirty.add(endpoint.lower())
        self._changed.set()

    async def _write_loop(self) -> None:
        while True:
            await self._changed.wait()
            try:
                await self.flush()
            except Exception:
                log.exception("writing the routes to the state store failed; retrying")
                await asyncio.sleep(0.5)


class AsyncMarks(Protocol):
    """Where a follower records which endpoints are asynchronous (InvokeEndpoint refuses
    them): the route table's ``mark_async``, which the controller's server has its async
    workers keep."""

    def mark_async(self, endpoints: Collection[str]) -> None: ...


class RouteFollower:
    """Keeps a route table in step with the routes in the store (on a server that does not
    run the controller). ``is_async`` (called off the loop, for each endpoint whose routes
    changed) says whether it is an asynchronous inference endpoint."""

    def __init__(
        self,
        table: Publisher,
        store: RouteStore,
        interval: float,
        is_async: Callable[[str], bool] | None = None,
        marks: AsyncMarks | None = None,
    ) -> None:
        self.table = table
        self.store = store
        self.interval = interval
        self.seen: dict[str, str] = {}  # lower-cased endpoint -> the stamp of its routes
        self.is_async = is_async
        self.marks = marks
        self.async_only: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._warned: set[str] = set()  # hosts whose routes name loopback addresses

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="route-follower")

    async def stop(self) -> None:
        """Stop following and withdraw every route it published (the caller takes over)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for name in self.seen:
            self.table.withdraw(name)
        self.seen = {}

    async def poll_once(self) -> None:
        """Read the stamps; read and publish the routes whose stamp changed, withdraw those
        gone (one short query when nothing changed)."""
        stamps = await asyncio.to_thread(self.store.stamps)
        gone = [n for n in self.seen if n not in stamps]
        for name in gone:
            self.table.withdraw(name)
            del self.seen[name]
        changed = [name for name, stamp in stamps.items() if self.seen.get(name) != stamp]
        stored = await asyncio.to_thread(self.store.read, changed) if changed else {}
        for name, (stamp, doc) in stored.items():  # one deleted meanwhile: next poll
            self.table.publish(doc["endpoint"], self._variants(doc))
            self.seen[name] = stamp
        changed = list(stored)
        if (gone or changed) and self.is_async is not None and self.marks is not None:
            await asyncio.to_thread(self._recheck_async, gone, changed)
            self.marks.mark_async(self.async_only)

    def _variants(self, doc: dict[str, Any]) -> list[PublishedVariant]:
        """The stored variants as this host reaches them (routes stored before hosts were
        recorded came from this host: no server on another could reach them)."""
        host = doc.get("host") or self.store.host_id
        variants = from_doc(doc["variants"], same_host=host == self.store.host_id)
        loopback = any(_loopback(i.address.host) for v in variants for i in v.instances)
        if host != self.store.host_id and loopback and host not in self._warned:
            self._warned.add(host)
            log.warning(
                "routes from host %s name loopback addresses: servers on other hosts cannot "
                "reach its instances (set MODELHOST_INSTANCE_HOST there)",
                host,
            )
        return variants

    def _recheck_async(self, gone: list[str], changed: list[str]) -> None:
        assert self.is_async is not None
        self.async_only.difference_update(gone)
        for name in changed:
            if self.is_async(name):
                self.async_only.add(name)
            else:
                self.async_only.discard(name)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("reading the routes from the state store failed")
            await asyncio.sleep(self.interval)


def _without(variant: PublishedVariant, instance_id: str) -> PublishedVariant:
    kept = tuple(i for i in variant.instances if i.instance_id != instance_id)
    if len(kept) == len(variant.instances):
        return variant
    return dataclasses.replace(variant, instances=kept)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
