"""Adaptive batching end to end: sklearn iris deployed with and without MODELHOST_BATCHING,
200 concurrent single-row requests through the router, compared response by response."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris

from tests.fixtures.models import sklearn_iris_dir
from tests.fixtures.server import LiveServer, deploy, unique

pytestmark = pytest.mark.e2e

REQUESTS = 200
THREADS = 16


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sklearn_iris_dir(tmp_path_factory.mktemp("iris") / "model")


@pytest.fixture(scope="module")
def endpoints(server: LiveServer, iris_dir: Path) -> dict[str, str]:
    """{"plain": name, "batched": name}: the same model data, batching off and on."""
    sm = server.client("sagemaker")
    names = {"plain": unique("iris-plain"), "batched": unique("iris-batched")}
    envs: dict[str, dict[str, str]] = {"plain": {}, "batched": {"MODELHOST_BATCHING": "true"}}
    for kind, name in names.items():
        desc = deploy(sm, name, str(iris_dir), environment=envs[kind])
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return names


def instance_log(server: LiveServer, endpoint: str) -> str:
    logs = sorted((server.data_dir / "logs" / endpoint).rglob("*.log"))
    return "".join(path.read_text(errors="replace") for path in logs)


def test_only_the_batched_instance_batches(server: LiveServer, endpoints: dict[str, str]) -> None:
    assert "batching on: up to 32 rows" in instance_log(server, endpoints["batched"])
    assert "batching" not in instance_log(server, endpoints["plain"])


def rows() -> np.ndarray:
    """200 single rows: iris features, the later ones nudged so they are not all seen in fit."""
    features = load_iris().data
    rng = np.random.default_rng(3)
    picked = features[np.arange(REQUESTS) % len(features)]
    nudged: np.ndarray = np.round(picked + rng.normal(scale=0.3, size=picked.shape), 2)
    return nudged


def invoke_all(server: LiveServer, endpoint: str, bodies: list[bytes]) -> list[bytes]:
    """Every body once, 16 at a time, each thread with a boto3 client of its own."""
    clients = [server.client("sagemaker-runtime") for _ in range(THREADS)]

    def call(index: int) -> bytes:
        out = clients[index % THREADS].invoke_endpoint(
            EndpointName=endpoint,
            Body=bodies[index],
            ContentType="application/json",
            Accept="application/json",
        )
        body: bytes = out["Body"].read()
        return body

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(call, range(len(bodies))))


def test_batched_predictions_equal_unbatched_and_in_process(
    server: LiveServer, endpoints: dict[str, str], iris_dir: Path
) -> None:
    data = rows()
    bodies = [json.dumps([row.tolist()]).encode() for row in data]
    batched = invoke_all(server, endpoints["batched"], bodies)
    plain = invoke_all(server, endpoints["plain"], bodies)
    assert batched == plain  # byte for byte
    model: Any = joblib.load(iris_dir / "model.joblib")
    expected = [model.predict(row.reshape(1, -1)).tolist() for row in data]
    assert [json.loads(body) for body in batched] == expected


def test_inputs_that_cannot_be_stacked_still_work(
    server: LiveServer, endpoints: dict[str, str]
) -> None:
    rt = server.client("sagemaker-runtime")
    two_rows = json.dumps([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    for body, content_type in ((two_rows, "application/json"), ("6.7,3.0,5.2,2.3", "text/csv")):
        answers = [
            rt.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type)
            for name in (endpoints["plain"], endpoints["batched"])
        ]
        assert answers[0]["Body"].read() == answers[1]["Body"].read()
    errors = []
    for name in (endpoints["plain"], endpoints["batched"]):
        with pytest.raises(rt.exceptions.ModelError) as caught:
            rt.invoke_endpoint(EndpointName=name, Body=b'{"a": 1}', ContentType="application/json")
        errors.append(caught.value.response["OriginalMessage"])
    assert errors[0] == errors[1]


def test_concurrent_requests_were_actually_grouped(
    server: LiveServer, endpoints: dict[str, str]
) -> None:
    """Equal answers alone would pass with batching doing nothing: the instance's own count
    (its log line at shutdown, ``batching: N requests in M batches``) shows requests shared
    predict_fn calls. Runs last: it deletes the batched endpoint to read that line."""
    name = endpoints["batched"]
    bodies = [json.dumps([row.tolist()]).encode() for row in rows()]
    invoke_all(server, name, bodies)
    server.client("sagemaker").delete_endpoint(EndpointName=name)
    pattern = re.compile(r"batching: (\d+) requests in (\d+) batches")
    deadline = time.monotonic() + 60
    found = None
    while found is None and time.monotonic() < deadline:
        found = pattern.search(instance_log(server, name))
        time.sleep(0.1)
    assert found is not None, instance_log(server, name)[-2000:]
    grouped, batches = int(found[1]), int(found[2])
    # 16 clients at once for 2 x 200 requests: a good share shares a call, several per call
    assert grouped >= REQUESTS // 4, (grouped, batches)
    assert grouped >= 2 * batches, (grouped, batches)
