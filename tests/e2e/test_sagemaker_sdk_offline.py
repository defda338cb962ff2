"""The SageMaker Python SDK v2 against ``modelhost serve`` with its embedded S3 server and
nothing but the exported variables the banner prints: ``Session().default_bucket()``,
``upload_data``, and an ``SKLearnModel(entry_point=..., source_dir=...)`` deploy and predict
(the SDK uploads the code itself, asking for SSE-KMS)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelhost.sdkconfig import sdk_config_path
from modelhost.settings import Settings
from tests.e2e.test_sagemaker_sdk_framework import INFERENCE, model_archive
from tests.fixtures.server import LiveServer, unique

pytestmark = pytest.mark.e2e

FLOW = Path(__file__).resolve().parents[1] / "fixtures" / "sdk" / "offline_flow.py"


def test_sdk_runs_unchanged_with_the_exported_variables(
    own_server: LiveServer, sdk_python: Path, tmp_path: Path
) -> None:
    own_server.env["MODELHOST_EMBEDDED_S3"] = "true"
    own_server.start()
    s3 = (own_server.data_dir / "s3" / "endpoint").read_text().strip()
    config = sdk_config_path(Settings(data_dir=own_server.data_dir))
    name = unique("sdk-offline")
    (tmp_path / "model.tar.gz").write_bytes(model_archive(tmp_path))
    source = tmp_path / "src"
    source.mkdir()
    (source / "inference.py").write_text(INFERENCE)
    (tmp_path / "rows.csv").write_text("5.1,3.5,1.4,0.2\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),  # no ~/.aws, no ~/.config/sagemaker
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        # what `make run` prints
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER": own_server.url,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": own_server.url,
        "AWS_ENDPOINT_URL_STS": own_server.url,
        "AWS_ENDPOINT_URL_S3": s3,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
    }
    args = [str(tmp_path / "model.tar.gz"), str(source), str(tmp_path / "rows.csv"), name]
    done = subprocess.run(
        [str(sdk_python), str(FLOW), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:], own_server.log_tail())
    line = next((x for x in done.stdout.splitlines() if x.startswith("SDKFLOW ")), None)
    assert line is not None, done.stdout[-3000:]
    out = json.loads(line.removeprefix("SDKFLOW "))
    assert out["bucket"] == "sagemaker-us-east-1-123456789012"
    assert out["data_url"] == f"s3://{out['bucket']}/{name}/data/rows.csv"
    assert out["data"] == "5.1,3.5,1.4,0.2\n"
    assert out["caller"] == "123456789012"
    assert out["submit_directory"].startswith(f"s3://{out['bucket']}/")
    assert out["prediction"] == {"classes": [0, 2], "entry_point": "inference"}
