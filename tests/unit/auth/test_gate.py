"""The gate's rule, the start-up rule, and how requests are classified for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.auth.gate import Gate, classify, is_loopback, startup_problem
from modelhost.auth.keys import KeyRing, add_key, revoke_key
from modelhost.auth.policy import Action, Policy
from modelhost.errors import InvalidSignatureException
from modelhost.settings import Settings


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_startup_rule(tmp_path: Path) -> None:
    wide = Settings(host="0.0.0.0", data_dir=tmp_path)
    problem = startup_problem(wide, has_keys=False)
    assert problem is not None and "modelhost keys create" in problem
    assert "--insecure-no-auth" in problem
    assert startup_problem(wide, has_keys=True) is None
    assert startup_problem(wide.model_copy(update={"insecure_no_auth": True}), False) is None
    assert startup_problem(Settings(data_dir=tmp_path), has_keys=False) is None


def test_keys_turn_checking_on_and_a_wide_server_never_opens(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    local = Gate(KeyRing(path, check_s=0.0), "us-east-1", True, "1")
    wide = Gate(KeyRing(path, check_s=0.0), "us-east-1", False, "1")
    assert not local.required() and wide.required()
    add_key(path, "a", Policy.parse("admin"))
    assert local.required() and wide.required()
    revoke_key(path, "a")
    assert not local.required() and wide.required()  # every key revoked: still closed


@pytest.mark.parametrize(
    ("path", "headers", "body", "services", "action"),
    [
        (
            "/endpoints/ep/invocations",
            {},
            b"",
            {"sagemaker"},
            Action("sagemaker", "InvokeEndpoint", "ep"),
        ),
        (
            "/endpoints/ep/invocations-response-stream",
            {},
            b"",
            {"sagemaker"},
            Action("sagemaker", "InvokeEndpointWithResponseStream", "ep"),
        ),
        (
            "/endpoints/ep/async-invocations",
            {},
            b"",
            {"sagemaker"},
            Action("sagemaker", "InvokeEndpointAsync", "ep"),
        ),
        (
            "/",
            {b"x-amz-target": b"SageMaker.CreateModel"},
            b"{}",
            {"sagemaker"},
            Action("sagemaker", "CreateModel"),
        ),
        (
            "/",
            {b"x-amz-target": b"Logs_20140328.GetLogEvents"},
            b"{}",
            {"logs"},
            Action("logs", "GetLogEvents"),
        ),
        (
            "/",
            {b"x-amz-target": b"AnyScaleFrontendService.PutScalingPolicy"},
            b"{}",
            {"application-autoscaling"},
            Action("application-autoscaling", "PutScalingPolicy"),
        ),
        (
            "/",
            {b"x-amz-target": b"GraniteServiceVersion20100801.PutMetricData"},
            b"{}",
            {"monitoring"},
            Action("monitoring", "PutMetricData"),
        ),
        (
            "/",
            {b"content-type": b"application/x-www-form-urlencoded"},
            b"Action=GetCallerIdentity&Version=2011-06-15",
            {"sts"},
            Action("sts", "GetCallerIdentity"),
        ),
        (
            "/",
            {b"content-type": b"application/x-www-form-urlencoded; charset=utf-8"},
            b"Action=ListMetrics&Version=2010-08-01",
            {"monitoring"},
            Action("monitoring", "ListMetrics"),
        ),
        (
            "/service/GraniteServiceVersion20100801/operation/GetMetricData",
            {},
            b"",
            {"monitoring"},
            Action("monitoring", "GetMetricData"),
        ),
        ("/metrics", {}, b"", {"sagemaker", "monitoring"}, Action("sagemaker", "GetMetrics")),
        (
            "/modelhost/info",
            {},
            b"",
            {"sagemaker", "monitoring"},
            Action("sagemaker", "GetServerInfo"),
        ),
        (
            "/modelhost/endpoints/e/queue",
            {},
            b"",
            {"sagemaker", "monitoring"},
            Action("sagemaker", "GetAsyncQueue"),
        ),
    ],
)
def test_classify(
    path: str, headers: dict[bytes, bytes], body: bytes, services: set[str], action: Action
) -> None:
    route = classify(path, list(headers.items()), body)
    assert route.services == frozenset(services)
    assert route.action == action


def test_each_protocol_frames_its_refusal() -> None:
    err = InvalidSignatureException("no")
    rest = classify("/endpoints/e/invocations", [], b"").error(err)
    assert rest[0] == 403 and (b"x-amzn-errortype", b"InvalidSignatureException") in rest[1]
    form = [(b"content-type", b"application/x-www-form-urlencoded")]
    query = classify("/", form, b"Action=GetCallerIdentity").error(err)
    assert query[0] == 403 and b"<Code>SignatureDoesNotMatch</Code>" in query[2]
    cbor = classify("/service/GraniteServiceVersion20100801/operation/ListMetrics", [], b"")
    status, headers, _ = cbor.error(err)
    assert status == 403 and (b"x-amzn-query-error", b"SignatureDoesNotMatch;Sender") in headers


def test_instances_beyond_loopback_follow_the_same_rule(tmp_path: Path) -> None:
    outward = Settings(instance_host="10.1.2.3", data_dir=tmp_path)
    problem = startup_problem(outward, has_keys=False)
    assert problem is not None and "10.1.2.3" in problem and "--insecure-no-auth" in problem
    assert startup_problem(outward, has_keys=True) is None
    assert startup_problem(outward.model_copy(update={"insecure_no_auth": True}), False) is None
    wildcard = Settings(instance_host="0.0.0.0", data_dir=tmp_path)
    problem = startup_problem(wildcard, has_keys=True)  # keys or not: nobody can dial it
    assert problem is not None and "MODELHOST_INSTANCE_HOST" in problem


def test_serve_refuses_instances_beyond_loopback_without_keys(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelhost.cli.main import app

    env = {"MODELHOST_INSTANCE_HOST": "10.1.2.3", "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 2, result.output
    assert "refusing to serve on 10.1.2.3 without access keys" in result.output
