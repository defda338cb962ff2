"""InvokeEndpoint end to end: headers, variants, errors, limits, timeouts."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.server import (
    FIXTURE_MODELS,
    LiveServer,
    deploy,
    invoke_concurrently,
    unique,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def echo(server: LiveServer) -> str:
    sm = server.client("sagemaker")
    name = unique("echo")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    return name


@pytest.fixture(scope="module")
def two_variants(server: LiveServer) -> str:
    sm = server.client("sagemaker")
    name = unique("split")
    for model in ("echo", "sum"):
        sm.create_model(
            ModelName=f"{name}-{model}",
            PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / model)},
        )
    variants = [
        {
            "VariantName": v,
            "ModelName": f"{name}-{m}",
            "InstanceType": "ml.t2.medium",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0,
        }
        for v, m in (("Echo", "echo"), ("Sum", "sum"))
    ]
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    return name


def test_headers_round_trip(rt: Any, echo: str) -> None:
    out = rt.invoke_endpoint(
        EndpointName=echo,
        Body=b'{"a": 1}',
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=abc-123",
        InferenceId="inf-1",
    )
    assert out["Body"].read() == b'{"a": 1}'
    assert out["ContentType"] == "application/json"
    assert out["InvokedProductionVariant"] == "AllTraffic"
    assert out["CustomAttributes"] == "trace=abc-123"
    assert out["ResponseMetadata"]["RequestId"]


def test_unknown_endpoint_is_validation_error(rt: Any) -> None:
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"x")
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert err["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_model_error_is_424_with_original_status(server: LiveServer, rt: Any) -> None:
    sm = server.client("sagemaker")
    name = unique("error")
    assert deploy(sm, name, str(FIXTURE_MODELS / "error"))["EndpointStatus"] == "InService"
    with pytest.raises(rt.exceptions.ModelError) as info:
        rt.invoke_endpoint(EndpointName=name, Body=b"[1]", ContentType="application/json")
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 500
    assert "boom from predict_fn" in response["OriginalMessage"]
    assert response["Error"]["Message"].startswith("Received server error (500) from primary")
    assert response["LogStreamArn"].endswith(f"/aws/sagemaker/Endpoints/{name}")


def test_payload_over_6mb_is_refused(rt: Any, echo: str) -> None:
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName=echo, Body=b"x" * (6 * 1024 * 1024 + 1))
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "exceeds" in info.value.response["Error"]["Message"]
    # exactly at the limit is fine
    out = rt.invoke_endpoint(EndpointName=echo, Body=b"y" * (6 * 1024 * 1024))
    assert len(out["Body"].read()) == 6 * 1024 * 1024


def test_large_binary_bodies_arrive_intact_both_ways(server: LiveServer, echo: str) -> None:
    """Bodies of many sizes, large ones in several parts, 8 clients at once on keep-alive
    connections: every answer is byte for byte its own request (nothing joined out of order,
    nothing pipelined behind a large body lost)."""
    rng = random.Random(8)
    sizes = [1, 16 * 1024, 64 * 1024 + 1, 300_000, 2**20, 5 * 2**20]
    clients = [[rng.randbytes(rng.choice(sizes)) for _ in range(4)] for _ in range(8)]
    headers = {"Content-Type": "application/octet-stream"}
    assert invoke_concurrently(server, echo, clients, headers) == clients


def test_target_variant_and_weights(rt: Any, two_variants: str) -> None:
    summed = rt.invoke_endpoint(
        EndpointName=two_variants,
        Body=b"[1, 2, 3]",
        ContentType="application/json",
        TargetVariant="Sum",
    )
    assert summed["InvokedProductionVariant"] == "Sum"
    assert json.loads(summed["Body"].read()) == {"sum": 6.0}
    seen = Counter(
        rt.invoke_endpoint(EndpointName=two_variants, Body=b"[1]", ContentType="application/json")[
            "InvokedProductionVariant"
        ]
        for _ in range(200)
    )
    assert set(seen) == {"Echo", "Sum"}
    assert min(seen.values()) > 50, seen  # 1:1 weights; P(< 50 of 200) is ~1e-13


def test_unknown_target_variant(rt: Any, two_variants: str) -> None:
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint(EndpointName=two_variants, Body=b"[1]", TargetVariant="Nope")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "Nope" in info.value.response["Error"]["Message"]


def test_weights_follow_update(server: LiveServer, rt: Any, two_variants: str) -> None:
    sm = server.client("sagemaker")
    sm.update_endpoint_weights_and_capacities(
        EndpointName=two_variants,
        DesiredWeightsAndCapacities=[{"VariantName": "Echo", "DesiredWeight": 0.0}],
    )
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=two_variants, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    seen = {
        rt.invoke_endpoint(EndpointName=two_variants, Body=b"[1]", ContentType="application/json")[
            "InvokedProductionVariant"
        ]
        for _ in range(50)
    }
    assert seen == {"Sum"}
    desc = sm.describe_endpoint(EndpointName=two_variants)
    weights = {v["VariantName"]: v["CurrentWeight"] for v in desc["ProductionVariants"]}
    assert weights == {"Echo": 0.0, "Sum": 1.0}


def test_invocation_timeout(own_server: LiveServer) -> None:
    own_server.env["MODELHOST_INVOCATION_TIMEOUT_S"] = "1"
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    name = unique("slow")
    assert deploy(sm, name, str(FIXTURE_MODELS / "slow"))["EndpointStatus"] == "InService"
    assert rt.invoke_endpoint(EndpointName=name, Body=b"0")["Body"].read()
    with pytest.raises(rt.exceptions.ModelError) as info:
        rt.invoke_endpoint(EndpointName=name, Body=b"3")
    assert "timed out" in info.value.response["Error"]["Message"]


def test_metrics_use_cloudwatch_names(server: LiveServer, rt: Any) -> None:
    import urllib.request

    sm = server.client("sagemaker")
    name = unique("metrics")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"), count=2)["EndpointStatus"] == "InService"
    for _ in range(4):
        rt.invoke_endpoint(EndpointName=name, Body=b"m")
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    labels = f'{{EndpointName="{name}",VariantName="AllTraffic"}}'
    assert f"sagemaker_Invocations_total{labels} 4.0" in text
    assert f"sagemaker_InvocationsPerInstance_total{labels} 2.0" in text
    assert f"sagemaker_CurrentInstanceCount{labels} 2.0" in text
    assert f"sagemaker_ModelLatency_count{labels} 4.0" in text


def test_concurrent_invocations_each_get_their_own_answer(server: LiveServer, echo: str) -> None:
    """Many clients at once on one built-in instance: the router pipelines their requests on
    one connection (upstream_pipe.py); every answer must still reach the request it belongs to."""
    bodies = [
        [json.dumps({"client": n, "request": i}).encode() for i in range(25)] for n in range(16)
    ]
    answers = invoke_concurrently(server, echo, bodies, {"Content-Type": "application/json"})
    assert answers == bodies
