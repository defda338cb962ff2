"""The SageMaker Python SDK v2's AsyncPredictor (predict_async + get_result, predict) against
modelhost async endpoints, with results on a real S3-compatible server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.api.test_sagemaker_sdk import FLOWS, flow_output
from tests.e2e.async_helpers import deploy_async
from tests.fixtures.seaweed import S3Server
from tests.fixtures.server import LiveServer, aws_env, unique

pytestmark = pytest.mark.e2e


def test_async_predictor(
    own_server: LiveServer,
    s3_server: S3Server,
    s3_bucket: str,
    sdk_python: Path,
    tmp_path: Path,
) -> None:
    own_server.env.update(s3_server.env())
    own_server.env["MODELHOST_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    own_server.start()
    sm = own_server.client("sagemaker")
    echo, error = unique("sdk-async-echo"), unique("sdk-async-error")
    for name, model in ((echo, "echo"), (error, "error")):
        deploy_async(
            sm,
            name,
            model,
            f"s3://{s3_bucket}/{name}/out",
            f"s3://{s3_bucket}/{name}/failed",
        )
    env = aws_env(tmp_path) | s3_server.env()
    env["AWS_ENDPOINT_URL_S3"] = s3_server.endpoint_url
    done = subprocess.run(
        [str(sdk_python), str(FLOWS / "async_flow.py"), own_server.url, s3_bucket, echo, error],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    out = flow_output(done)
    assert out["predict_async"] == {"x": [1, 2, 3]}
    assert out["predict"] == [4, 5]
    assert str(out["output_path"]).startswith(f"s3://{s3_bucket}/{echo}/out/")
    # The failure object, through the predictor's JSON deserializer. (The SDK sends no
    # ContentType with the request, so the error model refuses it before predict_fn: a 415.)
    assert out["error"] is not None and "'ErrorCode': 'ModelError'" in str(out["error"])
    assert "from primary with message" in str(out["error"])
