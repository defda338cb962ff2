"""Model data from a real S3-compatible server (SeaweedFS): ModelDataUrl tar.gz, ModelDataSource
S3Prefix (uncompressed), a clear CreateModel error for a missing key, and the artifact cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.seaweed import S3Server
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, pack, unique

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3_modelhost(own_server: LiveServer, s3_server: S3Server) -> LiveServer:
    own_server.env.update(s3_server.env())
    own_server.env["MODELHOST_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    return own_server.start()


def test_model_tar_gz_from_s3(
    s3_modelhost: LiveServer, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3 = s3_server.client()
    archive = pack(FIXTURE_MODELS / "sum", tmp_path / "model.tar.gz")
    s3.upload_file(str(archive), s3_bucket, "sum/model.tar.gz")
    sm, rt = s3_modelhost.client("sagemaker"), s3_modelhost.client("sagemaker-runtime")
    name = unique("s3sum")
    desc = deploy(sm, name, f"s3://{s3_bucket}/sum/model.tar.gz")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    out = rt.invoke_endpoint(EndpointName=name, Body=b"[1, 2, 3.5]", ContentType="application/json")
    assert out["Body"].read() == b'{"sum": 6.5}'
    # A second endpoint on the same model data reuses the extracted artifact.
    entries = list((s3_modelhost.data_dir / "cache" / "models").iterdir())
    name2 = unique("s3sum")
    assert deploy(sm, name2, f"s3://{s3_bucket}/sum/model.tar.gz")["EndpointStatus"] == "InService"
    assert list((s3_modelhost.data_dir / "cache" / "models").iterdir()) == entries


def test_model_data_source_s3_prefix(
    s3_modelhost: LiveServer, s3_server: S3Server, s3_bucket: str
) -> None:
    s3 = s3_server.client()
    source = FIXTURE_MODELS / "echo"
    for path in source.rglob("*.py"):
        s3.upload_file(str(path), s3_bucket, f"echo/{path.relative_to(source).as_posix()}")
    sm, rt = s3_modelhost.client("sagemaker"), s3_modelhost.client("sagemaker-runtime")
    name = unique("s3prefix")
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "ModelDataSource": {
                "S3DataSource": {
                    "S3Uri": f"s3://{s3_bucket}/echo/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "None",
                }
            }
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.c5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    assert rt.invoke_endpoint(EndpointName=name, Body=b"from s3")["Body"].read() == b"from s3"


def test_missing_s3_key_is_refused_at_create_model(
    s3_modelhost: LiveServer, s3_bucket: str
) -> None:
    sm: Any = s3_modelhost.client("sagemaker")
    name = unique("s3missing")
    with pytest.raises(sm.exceptions.ClientError) as info:
        sm.create_model(
            ModelName=name,
            PrimaryContainer={"ModelDataUrl": f"s3://{s3_bucket}/nope/model.tar.gz"},
        )
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationException"
    assert f"Could not access model data at s3://{s3_bucket}/nope/model.tar.gz" in err["Message"]
    assert sm.list_models(NameContains=name)["Models"] == []
