"""The SageMaker Python SDK's framework-model path against modelhost and a real S3-compatible
server: SKLearnModel(entry_point=..., source_dir=...) uploads the code itself."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.fixtures.seaweed import S3Server
from tests.fixtures.server import LiveServer, unique

pytestmark = pytest.mark.e2e

FLOW = Path(__file__).resolve().parents[1] / "fixtures" / "sdk" / "framework_flow.py"
INFERENCE = """import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(rows, model):
    return {"classes": [int(c) for c in model.predict(rows)], "entry_point": __name__}
"""


def model_archive(tmp_path: Path) -> bytes:
    iris = load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), tmp_path / "m")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "m", "model.joblib")
    return buf.getvalue()


def test_sklearn_model_with_entry_point(
    own_server: LiveServer,
    s3_server: S3Server,
    s3_bucket: str,
    sdk_python: Path,
    tmp_path: Path,
) -> None:
    own_server.env.update(s3_server.env())
    own_server.env["MODELHOST_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    own_server.start()
    name = unique("sdk-sklearn")
    s3_server.client().put_object(
        Bucket=s3_bucket, Key=f"{name}/model.tar.gz", Body=model_archive(tmp_path)
    )
    source = tmp_path / "src"
    source.mkdir()
    (source / "inference.py").write_text(INFERENCE)
    args = [own_server.url, s3_bucket]
    args += [f"s3://{s3_bucket}/{name}/model.tar.gz", str(source), name]
    done = subprocess.run(
        [str(sdk_python), str(FLOW), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **s3_server.env(),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
            # how a user points the SDK's own S3 uploads at another S3 (botocore >= 1.31)
            "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
        },
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    line = next((x for x in done.stdout.splitlines() if x.startswith("SDKFLOW ")), None)
    assert line is not None, done.stdout[-3000:]
    out = json.loads(line.removeprefix("SDKFLOW "))
    env = out["environment"]
    assert env["SAGEMAKER_PROGRAM"] == "inference.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"].startswith(f"s3://{s3_bucket}/")
    assert out["prediction"] == {"classes": [0, 2], "entry_point": "inference"}
