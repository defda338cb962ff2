"""Existing code, unchanged: boto3, the AWS CLI and the SageMaker Python SDK find modelhost
through AWS_ENDPOINT_URL_SAGEMAKER / AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME alone (no
endpoint_url anywhere in the code), as the README and `make run` say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, aws_env, deploy, unique

pytestmark = pytest.mark.api

AWS = Path(sys.executable).parent / "aws"
TIMEOUT_S = 120

# Code as written for SageMaker: nothing in it names modelhost.
BOTO3_SCRIPT = """
import json, sys
import boto3

sm, rt = boto3.client("sagemaker"), boto3.client("sagemaker-runtime")
names = [e["EndpointName"] for e in sm.list_endpoints(NameContains=sys.argv[1])["Endpoints"]]
body = rt.invoke_endpoint(EndpointName=sys.argv[1], Body=b"unchanged")["Body"].read()
print(json.dumps({"names": names, "body": body.decode()}))
"""
SDK_SCRIPT = """
import sys
from sagemaker.predictor import Predictor

print(Predictor(sys.argv[1]).predict(b"from the sdk").decode())
"""


@pytest.fixture(scope="module")
def endpoint(server: LiveServer) -> str:
    name = unique("from-env")
    assert (
        deploy(server.client("sagemaker"), name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"]
        == "InService"
    )
    return name


def environment(server: LiveServer, tmp_path: Path) -> dict[str, str]:
    return aws_env(tmp_path, server.url) | {"SAGEMAKER_SUPPRESS_V2_WARNING": "1"}


def run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_boto3(server: LiveServer, endpoint: str, tmp_path: Path) -> None:
    out = run([sys.executable, "-c", BOTO3_SCRIPT, endpoint], environment(server, tmp_path))
    assert json.loads(out) == {"names": [endpoint], "body": "unchanged"}


def test_aws_cli(server: LiveServer, endpoint: str, tmp_path: Path) -> None:
    env = environment(server, tmp_path)
    out = run([str(AWS), "sagemaker", "describe-endpoint", "--endpoint-name", endpoint], env)
    assert json.loads(out)["EndpointStatus"] == "InService"


def test_sagemaker_sdk(server: LiveServer, endpoint: str, sdk_python: Path, tmp_path: Path) -> None:
    out = run([str(sdk_python), "-c", SDK_SCRIPT, endpoint], environment(server, tmp_path))
    assert out.strip().splitlines()[-1] == "from the sdk"
