"""The SageMaker Python SDK (v2) against a live modelhost: Model.deploy, Predictor.predict
with JSON and CSV serializers, a model error, delete_model and delete_endpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelhost.demo import build_archive
from tests.fixtures.server import LiveServer, unique

pytestmark = pytest.mark.api

FLOW = Path(__file__).resolve().parents[1] / "fixtures" / "sdk" / "flow.py"
BUCKET = "sdk-bucket"


def test_sdk_deploys_predicts_and_tears_down(server: LiveServer, sdk_python: Path) -> None:
    name = unique("sdk-iris")
    key = f"{name}/model.tar.gz"
    path = server.data_dir / "objects" / BUCKET / key  # the embedded object store's layout
    path.parent.mkdir(parents=True)
    path.write_bytes(build_archive())
    done = subprocess.run(
        [str(sdk_python), str(FLOW), server.url, f"s3://{BUCKET}/{key}", name],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next((x for x in done.stdout.splitlines() if x.startswith("SDKFLOW ")), None)
    assert line is not None, done.stdout[-3000:]
    out = json.loads(line.removeprefix("SDKFLOW "))
    assert out["json"] == {"predictions": ["setosa", "virginica"]}
    assert out["csv"] == {"predictions": ["setosa"]}
    assert out["error"] == "ModelError"  # the demo's input_fn refuses a dict: a 424
    assert out["endpoint_status"] == "InService"
    assert out["left"] == {"configs": [], "models": []}
