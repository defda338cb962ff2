"""The SageMaker Python SDK against a live modelhost. v2: Model.deploy, Predictor.predict with
JSON and CSV serializers, a model error, delete_model and delete_endpoint. v3: the resource
classes (Model, EndpointConfig, Endpoint) from create to delete, found through the
environment alone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelhost.demo import build_archive
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, aws_env, pack, unique

pytestmark = pytest.mark.api

FLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "sdk"
FLOW = FLOWS / "flow.py"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
BUCKET = "sdk-bucket"


def iris_in_object_store(server: LiveServer, name: str) -> str:
    """The demo iris model.tar.gz in the server's embedded object store; its s3:// URL."""
    key = f"{name}/model.tar.gz"
    path = server.data_dir / "objects" / BUCKET / key
    path.parent.mkdir(parents=True)
    path.write_bytes(build_archive())
    return f"s3://{BUCKET}/{key}"


def flow_output(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    line = next((x for x in done.stdout.splitlines() if x.startswith("SDKFLOW ")), None)
    assert line is not None, done.stdout[-3000:]
    out: dict[str, Any] = json.loads(line.removeprefix("SDKFLOW "))
    return out


def test_sdk_deploys_predicts_and_tears_down(server: LiveServer, sdk_python: Path) -> None:
    name = unique("sdk-iris")
    model_data = iris_in_object_store(server, name)
    done = subprocess.run(
        [str(sdk_python), str(FLOW), server.url, model_data, name],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = flow_output(done)
    assert out["json"] == {"predictions": ["setosa", "virginica"]}
    assert out["csv"] == {"predictions": ["setosa"]}
    assert out["error"] == "ModelError"  # the demo's input_fn refuses a dict: a 424
    assert out["endpoint_status"] == "InService"
    assert out["left"] == {"configs": [], "models": []}


def test_sdk_v3_resources_from_create_to_delete(
    server: LiveServer, sdk3_python: Path, tmp_path: Path
) -> None:
    name = unique("sdk3-iris")
    model_data = iris_in_object_store(server, name)
    env = aws_env(tmp_path, server.url)
    done = subprocess.run(
        [str(sdk3_python), str(FLOWS / "v3_flow.py"), SKLEARN_IMAGE, model_data, name],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    out = flow_output(done)
    assert out["prediction"] == {"predictions": ["virginica"]}
    assert out["status"] == "InService"
    assert out["left"] == []


def test_sdk_pipeline_model_deploys_and_predicts(server: LiveServer, sdk_python: Path) -> None:
    name = unique("sdk-pipe")
    iris = iris_in_object_store(server, name)
    echo = server.data_dir / "objects" / BUCKET / name / "echo.tar.gz"
    pack(FIXTURE_MODELS / "echo", echo)
    done = subprocess.run(
        [
            str(sdk_python),
            str(FLOWS / "pipeline_flow.py"),
            server.url,
            f"s3://{BUCKET}/{name}/echo.tar.gz",
            iris,
            name,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = flow_output(done)
    assert out["containers"] == 2
    assert out["json"] == {"predictions": ["setosa", "virginica"]}


def test_sdk_multi_data_model(server: LiveServer, sdk_python: Path) -> None:
    """MultiDataModel.deploy and predict(target_model=...), unchanged."""
    name = unique("sdk-mme")
    path = server.data_dir / "objects" / BUCKET / name / "iris-v1.tar.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(build_archive())
    flow = [str(sdk_python), str(FLOWS / "mme_flow.py"), server.url]
    done = subprocess.run(
        [*flow, f"s3://{BUCKET}/{name}/", name, "iris-v1.tar.gz"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = flow_output(done)
    assert out["mode"] == "MultiModel"
    assert out["prediction"] == {"predictions": ["setosa"]}
    assert out["again"] == {"predictions": ["virginica"]}
