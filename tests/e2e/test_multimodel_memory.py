"""Multi-model endpoints under pressure, on a server of their own with a tiny memory budget and
a short load wait: LRU eviction (which models went), concurrent first requests (one load),
a model that fails to load (ModelError naming the cause, tried again), a slow load
(ModelNotReadyException while it goes on), ModelCacheSetting Disabled; and the s3:// prefix on a
real S3-compatible server, with a model uploaded after the endpoint exists."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.multimodel import (
    FAILING_CODE,
    SLOW_CODE,
    ballast_archive,
    code_archive,
    deploy_mme,
    loaded,
    metric,
    sklearn_archive,
    xgboost_archive,
)
from tests.fixtures.seaweed import S3Server
from tests.fixtures.server import LiveServer, free_port, unique
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.e2e

BUCKET = "mme-tight"
MB = 2**20


def _poll(check: Callable[[], bool], timeout: float = 30.0) -> None:
    wait_for(check, timeout)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Each instance may hold 100 MB of models; a caller waits 1.5 s for a load."""
    live = LiveServer(tmp_path_factory.mktemp("mme-tight"), free_port())
    live.env["MODELHOST_MME_MEMORY_BUDGET_BYTES"] = str(100 * MB)
    live.env["MODELHOST_MME_LOAD_WAIT_S"] = "1.5"
    live.start()
    yield live
    live.stop()


def _prefix(server: LiveServer, name: str) -> Path:
    path = server.data_dir / "objects" / BUCKET / name
    path.mkdir(parents=True)
    return path


def _invoke(rt: Any, name: str, target: str) -> Any:
    out = rt.invoke_endpoint(
        EndpointName=name, TargetModel=target, Body=b"[1]", ContentType="application/json"
    )
    return json.loads(out["Body"].read())


def test_lru_eviction_single_flight_and_failures(tight: LiveServer, tmp_path: Path) -> None:
    name = unique("tight")
    prefix = _prefix(tight, name)
    for model in "abcde":
        ballast_archive(tmp_path / f"{model}.tar.gz", model, 40).rename(prefix / f"{model}.tar.gz")
    code_archive(tmp_path / "broken.tar.gz", FAILING_CODE).rename(prefix / "broken.tar.gz")
    code_archive(tmp_path / "slow.tar.gz", SLOW_CODE.format(seconds=3)).rename(
        prefix / "slow.tar.gz"
    )
    sm, rt = tight.client("sagemaker"), tight.client("sagemaker-runtime")
    desc = deploy_mme(sm, name, f"s3://{BUCKET}/{name}")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    # 40 MB each in a 100 MB budget: two fit; a third unloads the least recently used.
    assert _invoke(rt, name, "a.tar.gz")["model"] == "a"
    assert _invoke(rt, name, "b.tar.gz")["model"] == "b"
    assert list(loaded(tight, name).values()) == [["a.tar.gz", "b.tar.gz"]]
    assert _invoke(rt, name, "a.tar.gz")["model"] == "a"  # a is now the more recent
    assert _invoke(rt, name, "c.tar.gz")["model"] == "c"
    assert list(loaded(tight, name).values()) == [["a.tar.gz", "c.tar.gz"]]  # b went
    assert metric(tight, "modelhost_ModelUnloads_total", name) == 1
    assert _invoke(rt, name, "b.tar.gz")["model"] == "b"  # back within a minute: thrash
    assert list(loaded(tight, name).values()) == [["b.tar.gz", "c.tar.gz"]]  # a went
    assert metric(tight, "modelhost_ModelThrash_total", name) == 1

    # Eight first requests for one model at once: one load.
    loads = metric(tight, "modelhost_ModelLoads_total", name)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _invoke(rt, name, "d.tar.gz"), range(8)))
    assert [a["model"] for a in answers] == ["d"] * 8
    assert metric(tight, "modelhost_ModelLoads_total", name) == loads + 1

    # A model that fails to load: a ModelError naming the cause, and the next request tries again.
    for attempt in (1, 2):
        with pytest.raises(rt.exceptions.ModelError, match="broken on purpose") as broken:
            _invoke(rt, name, "broken.tar.gz")
        assert "inference.py" in broken.value.response["Error"]["Message"]  # the log tail
        assert metric(tight, "modelhost_ModelLoadFailures_total", name) == attempt

    # A slow load: ModelNotReadyException after the wait, while the load carries on.
    with pytest.raises(rt.exceptions.ModelNotReadyException) as slow:
        _invoke(rt, name, "slow.tar.gz")
    assert slow.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429

    def served() -> bool:
        out = rt.invoke_endpoint(EndpointName=name, TargetModel="slow.tar.gz", Body=b"1")
        return bool(out["Body"].read() == b"loaded slowly")

    _poll(lambda: _retrying(served, rt))
    snapshot = loaded(tight, name)
    assert "slow.tar.gz" in next(iter(snapshot.values()))


def _retrying(check: Callable[[], bool], rt: Any) -> bool:
    try:
        return check()
    except rt.exceptions.ModelNotReadyException:
        return False


def test_model_cache_disabled_unloads_after_every_call(tight: LiveServer, tmp_path: Path) -> None:
    name = unique("nocache")
    prefix = _prefix(tight, name)
    ballast_archive(tmp_path / "m.tar.gz", "m", 1).rename(prefix / "m.tar.gz")
    sm, rt = tight.client("sagemaker"), tight.client("sagemaker-runtime")
    desc = deploy_mme(sm, name, f"s3://{BUCKET}/{name}", cache=False)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    def unloads() -> float:
        return metric(tight, "modelhost_ModelUnloads_total", name)

    for calls in (1, 2):
        assert _invoke(rt, name, "m.tar.gz")["model"] == "m"
        _poll(lambda: unloads() == calls)  # noqa: B023 (polled within the iteration)
        assert list(loaded(tight, name).values()) == [[]]
    assert metric(tight, "modelhost_ModelLoads_total", name) == 2


def test_s3_prefix_on_an_s3_server(
    own_server: LiveServer, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    pytest.importorskip("xgboost")
    own_server.env.update(s3_server.env())
    own_server.env["MODELHOST_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    own_server.start()
    s3 = s3_server.client()
    s3.upload_file(str(sklearn_archive(tmp_path / "sk.tar.gz")), s3_bucket, "mme/sk.tar.gz")
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    name = unique("mme-s3")
    desc = deploy_mme(sm, name, f"s3://{s3_bucket}/mme/")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = b"[[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]"
    out = rt.invoke_endpoint(
        EndpointName=name, TargetModel="sk.tar.gz", Body=rows, ContentType="application/json"
    )
    assert json.loads(out["Body"].read()) == [0, 2]
    # Uploaded after the endpoint exists.
    s3.upload_file(str(xgboost_archive(tmp_path / "xgb.tar.gz")), s3_bucket, "mme/xgb.tar.gz")
    out = rt.invoke_endpoint(
        EndpointName=name,
        TargetModel="xgb.tar.gz",
        Body=b"5.1,3.5,1.4,0.2",
        ContentType="text/csv",
        Accept="application/json",
    )
    scores = json.loads(out["Body"].read())["predictions"][0]["score"]
    assert max(range(3), key=lambda i: scores[i]) == 0
    with pytest.raises(rt.exceptions.ValidationError, match=r"bucket: .*key: mme/gone.tar.gz"):
        rt.invoke_endpoint(EndpointName=name, TargetModel="gone.tar.gz", Body=rows)
