"""The SageMaker Python SDK against a live modelhost: batch transforms of the demo iris model
over a CSV in the object store, waited for by the SDK itself (v2's Transformer, printing the
job's logs; v3's sagemaker-core TransformJob)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from modelhost.storage.local import LocalObjectStore
from tests.api.test_sagemaker_sdk import (
    FLOWS,
    SKLEARN_IMAGE,
    flow_output,
    iris_in_object_store,
)
from tests.fixtures.server import LiveServer, aws_env, unique

pytestmark = pytest.mark.api

BUCKET = "sdk-transform"


def test_sdk_transformer_transform_and_wait(server: LiveServer, sdk_python: Path) -> None:
    name = unique("sdk-tj")
    model_data = iris_in_object_store(server, name)
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName=name, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": model_data}
    )
    store = LocalObjectStore(server.data_dir / "objects")
    store.ensure_bucket(BUCKET)
    rows = b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n" * 50
    store.put_bytes(BUCKET, f"{name}/in/iris.csv", rows)
    done = subprocess.run(
        [
            str(sdk_python),
            str(FLOWS / "transform_flow.py"),
            server.url,
            name,
            f"s3://{BUCKET}/{name}/in/",
            f"s3://{BUCKET}/{name}/out",
            "logs",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ | {"AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": server.url},
        check=False,
    )
    out = flow_output(done)
    assert out["status"] == "Completed"
    # logs=True: the SDK printed the job's instance log (group /aws/sagemaker/TransformJobs)
    assert "modelhost.runtime: serving on http://127.0.0.1:" in done.stdout, done.stdout[-3000:]
    result = store.open_read(BUCKET, f"{name}/out/iris.csv.out").read()
    assert result.count(b"setosa") == 50
    assert result.count(b"virginica") == 50


def test_sdk_v3_transform_job_create_and_wait(
    server: LiveServer, sdk3_python: Path, tmp_path: Path
) -> None:
    name = unique("sdk3-tj")
    model_data = iris_in_object_store(server, name)
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName=name, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": model_data}
    )
    store = LocalObjectStore(server.data_dir / "objects")
    store.ensure_bucket(BUCKET)
    store.put_bytes(BUCKET, f"{name}/in/iris.csv", b"6.7,3.0,5.2,2.3\n" * 3)
    done = subprocess.run(
        [
            str(sdk3_python),
            str(FLOWS / "transform_v3_flow.py"),
            name,
            f"s3://{BUCKET}/{name}/in/",
            f"s3://{BUCKET}/{name}/out",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=aws_env(tmp_path, server.url),
        check=False,
    )
    assert flow_output(done)["status"] == "Completed"
    result = store.open_read(BUCKET, f"{name}/out/iris.csv.out").read()
    assert json.loads(result) == {"predictions": ["virginica"] * 3}
