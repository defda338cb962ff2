"""The transform job API from boto3 and the AWS CLI: list (filters, sort, paging), tags on the
job's ARN, the waiter, and the CLI's commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import LiveServer, aws_env, unique
from tests.fixtures.transform import FINAL, job_request, make_model, wait_job

pytestmark = pytest.mark.api

AWS = Path(sys.executable).parent / "aws"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n2\n")
    return src


def test_list_filters_sorts_and_pages(
    server: LiveServer, sm: Any, inputs: Path, tmp_path: Path
) -> None:
    model = make_model(sm, "echo")
    tag = unique("lst")
    names = [f"{tag}-{c}" for c in "bac"]
    for n in names:
        sm.create_transform_job(**job_request(n, model, str(inputs), str(tmp_path / n)))
    for n in names:
        wait_job(sm, n, FINAL)
    listed = sm.list_transform_jobs(NameContains=tag, SortBy="Name", SortOrder="Ascending")
    summaries = listed["TransformJobSummaries"]
    assert [s["TransformJobName"] for s in summaries] == sorted(names)
    assert {s["TransformJobStatus"] for s in summaries} == {"Completed"}
    assert all("TransformEndTime" in s and "LastModifiedTime" in s for s in summaries)
    by_time = sm.list_transform_jobs(NameContains=tag)["TransformJobSummaries"]
    assert [s["TransformJobName"] for s in by_time] == names[::-1]  # newest first
    first = sm.list_transform_jobs(NameContains=tag, MaxResults=2, SortBy="Name")
    second = sm.list_transform_jobs(
        NameContains=tag, MaxResults=2, SortBy="Name", NextToken=first["NextToken"]
    )
    got = [s["TransformJobName"] for s in first["TransformJobSummaries"]]
    got += [s["TransformJobName"] for s in second["TransformJobSummaries"]]
    assert got == sorted(names, reverse=True)
    assert "NextToken" not in second
    failed = sm.list_transform_jobs(NameContains=tag, StatusEquals="Failed")
    assert failed["TransformJobSummaries"] == []
    pages = sm.get_paginator("list_transform_jobs").paginate(
        NameContains=tag, PaginationConfig={"PageSize": 1}
    )
    assert sum(len(p["TransformJobSummaries"]) for p in pages) == 3


def test_tags_and_the_waiter(server: LiveServer, sm: Any, inputs: Path, tmp_path: Path) -> None:
    model = make_model(sm, "echo")
    name = unique("tags")
    req = job_request(name, model, str(inputs), str(tmp_path / "out"))
    arn = sm.create_transform_job(**req, Tags=[{"Key": "team", "Value": "ml"}])["TransformJobArn"]
    assert arn == f"arn:aws:sagemaker:us-east-1:123456789012:transform-job/{name.lower()}"
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "stage", "Value": "test"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "stage", "Value": "test"},
        {"Key": "team", "Value": "ml"},
    ]
    sm.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    desc = sm.describe_transform_job(TransformJobName=name)
    assert desc["TransformJobStatus"] == "Completed"
    assert desc["TransformJobArn"] == arn
    assert desc["ModelName"] == model
    assert desc["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert (tmp_path / "out" / "a.csv.out").read_bytes() == b"1\n2\n"


def test_the_waiter_reports_a_failed_job(
    server: LiveServer, sm: Any, inputs: Path, tmp_path: Path
) -> None:
    name = unique("wf")
    model = make_model(sm, "error")
    req = job_request(
        name,
        model,
        str(inputs),
        str(tmp_path / "out"),
        TransformInput={"ContentType": "text/csv"},
        ModelClientConfig={"InvocationsMaxRetries": 0},
    )
    sm.create_transform_job(**req)
    waiter = sm.get_waiter("transform_job_completed_or_stopped")
    with pytest.raises(Exception, match="Waiter encountered a terminal failure state"):
        waiter.wait(TransformJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    reason = sm.describe_transform_job(TransformJobName=name)["FailureReason"]
    assert "a.csv" in reason and "boom from predict_fn" in reason
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.out"))


def test_the_aws_cli(server: LiveServer, sm: Any, inputs: Path, tmp_path: Path) -> None:
    model = make_model(sm, "echo")
    name = unique("cli")
    env = aws_env(tmp_path) | {"AWS_MAX_ATTEMPTS": "1"}

    def aws(*args: str) -> Any:
        out = subprocess.run(
            [str(AWS), "--endpoint-url", server.url, "sagemaker", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    aws(
        "create-transform-job",
        "--transform-job-name",
        name,
        "--model-name",
        model,
        "--transform-input",
        json.dumps(
            {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(inputs)}},
                "SplitType": "Line",
            }
        ),
        "--transform-output",
        json.dumps({"S3OutputPath": f"file://{tmp_path}/out", "AssembleWith": "Line"}),
        "--transform-resources",
        "InstanceType=ml.m5.large,InstanceCount=1",
    )
    wait_job(sm, name, FINAL)
    desc = aws("describe-transform-job", "--transform-job-name", name)
    assert desc["TransformJobStatus"] == "Completed"
    listed = aws("list-transform-jobs", "--name-contains", name)
    assert [s["TransformJobName"] for s in listed["TransformJobSummaries"]] == [name]
    assert (tmp_path / "out" / "a.csv.out").read_bytes() == b"1\n2\n"
