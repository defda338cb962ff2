"""The state store shared by several servers: migrations (old SQLite data directories open),
PostgreSQL row locking, the controller lease, the stored routes and the follower, the async
queue's claims. SQLite and a real PostgreSQL server (tests/fixtures/postgres.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, inspect

from modelhost.asyncinf.records import AsyncRequest
from modelhost.cluster.leader import Cluster, Step, decide
from modelhost.cluster.routes import RouteFollower, SharedRoutes
from modelhost.publish import Address, PublishedInstance, PublishedVariant
from modelhost.router.routing import RouteTable
from modelhost.state import async_queue, migrate
from modelhost.state import store as store_module
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.leases import Lease
from modelhost.state.routes import RouteStore, from_doc
from modelhost.state.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    s = Store(state_url)
    try:
        yield s
    finally:
        s.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- migrations ------------------------------------------------------------------------------


def test_a_data_directory_made_before_migrations_opens_with_its_data(tmp_path: Path) -> None:
    """Tables as older versions made them (create_all, no alembic_version), one endpoint in
    them: the store opens, keeps the row and records the newest revision."""
    path = tmp_path / "state.db"
    engine = create_engine(f"sqlite:///{path}")
    store_module.metadata.create_all(engine)
    async_queue.metadata.create_all(engine)
    doc = {"name": "Old", "arn": "arn:x", "created": 1.0, "spec": {"A": 1}}
    with engine.begin() as conn:
        conn.execute(
            insert(store_module.resources).values(kind="model", name="old", created=1.0, doc=doc)
        )
    engine.dispose()

    s = Store(f"sqlite:///{path}")
    try:
        assert s.get("model", "OLD") == doc
        Lease(s, "controller", "me", 5.0).acquire()  # the tables a later revision added
    finally:
        s.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.head(),)]
    db.close()


def test_a_new_database_gets_every_revision_and_reopens(store: Store, state_url: str) -> None:
    with store.engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
        indexes = {ix["name"] for ix in inspect(conn).get_indexes("async_requests")}
        tables = set(inspect(conn).get_table_names())
    assert "wake_requests" in tables  # revision 0004
    assert "ix_async_requests_open" in indexes  # revision 0005 (it replaced 0003's)
    assert not indexes & set(R0005_DROPPED)
    Store(state_url).close()  # at head already: opening again changes nothing


R0005_DROPPED = (
    "ix_async_requests_status",
    "ix_async_requests_endpoint",
    "ix_async_requests_endpoint_status_seq",
)


def test_a_queue_made_at_revision_0004_upgrades_with_its_requests(state_url: str) -> None:
    """A database of the version before revision 0005 (the async queue indexed on status, on
    endpoint and on both with seq, over every request), with requests queued, expired,
    running and ended on two endpoints: opening it replaces those with the index of open
    requests, and recovery, expiry, backlogs, orphans and claims find every request."""
    engine = create_engine(state_url)
    with engine.begin() as conn:
        cfg = migrate.config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        had = {ix["name"] for ix in inspect(conn).get_indexes("async_requests")}
        rows = [
            _old_row("q1", "ep", "queued", expires=10_000.0),
            _old_row("x1", "ep", "queued", expires=50.0),
            _old_row("r1", "ep", "running", expires=10_000.0, lease_owner="dead"),
            _old_row("q2", "other", "queued", expires=10_000.0),
            _old_row("d1", "other", "done", expires=10_000.0),
        ]
        conn.execute(insert(async_queue.async_requests), rows)
    engine.dispose()
    assert set(R0005_DROPPED) <= had

    s = Store(state_url)
    try:
        with s.engine.connect() as conn:
            indexes = {ix["name"] for ix in inspect(conn).get_indexes("async_requests")}
        assert not indexes & set(R0005_DROPPED) and "ix_async_requests_open" in indexes
        queue = AsyncQueue(s)
        assert queue.recover() == 1  # r1's lease was a dead server's
        backlogs = queue.backlogs()
        assert {k: b.size for k, b in backlogs.items()} == {"ep": 3, "other": 1}
        assert queue.orphans({"ep"}, before=100.0) == ["other"]
        assert [r.request_id for r in queue.claim_expired("me", 100.0, 60.0, 10)] == ["x1"]
        claimed = queue.claim("ep", "me", 100.0, 60.0, 10)
        assert [r.request_id for r in claimed] == ["q1", "r1"]
        assert [r.request_id for r in queue.claim("other", "me", 100.0, 60.0, 10)] == ["q2"]
    finally:
        s.close()


def _old_row(
    request_id: str, endpoint: str, status: str, *, expires: float, lease_owner: str | None = None
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "endpoint": endpoint,
        "inference_id": request_id,
        "status": status,
        "created": 1.0,
        "expires": expires,
        "timeout_s": 60.0,
        "input_location": "s3://b/in",
        "output_location": f"s3://b/{request_id}.out",
        "failure_location": f"s3://b/{request_id}-error.out",
        "attempts": 1 if status != "queued" else 0,
        "lease_owner": lease_owner,
        "lease_until": 50.0 if lease_owner else None,
    }


# --- the store under concurrency --------------------------------------------------------------


def test_read_modify_write_loses_no_update_across_stores(postgres_url: str) -> None:
    """Two stores (two servers) incrementing one document: every increment lands (its row is
    locked; SQLite has one server per data directory)."""
    stores = [Store(postgres_url), Store(postgres_url)]
    stores[0].insert("counter", "c", 0.0, {"n": 0})

    def bump(s: Store) -> None:
        for _ in range(25):
            s.update_doc("counter", "c", lambda d: ({"n": d["n"] + 1}, None))

    threads = [threading.Thread(target=bump, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert stores[0].get("counter", "c") == {"n": 50}
    finally:
        for s in stores:
            s.close()


def test_claims_by_two_workers_are_disjoint(store: Store) -> None:
    queue = AsyncQueue(store)
    for i in range(20):
        queue.enqueue(_request(f"r{i}"))
    got: list[list[str]] = [[], []]

    def claim(k: int) -> None:
        for _ in range(10):
            got[k] += [r.request_id for r in queue.claim("ep", f"w{k}", 100.0, 60.0, 2)]

    threads = [threading.Thread(target=claim, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == sorted(f"r{i}" for i in range(20))


def _request(request_id: str) -> AsyncRequest:
    return AsyncRequest(
        request_id=request_id,
        endpoint="ep",
        inference_id=request_id,
        input_location="s3://b/in",
        output_location="s3://b/out",
        failure_location="s3://b/fail",
        created=1.0,
        expires=10_000.0,
        timeout_s=60.0,
    )


# --- the controller lease --------------------------------------------------------------------


def test_one_owner_holds_the_lease_until_it_runs_out(store: Store) -> None:
    clock = Clock()
    a = Lease(store, "controller", "a", 5.0, clock)
    b = Lease(store, "controller", "b", 5.0, clock)
    assert a.acquire()
    assert not b.acquire()
    clock.now += 4.0
    assert a.acquire()  # renewed: runs to now + 5
    clock.now += 4.0
    assert not b.acquire()
    holder = a.holder()
    assert holder is not None and (holder.owner, holder.epoch) == ("a", 1)
    clock.now += 1.5  # a stopped renewing: it ran out
    assert b.acquire()
    assert not a.acquire()
    holder = b.holder()
    assert holder is not None and (holder.owner, holder.epoch) == ("b", 2)


def test_a_released_lease_is_free_at_once(store: Store) -> None:
    clock = Clock()
    a = Lease(store, "controller", "a", 60.0, clock)
    b = Lease(store, "controller", "b", 60.0, clock)
    assert a.acquire()
    b.release()  # not b's: changes nothing
    assert not b.acquire()
    a.release()
    assert b.acquire()


def test_racing_servers_never_both_take_the_lease(state_url: str) -> None:
    stores = [Store(state_url) for _ in range(4)]
    wins: list[str] = []
    barrier = threading.Barrier(4)

    def race(k: int) -> None:
        barrier.wait(10)
        if Lease(stores[k], "controller", f"s{k}", 60.0).acquire():
            wins.append(f"s{k}")

    threads = [threading.Thread(target=race, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(wins) == 1
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize(
    ("leading", "held", "now", "step"),
    [
        (False, True, 0.0, Step.TAKE),
        (True, True, 0.0, Step.KEEP),
        (False, False, 0.0, Step.KEEP),
        (False, None, 0.0, Step.KEEP),
        (True, False, 0.0, Step.STEP_DOWN),  # another took it
        (True, None, 4.0, Step.KEEP),  # the store did not answer; still ours until 5
        (True, None, 5.0, Step.STEP_DOWN),
    ],
)
def test_decide(leading: bool, held: bool | None, now: float, step: Step) -> None:
    assert decide(leading, held, now, valid_until=5.0) is step


# --- the stored routes ------------------------------------------------------------------------

VARIANTS = (
    PublishedVariant(
        "AllTraffic",
        1.0,
        (
            PublishedInstance("i-1", Address("127.0.0.1", 9001, "/tmp/i-1.sock", True)),
            PublishedInstance("i-2", Address("127.0.0.1", 9002)),
        ),
        max_concurrency=5,
        wakes=True,
        memory_mb=2048,
    ),
)


def test_only_the_lease_holder_writes_routes(store: Store) -> None:
    Lease(store, "controller", "a", 60.0).acquire()
    mine, other = RouteStore(store, "controller", "a"), RouteStore(store, "controller", "b")
    assert mine.write({"MyEp": VARIANTS})
    assert not other.write({"MyEp": ()})
    assert other.clear_others() == 0
    assert mine.read()["myep"][1]["endpoint"] == "MyEp"
    assert from_doc(mine.read()["myep"][1]["variants"]) == list(VARIANTS)  # every field
    stamp = mine.stamps()["myep"]
    assert mine.write({"MyEp": VARIANTS})
    assert mine.stamps()["myep"] != stamp  # every write: a new stamp
    assert set(mine.read(["myep", "other"])) == {"myep"}
    assert mine.write({"MyEp": None})
    assert mine.read() == {}


def test_a_follower_learns_what_the_leader_publishes(store: Store) -> None:
    Lease(store, "controller", "a", 60.0).acquire()

    async def scenario() -> None:
        leader_table, follower_table = RouteTable(), RouteTable()
        shared = SharedRoutes(leader_table, RouteStore(store, "controller", "a"))
        follower = RouteFollower(
            follower_table,
            RouteStore(store, "controller", "b"),
            0.05,
            is_async=lambda name: name == "myep",
            marks=follower_table,
        )
        shared.publish("MyEp", VARIANTS)
        await shared.flush()
        await follower.poll_once()
        route = follower_table.get("myep")
        assert route is not None and route.name == "MyEp"
        assert [t.instance_id for t in route.variants[0].targets] == ["i-1", "i-2"]
        assert follower_table.async_only == {"myep"}  # InvokeEndpoint refuses it here too

        shared.lost("i-1")
        await shared.flush()
        await follower.poll_once()
        route = follower_table.get("myep")
        assert route is not None
        assert [t.instance_id for t in route.variants[0].targets] == ["i-2"]

        shared.withdraw("MyEp")
        await shared.flush()
        await follower.poll_once()
        assert follower_table.get("myep") is None
        assert follower_table.async_only == frozenset()
        await leader_table.close()
        await follower_table.close()

    asyncio.run(scenario())


# --- two servers' clusters on one store --------------------------------------------------------


def test_the_lease_passes_on_a_clean_stop_and_after_a_crash(postgres_url: str) -> None:
    """Three servers' ``Cluster``s: one leads; it stops cleanly and another leads at once;
    that one 'crashes' (stops renewing, keeps the lease) and the third leads once it runs
    out. Never two at a time."""
    stores = [Store(postgres_url) for _ in range(3)]
    leading: list[str] = []
    log: list[str] = []

    def actions(name: str) -> tuple[Any, Any]:
        async def lead() -> None:
            assert not leading, f"{name} leads beside {leading}"
            leading.append(name)
            log.append(name)

        async def unlead() -> None:
            leading.remove(name)

        return lead, unlead

    async def until(cond: Any, timeout: float) -> float:
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < timeout, (leading, log)
            await asyncio.sleep(0.02)
        return time.monotonic() - t0

    async def scenario() -> None:
        clusters = [
            Cluster(s, RouteTable(), f"s{k}", lease_s=1.0, poll_s=0.05)
            for k, s in enumerate(stores)
        ]
        for k, c in enumerate(clusters):
            await c.start(*actions(f"s{k}"), on_lost=lambda: None)
        await until(lambda: len(leading) == 1, 5.0)
        first = clusters[int(leading[0][1])]
        await first.stop()  # releases the lease
        assert await until(lambda: len(leading) == 1, 5.0) < 0.9  # before it could run out
        second = clusters[int(leading[0][1])]
        assert second is not first
        assert second._task is not None
        second._task.cancel()  # a crash: no renewal, no release
        leading.clear()
        waited = await until(lambda: len(leading) == 1, 5.0)
        assert 0.5 < waited < 2.0, waited  # the lease (1 s) ran out, then one try (0.2 s)
        assert len(set(log)) == 3
        third = clusters[int(leading[0][1])]
        await third.stop()
        await second.follower.stop()

    try:
        asyncio.run(scenario())
    finally:
        for s in stores:
            s.close()


def test_stored_routes_carry_every_published_field() -> None:
    """What a following server reads back is what the controller published: serverless,
    multi-container and multi-model fields included (through JSON, as stored)."""
    from modelhost.publish import (
        Address,
        MultiModelSpec,
        PublishedContainer,
        PublishedInstance,
        PublishedVariant,
    )
    from modelhost.state.routes import from_doc, to_doc

    first, second = Address("127.0.0.1", 1, "/tmp/a.sock", True), Address("127.0.0.1", 2)
    pipeline = PublishedInstance(
        "i-1", first, (PublishedContainer("a", first), PublishedContainer("b", second)), "Serial"
    )
    variants = [
        PublishedVariant("serverless", 0.5, (pipeline,), 4, True, 2048, "Serial"),
        PublishedVariant(
            "mme",
            1.0,
            (PublishedInstance("i-2", second),),
            multi_model=MultiModelSpec("s3://b/p/", 123, False),
        ),
        PublishedVariant(
            "mme-container",
            1.0,
            (PublishedInstance("i-3", second),),
            multi_model=MultiModelSpec("s3://b/q/", 9, True, ("/c/multimodel", "/opt/ml/models")),
        ),
    ]
    assert from_doc(json.loads(json.dumps(to_doc(variants)))) == variants


# --- several hosts ---------------------------------------------------------------------------


def test_another_hosts_routes_reach_instances_over_tcp_only() -> None:
    """Read on another host, every address (containers' too) is its TCP host and port: that
    host's socket paths mean nothing here, and pipelining is for the Unix socket only."""
    from modelhost.publish import PublishedContainer
    from modelhost.state.routes import to_doc

    sock = Address("10.0.0.5", 9001, "/tmp/i-1.sock", True)
    inst = PublishedInstance("i-1", sock, (PublishedContainer("a", sock),), "Serial")
    doc = json.loads(json.dumps(to_doc([PublishedVariant("v", 1.0, (inst,))])))
    assert from_doc(doc)[0].instances[0] == inst  # the same host: as published
    remote = from_doc(doc, same_host=False)[0].instances[0]
    assert remote.address == Address("10.0.0.5", 9001)
    assert remote.containers[0].address == Address("10.0.0.5", 9001)


@pytest.mark.parametrize(("follower_host", "unix"), [("host-a", True), ("host-b", False)])
def test_a_follower_uses_unix_sockets_only_on_the_publishers_host(
    store: Store, follower_host: str, unix: bool
) -> None:
    Lease(store, "controller", "a", 60.0).acquire()

    async def scenario() -> None:
        leader_table, follower_table = RouteTable(), RouteTable()
        shared = SharedRoutes(leader_table, RouteStore(store, "controller", "a", "host-a"))
        follower = RouteFollower(
            follower_table, RouteStore(store, "controller", "b", follower_host), 0.05
        )
        shared.publish("MyEp", VARIANTS)
        await shared.flush()
        assert RouteStore(store, "controller", "b").read()["myep"][1]["host"] == "host-a"
        await follower.poll_once()
        route = follower_table.get("myep")
        assert route is not None
        first = route.variants[0].targets[0]
        assert first.instance_id == "i-1"
        assert (first.address.unix_path is not None) is unix
        assert first.pipelined is unix
        assert first.address.port == 9001  # TCP: the advertised host and port
        await leader_table.close()
        await follower_table.close()

    asyncio.run(scenario())


def test_wake_requests_are_kept_once_and_taken_once(store: Store) -> None:
    from modelhost.state.wakes import WakeRequests

    wakes = WakeRequests(store)
    assert wakes.take() == []
    wakes.ask("MyEp", "AllTraffic")
    wakes.ask("MyEp", "AllTraffic")  # asked again before it was taken: one request
    wakes.ask("MyEp", "Other")
    assert sorted(wakes.take()) == [("MyEp", "AllTraffic"), ("MyEp", "Other")]
    assert wakes.take() == []


def test_a_followers_waker_reaches_the_leaders_controller(store: Store) -> None:
    """On a follower the route table's waker records a wake request; the leader's relay takes
    it and calls its controller's wake; on the leader the waker calls it at once."""
    woken: list[tuple[str, str]] = []

    async def scenario() -> None:
        leader = Cluster(store, RouteTable(), "a", lease_s=60.0, poll_s=0.05)
        follower = Cluster(store, RouteTable(), "b", lease_s=60.0, poll_s=0.05)
        leader.waker(lambda e, v: woken.append((e, v)))
        leader.leading = True
        ask = follower.waker(lambda e, v: pytest.fail("a follower's controller never wakes"))
        ask("MyEp", "AllTraffic")
        deadline = time.monotonic() + 5
        while not woken:
            await leader.wakes.take_once(leader._wake_here)
            assert time.monotonic() < deadline, "the wake request never reached the leader"
            await asyncio.sleep(0.02)
        assert woken == [("MyEp", "AllTraffic")]
        leader.waker(lambda e, v: woken.append((e, v)))("Here", "V")
        assert woken[-1] == ("Here", "V")

    asyncio.run(scenario())
