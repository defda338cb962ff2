"""The AWS CLI (v1, from the venv) against a live server: the commands the README shows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, aws_env, unique

pytestmark = pytest.mark.api

AWS = Path(sys.executable).parent / "aws"
CLI_TIMEOUT_S = 60.0


@pytest.fixture
def aws(server: LiveServer, tmp_path: Path) -> Any:
    """Run ``aws --endpoint-url <server> ...`` with test credentials and no user AWS config."""
    env = aws_env(tmp_path) | {"AWS_MAX_ATTEMPTS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AWS), "--endpoint-url", server.url, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    return run


def ok(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else None


def wait_in_service(aws: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """What ``aws sagemaker wait endpoint-in-service`` does, without its 30 s delay."""
    deadline = time.monotonic() + timeout
    while True:
        desc: dict[str, Any] = ok(aws("sagemaker", "describe-endpoint", "--endpoint-name", name))
        if desc["EndpointStatus"] not in {"Creating", "Updating"}:
            return desc
        assert time.monotonic() < deadline, f"{name} still {desc['EndpointStatus']}"


def test_list_endpoints(aws: Any) -> None:
    assert isinstance(ok(aws("sagemaker", "list-endpoints"))["Endpoints"], list)


def test_deploy_and_invoke_with_the_aws_cli(aws: Any, tmp_path: Path) -> None:
    name = unique("awscli")
    container = json.dumps({"ModelDataUrl": str((FIXTURE_MODELS / "echo").resolve())})
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    ok(aws("sagemaker", "create-model", "--model-name", name, "--primary-container", container))
    ok(
        aws(
            "sagemaker",
            "create-endpoint-config",
            "--endpoint-config-name",
            name,
            "--production-variants",
            json.dumps([variant]),
        )
    )
    created = ok(
        aws("sagemaker", "create-endpoint", "--endpoint-name", name, "--endpoint-config-name", name)
    )
    assert created["EndpointArn"].endswith(f":endpoint/{name}")
    assert wait_in_service(aws, name)["EndpointStatus"] == "InService"

    outfile = tmp_path / "out.json"
    meta = ok(
        aws(
            "sagemaker-runtime",
            "invoke-endpoint",
            "--endpoint-name",
            name,
            "--content-type",
            "application/json",
            "--body",
            '{"x": [1, 2]}',
            str(outfile),
        )
    )
    assert meta["InvokedProductionVariant"] == "AllTraffic"
    assert outfile.read_text() == '{"x": [1, 2]}'

    ok(aws("sagemaker", "delete-endpoint", "--endpoint-name", name))
    ok(aws("sagemaker", "delete-endpoint-config", "--endpoint-config-name", name))
    ok(aws("sagemaker", "delete-model", "--model-name", name))


def test_missing_endpoint_is_a_validation_exception(aws: Any) -> None:
    out = aws("sagemaker", "describe-endpoint", "--endpoint-name", unique("missing"))
    assert out.returncode in {254, 255}
    assert "ValidationException" in out.stderr
    assert "Could not find endpoint" in out.stderr
