from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.state.records import Endpoint, EndpointStatus, Resource, VariantState
from modelhost.state.store import WAL_SIZE_LIMIT, Duplicate, Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'state.db'}")


def endpoint(name: str = "ep") -> Endpoint:
    return Endpoint(
        name,
        f"arn/{name}",
        "cfg",
        EndpointStatus.CREATING,
        1.0,
        1.0,
        [VariantState("AllTraffic", 1.0, 2)],
    )


def test_names_are_unique_case_insensitively(store: Store) -> None:
    store.add_resource("model", Resource("Model-A", "arn", 1.0, {"PrimaryContainer": {}}))
    with pytest.raises(Duplicate):
        store.add_resource("model", Resource("model-a", "arn", 2.0, {}))
    assert store.resource("model", "MODEL-A") is not None


def test_endpoint_round_trip_and_atomic_update(store: Store) -> None:
    store.add_endpoint(endpoint())

    def change(ep: Endpoint) -> str:
        ep.status = EndpointStatus.IN_SERVICE
        ep.variants[0].current_count = 2
        return "done"

    assert store.update_endpoint("ep", change) == "done"
    got = store.endpoint("ep")
    assert got is not None and got.status is EndpointStatus.IN_SERVICE
    assert got.variants[0].current_count == 2
    assert store.update_endpoint("missing", change) is None


def test_state_persists_across_store_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = Store(url)
    first.add_endpoint(endpoint("kept"))
    first.add_tags("arn/kept", [{"Key": "team", "Value": "ml"}])
    first.close()
    second = Store(url)
    assert [e.name for e in second.endpoints()] == ["kept"]
    assert second.list_tags("arn/kept") == [{"Key": "team", "Value": "ml"}]


def test_tags_overwrite_and_delete(store: Store) -> None:
    store.add_tags("arn", [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    store.add_tags("arn", [{"Key": "a", "Value": "3"}])
    assert store.list_tags("arn") == [{"Key": "a", "Value": "3"}, {"Key": "b", "Value": "2"}]
    store.delete_tags("arn", ["a"])
    assert store.list_tags("arn") == [{"Key": "b", "Value": "2"}]


def test_the_write_ahead_log_shrinks_back_after_a_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store(f"sqlite:///{db}")
    store.add_endpoint(endpoint("kept"))
    blob = "x" * 4096
    with store.sqlite_transaction() as conn:  # the async queue's connection
        conn.execute("CREATE TABLE filler (doc TEXT)")
    for _ in range(30):  # ~20 MB of log, never checkpointed by this connection on its own
        with store.sqlite_transaction() as conn:
            conn.executemany("INSERT INTO filler VALUES (?)", [(blob,)] * 160)
    wal = tmp_path / "state.db-wal"
    assert wal.stat().st_size > WAL_SIZE_LIMIT
    store.checkpoint()
    with store.sqlite_transaction() as conn:  # the next write after the checkpoint truncates
        conn.execute("DELETE FROM filler WHERE rowid = 1")
    store.checkpoint()
    assert wal.stat().st_size <= WAL_SIZE_LIMIT
    with store.engine.connect() as conn:  # SQLAlchemy's connections have the same limit
        limit = conn.exec_driver_sql("PRAGMA journal_size_limit").scalar()
    assert limit == WAL_SIZE_LIMIT
    store.close()
