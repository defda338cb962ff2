"""Asynchronous inference end to end: InvokeEndpointAsync through boto3 and raw HTTP, real
instances of the fixture models, results as local files (the file:// extension)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.async_helpers import (
    Hook,
    deploy_async,
    local_path,
    raw_async,
    wait_either,
    wait_file,
)
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, unique

pytestmark = pytest.mark.e2e

XAS = "X-Amzn-SageMaker-"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("async-results")


@pytest.fixture(scope="module")
def echo_async(server: LiveServer, results: Path) -> str:
    name = unique("async-echo")
    deploy_async(
        server.client("sagemaker"),
        name,
        "echo",
        f"file://{results}/out",
        f"file://{results}/failed",
        max_concurrent=2,
    )
    return name


def _input(results: Path, data: bytes) -> Path:
    path = results / "in" / unique("input")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_boto3_invoke_endpoint_async(rt: Any, echo_async: str, results: Path) -> None:
    source = _input(results, b'{"x": [1, 2, 3]}')
    inference_id = unique("inf")
    out = rt.invoke_endpoint_async(
        EndpointName=echo_async,
        InputLocation=f"file://{source}",
        ContentType="application/json",
        Accept="application/json",
        InferenceId=inference_id,
    )
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert out["InferenceId"] == inference_id
    assert out["OutputLocation"] == f"file://{results}/out/{inference_id}.out"
    assert out["FailureLocation"] == f"file://{results}/failed/{inference_id}-error.out"
    assert wait_file(local_path(out["OutputLocation"])) == b'{"x": [1, 2, 3]}'
    assert not local_path(out["FailureLocation"]).exists()


def test_generated_id_extension_and_filename(rt: Any, echo_async: str, results: Path) -> None:
    source = _input(results, b"payload")
    out = rt.invoke_endpoint_async(
        EndpointName=echo_async,
        InputLocation=str(source),
        ContentType="text/plain",
        S3OutputPathExtension="sub/dir",
        Filename="result.txt",
    )
    assert len(out["InferenceId"]) == 36  # a UUID
    assert out["OutputLocation"] == f"file://{results}/out/sub/dir/result.txt"
    assert wait_file(local_path(out["OutputLocation"])) == b"payload"


def test_many_requests_all_end(rt: Any, echo_async: str, results: Path) -> None:
    outs = []
    for i in range(12):
        source = _input(results, f"body {i}".encode())
        outs.append(rt.invoke_endpoint_async(EndpointName=echo_async, InputLocation=str(source)))
    for i, out in enumerate(outs):
        assert wait_file(local_path(out["OutputLocation"])) == f"body {i}".encode()


def test_missing_input_writes_failure(rt: Any, echo_async: str, results: Path) -> None:
    missing = results / "in" / "no-such-input"
    out = rt.invoke_endpoint_async(EndpointName=echo_async, InputLocation=str(missing))
    kind, text = wait_either(local_path(out["OutputLocation"]), local_path(out["FailureLocation"]))
    assert kind == "failure"
    assert f"The input {missing} does not exist." in text.decode()


def test_model_error_writes_failure(server: LiveServer, rt: Any, results: Path) -> None:
    name = unique("async-error")
    deploy_async(server.client("sagemaker"), name, "error", f"file://{results}/err-out")
    source = _input(results, b"[1]")
    out = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation=str(source), ContentType="application/json"
    )
    # No S3FailurePath: the failure object goes beside the outputs.
    assert out["FailureLocation"] == f"file://{results}/err-out/{out['InferenceId']}-error.out"
    kind, text = wait_either(local_path(out["OutputLocation"]), local_path(out["FailureLocation"]))
    assert kind == "failure"
    document = json.loads(text)
    assert document["ErrorCode"] == "ModelError"
    assert document["Message"].startswith("Received server error (500) from primary")
    assert "boom from predict_fn" in document["Message"]


def test_invocation_timeout_writes_failure(server: LiveServer, rt: Any, results: Path) -> None:
    name = unique("async-slow")
    deploy_async(server.client("sagemaker"), name, "slow", f"file://{results}/slow-out")
    source = _input(results, b"5")
    out = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation=str(source), InvocationTimeoutSeconds=1
    )
    kind, text = wait_either(local_path(out["OutputLocation"]), local_path(out["FailureLocation"]))
    assert kind == "failure"
    assert "InvocationTimeoutSeconds (1 s)" in text.decode()


def test_describe_shows_async_config(sm: Any, echo_async: str, results: Path) -> None:
    expected = {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
        "OutputConfig": {
            "S3OutputPath": f"file://{results}/out",
            "S3FailurePath": f"file://{results}/failed",
        },
    }
    config = sm.describe_endpoint_config(EndpointConfigName=echo_async)
    assert config["AsyncInferenceConfig"] == expected
    assert sm.describe_endpoint(EndpointName=echo_async)["AsyncInferenceConfig"] == expected


def _wait_messages(hook: Hook, path: str, count: int, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = hook.messages(path)
        if len(got) >= count:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{path} got {hook.messages(path)}")


def test_webhook_notifications_with_retries(server: LiveServer, rt: Any, results: Path) -> None:
    hook = Hook(failures=1)  # each topic's first delivery fails: the sender tries again
    try:
        name = unique("async-hook")
        deploy_async(
            server.client("sagemaker"),
            name,
            "echo",
            f"file://{results}/hook-out",
            notification={
                "SuccessTopic": f"{hook.url}/ok",
                "ErrorTopic": f"{hook.url}/err",
                "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
            },
        )
        assert _wait_messages(hook, "/ok", 1)[0]["eventName"] == "TestNotification"
        assert _wait_messages(hook, "/err", 1)[0]["eventName"] == "TestNotification"
        source = _input(results, b"hi")
        ok = rt.invoke_endpoint_async(
            EndpointName=name, InputLocation=str(source), ContentType="text/plain"
        )
        bad = rt.invoke_endpoint_async(EndpointName=name, InputLocation=str(source) + "-none")
        [_, done] = _wait_messages(hook, "/ok", 2)
        assert done["eventName"] == "InferenceResult"
        assert done["invocationStatus"] == "Completed"
        assert done["inferenceId"] == ok["InferenceId"]
        assert done["requestParameters"]["endpointName"] == name
        assert done["responseParameters"]["outputLocation"] == ok["OutputLocation"]
        assert base64.b64decode(done["responseBody"]["content"]) == b"hi"
        [_, failed] = _wait_messages(hook, "/err", 2)
        assert failed["invocationStatus"] == "Failed"
        assert failed["inferenceId"] == bad["InferenceId"]
        assert "does not exist" in failed["failureReason"]
    finally:
        hook.close()


# --- what is refused ----------------------------------------------------------------------


def test_invoke_endpoint_on_async_endpoint_is_refused(rt: Any, echo_async: str) -> None:
    for _ in range(2):  # the second time too: the path is never cached as servable
        with pytest.raises(ClientError) as info:
            rt.invoke_endpoint(EndpointName=echo_async, Body=b"x")
        err = info.value.response["Error"]
        assert err["Code"] == "ValidationError"
        assert "asynchronous inference endpoint" in err["Message"]
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint_with_response_stream(EndpointName=echo_async, Body=b"x")
    assert info.value.response["Error"]["Code"] == "ValidationError"


def test_async_invoke_on_real_time_endpoint_is_refused(
    server: LiveServer, rt: Any, results: Path
) -> None:
    name = unique("realtime")
    sm = server.client("sagemaker")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint_async(EndpointName=name, InputLocation="s3://bucket/key")
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert "not an asynchronous inference endpoint" in err["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_endpoint(rt: Any) -> None:
    with pytest.raises(ClientError) as info:
        rt.invoke_endpoint_async(EndpointName="no-such-async", InputLocation="s3://b/k")
    err = info.value.response["Error"]
    assert err == {
        "Code": "ValidationError",
        "Message": "Endpoint no-such-async of account 123456789012 not found.",
    }


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "Value null at 'inputLocation' failed to satisfy constraint"),
        ({"InputLocation": "ftp://bucket/key"}, "at 'inputLocation' failed to satisfy"),
        ({"RequestTTLSeconds": "59"}, "greater than or equal to 60"),
        ({"RequestTTLSeconds": "21601"}, "less than or equal to 21600"),
        ({"RequestTTLSeconds": "soon"}, "Member must be an integer"),
        ({"InvocationTimeoutSeconds": "0"}, "greater than or equal to 1"),
        ({"InvocationTimeoutSeconds": "3601"}, "less than or equal to 3600"),
        ({"Inference-Id": "x" * 65}, "length less than or equal to 64"),
        ({"Filename": "a..b"}, "at 'filename' failed to satisfy"),
        ({"Filename": "f" * 33}, "length less than or equal to 32"),
        ({"S3OutputPathExtension": "s3://elsewhere"}, "at 's3OutputPathExtension'"),
    ],
)
def test_invalid_requests(
    server: LiveServer, echo_async: str, headers: dict[str, str], fragment: str
) -> None:
    sent = {"InputLocation": "s3://bucket/key", **headers}
    if not headers:
        sent = {}
    status, got, body = raw_async(server, echo_async, {XAS + k: v for k, v in sent.items()})
    assert status == 400, body
    assert got["x-amzn-errortype"] == "ValidationError"
    assert fragment in body["message"]


def test_inline_body(rt: Any, server: LiveServer, echo_async: str) -> None:
    out = rt.invoke_endpoint_async(
        EndpointName=echo_async, Body=b'{"inline": true}', ContentType="application/json"
    )
    assert wait_file(local_path(out["OutputLocation"])) == b'{"inline": true}'
    status, got, body = raw_async(server, echo_async, {}, b"x" * 128001)
    assert status == 400 and got["x-amzn-errortype"] == "ValidationError"
    assert "less than or equal to 128000" in body["message"]
    status, _, body = raw_async(
        server, echo_async, {XAS + "InputLocation": "s3://bucket/key"}, b"inline"
    )
    assert status == 400 and "not both" in body["message"]


def _config(name: str, model: str, config: dict[str, Any], **variant: Any) -> dict[str, Any]:
    pv = {"VariantName": "v", "ModelName": model, **variant}
    if "ServerlessConfig" not in variant:
        pv |= {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
    return {"EndpointConfigName": name, "ProductionVariants": [pv], "AsyncInferenceConfig": config}


@pytest.mark.parametrize(
    ("config", "variant", "fragment"),
    [
        ({"OutputConfig": {}}, {}, "S3OutputPath is required"),
        ({"OutputConfig": {"S3OutputPath": "ftp://b/k"}}, {}, "at 'asyncInferenceConfig"),
        (
            {
                "OutputConfig": {"S3OutputPath": "s3://b/o"},
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1001},
            },
            {},
            "less than or equal to 1000",
        ),
        (
            {
                "OutputConfig": {
                    "S3OutputPath": "s3://b/o",
                    "NotificationConfig": {"SuccessTopic": "not-a-topic"},
                }
            },
            {},
            "successTopic",
        ),
        (
            {
                "OutputConfig": {
                    "S3OutputPath": "s3://b/o",
                    "NotificationConfig": {
                        "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"]
                    },
                }
            },
            {},
            "has no SuccessTopic",
        ),
    ],
)
def test_invalid_async_configs(
    sm: Any, config: dict[str, Any], variant: dict[str, Any], fragment: str
) -> None:
    model = unique("async-model")
    sm.create_model(
        ModelName=model, PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / "echo")}
    )
    name = unique("bad-async")
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(**_config(name, model, config, **variant))
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert fragment in err["Message"], err["Message"]
    assert "Could not find" in str(_missing(sm, name))


def _missing(sm: Any, name: str) -> Exception:
    try:
        sm.describe_endpoint_config(EndpointConfigName=name)
    except ClientError as exc:
        return exc
    raise AssertionError(f"{name} was created")


def test_webhook_topics_are_accepted(sm: Any) -> None:
    model = unique("async-model")
    sm.create_model(
        ModelName=model, PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / "echo")}
    )
    name = unique("hook-async")
    config = {
        "OutputConfig": {
            "S3OutputPath": "s3://bucket/out",
            "NotificationConfig": {
                "SuccessTopic": "http://127.0.0.1:9/ok",
                "ErrorTopic": "arn:aws:sns:us-east-1:123456789012:errors",
                "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
            },
        }
    }
    sm.create_endpoint_config(**_config(name, model, config))
    got = sm.describe_endpoint_config(EndpointConfigName=name)["AsyncInferenceConfig"]
    assert json.dumps(got, sort_keys=True) == json.dumps(config, sort_keys=True)


def test_metrics_expose_the_backlog_and_counters(
    server: LiveServer, rt: Any, echo_async: str, results: Path
) -> None:
    out = rt.invoke_endpoint_async(
        EndpointName=echo_async, InputLocation=str(_input(results, b"m"))
    )
    wait_file(local_path(out["OutputLocation"]))
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        if f'sagemaker_InvocationsProcesssed_total{{EndpointName="{echo_async}"}}' in text:
            break
        time.sleep(0.1)
    label = f'{{EndpointName="{echo_async}"}}'
    for name in (
        "ApproximateBacklogSize",
        "ApproximateBacklogSizePerInstance",
        "ApproximateAgeOfOldestRequest",
        "HasBacklogWithoutCapacity",
        "InvocationsProcesssed_total",
        "TimeInBacklog_milliseconds_total",
    ):
        assert f"sagemaker_{name}{label}" in text, name
    assert f"sagemaker_HasBacklogWithoutCapacity{label} 0.0" in text


def test_update_cannot_switch_between_async_and_real_time(
    sm: Any, echo_async: str, results: Path
) -> None:
    plain = unique("plain-config")
    sm.create_endpoint_config(
        EndpointConfigName=plain,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": echo_async,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    with pytest.raises(ClientError) as info:
        sm.update_endpoint(EndpointName=echo_async, EndpointConfigName=plain)
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert err["Message"].startswith(
        f"The AsyncInferenceConfig parameter cannot be removed from this endpoint {echo_async}."
    )
    assert sm.describe_endpoint(EndpointName=echo_async)["EndpointStatus"] == "InService"
