"""Serial inference pipelines behind batch transform and asynchronous inference: every record
(or request) goes through every container in order (the sum model, then the C echo server,
which reverses what it gets), and a failure names the container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.async_helpers import local_path, wait_file
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, unique, wait_status
from tests.fixtures.transform import job_request, outputs, run_job

pytestmark = pytest.mark.e2e


def _pipeline_model(sm: Any, echo: Path) -> str:
    """sum (JSON list -> {"sum": x}) then the C echo server (reverses the bytes)."""
    name = unique("pipe-model")
    sm.create_model(
        ModelName=name,
        Containers=[
            {"ModelDataUrl": str(FIXTURE_MODELS / "sum")},
            {"ModelDataUrl": str(FIXTURE_MODELS / "echo"), "Image": str(echo)},
        ],
    )
    return name


def _expected(values: list[float]) -> bytes:
    return json.dumps({"sum": float(sum(values))}).encode()[::-1]


def test_batch_transform_runs_each_record_through_the_pipeline(
    server: LiveServer, sm: Any, echo_server_binary: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rows = [[1, 2], [3, 4, 5], [10]]
    (src / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    req = job_request(
        unique("tj-pipe"),
        _pipeline_model(sm, echo_server_binary),
        f"file://{src}/",
        f"file://{out}",
        TransformInput={"ContentType": "application/json", "SplitType": "Line"},
        TransformOutput={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    want = b"".join(_expected([float(v) for v in r]) + b"\n" for r in rows)
    assert outputs(out) == {"rows.jsonl.out": want}
    # One log per container of the job's instance.
    logs = server.data_dir / "logs" / "_transform-jobs" / req["TransformJobName"]
    assert {p.name for p in logs.glob("*/*.log")} == {"container-1.log", "container-2.log"}


def test_batch_transform_failure_names_the_container(
    sm: Any, echo_server_binary: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "bad.txt").write_text("not json\n")
    req = job_request(
        unique("tj-pipe-bad"),
        _pipeline_model(sm, echo_server_binary),
        f"file://{src}/",
        f"file://{tmp_path / 'out'}",
        TransformInput={"ContentType": "text/plain", "SplitType": "Line"},
        BatchStrategy="SingleRecord",
        ModelClientConfig={"InvocationsMaxRetries": 0},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Failed"
    assert "container container-1 answered" in desc["FailureReason"]


def test_async_inference_through_the_pipeline(
    server: LiveServer, sm: Any, rt: Any, echo_server_binary: Path, tmp_path: Path
) -> None:
    name = unique("async-pipe")
    model = _pipeline_model(sm, echo_server_binary)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": f"file://{tmp_path}/out",
                "S3FailurePath": f"file://{tmp_path}/failed",
            }
        },
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    try:
        desc = wait_status(sm, name, {"InService", "Failed"}, timeout=120)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        good, bad = tmp_path / "good.json", tmp_path / "bad.txt"
        good.write_text("[1, 2, 3.5]")
        bad.write_text("oops")
        ok = rt.invoke_endpoint_async(
            EndpointName=name, InputLocation=f"file://{good}", ContentType="application/json"
        )
        assert wait_file(local_path(ok["OutputLocation"])) == _expected([1, 2, 3.5])
        failed = rt.invoke_endpoint_async(
            EndpointName=name, InputLocation=f"file://{bad}", ContentType="text/plain"
        )
        reason = wait_file(local_path(failed["FailureLocation"])).decode()
        assert "from container-1 with message" in reason
    finally:
        sm.delete_endpoint(EndpointName=name)
