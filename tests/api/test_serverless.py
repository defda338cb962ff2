"""Serverless variants (ServerlessConfig): DescribeEndpoint shows the serverless configuration
instead of instance counts; MemorySizeInMB in 1 GB steps; requests beyond MaxConcurrency get
ThrottlingException; payloads up to 4 MB."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import LiveServer, deploy, unique, wait_gone

pytestmark = pytest.mark.api

HOLD_S = 1.5
SLOW = f"""
import time


def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    time.sleep({HOLD_S})
    return data, content_type
"""


@pytest.fixture(scope="module")
def serverless(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A serverless endpoint (MaxConcurrency 2) whose model holds each request HOLD_S s."""
    sm = server.client("sagemaker")
    model_dir = tmp_path_factory.mktemp("slow-model")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(SLOW)
    name = unique("ep-serverless")
    variants = [
        {
            "VariantName": "AllTraffic",
            "ModelName": name,
            "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2},
        }
    ]
    desc = deploy(sm, name, str(model_dir), variants=variants)
    assert desc["EndpointStatus"] == "InService", desc
    yield name
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


def test_describe_shows_the_serverless_config(sm: Any, serverless: str) -> None:
    (variant,) = sm.describe_endpoint(EndpointName=serverless)["ProductionVariants"]
    config = {"MemorySizeInMB": 2048, "MaxConcurrency": 2}
    assert variant["CurrentServerlessConfig"] == config
    assert variant["DesiredServerlessConfig"] == config
    assert "CurrentInstanceCount" not in variant and "DesiredInstanceCount" not in variant


def post(server: LiveServer, endpoint: str, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        conn.request("POST", f"/endpoints/{endpoint}/invocations", body, headers)
        answer = conn.getresponse()
        return answer.status, answer.getheader("x-amzn-errortype") or "", answer.read()
    finally:
        conn.close()


def test_requests_beyond_max_concurrency_are_throttled(server: LiveServer, serverless: str) -> None:
    results: list[tuple[int, str, bytes]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def client() -> None:
        start.wait(10)
        got = post(server, serverless, b"[1]")
        with lock:
            results.append(got)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 6
    ok = [r for r in results if r[0] == 200]
    throttled = [r for r in results if r[:2] == (400, "ThrottlingException")]
    assert len(ok) + len(throttled) == 6, results
    assert len(ok) >= 2 and throttled, results
    assert b"MaxConcurrency of 2" in throttled[0][2]
    # once the two in flight are answered, requests are served again
    assert post(server, serverless, b"[2]")[0] == 200


def test_payload_limit_is_4_mb(server: LiveServer, serverless: str) -> None:
    body = b"[" + b"1," * (2 * 1024 * 1024 + 10) + b"1]"  # a little over 4 MB
    status, code, payload = post(server, serverless, body)
    assert (status, code) == (400, "ValidationError"), payload
    assert b"4 MB" in json.loads(payload)["message"].encode()


def test_memory_in_1_gb_steps(sm: Any, serverless: str) -> None:
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(
            EndpointConfigName=unique("cfg-mem"),
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": serverless,
                    "ServerlessConfig": {"MemorySizeInMB": 1500, "MaxConcurrency": 1},
                }
            ],
        )
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert "MemorySizeInMB 1500" in err["Message"] and "1 GB steps" in err["Message"]


def test_scaling_a_serverless_variant_names_provisioned_concurrency(
    server: LiveServer, serverless: str
) -> None:
    aas = server.client("application-autoscaling")
    with pytest.raises(ClientError) as info:
        aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/{serverless}/variant/AllTraffic",
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            MinCapacity=1,
            MaxCapacity=2,
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "DesiredProvisionedConcurrency" in info.value.response["Error"]["Message"]
