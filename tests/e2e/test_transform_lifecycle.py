"""Transform jobs over time: a stop mid-job keeps nothing, a server restart mid-job resumes
without redoing finished files, and a job over a real S3-compatible server."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import waiting
from tests.fixtures.seaweed import S3Server
from tests.fixtures.server import LiveServer, unique
from tests.fixtures.transform import FINAL, job_request, make_model, outputs, run_job, wait_job

pytestmark = pytest.mark.e2e


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    return waiting.wait_for(check, timeout, what)


def slow_lines(name: str, count: int) -> bytes:
    return b"".join(b"slow %s %d\n" % (name.encode(), i) for i in range(count))


def test_stop_mid_job_keeps_no_output(server: LiveServer, sm: Any, tmp_path: Path) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "requests.log"
    src.mkdir()
    (src / "a-quick.csv").write_bytes(b"1\n")
    (src / "b-slow.csv").write_bytes(slow_lines("b", 300))  # 60 s of work
    model = make_model(sm, "batchlog", {"BATCHLOG_FILE": str(log)})
    name = unique("tj")
    req = job_request(
        name,
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line"},
        BatchStrategy="SingleRecord",
        MaxConcurrentTransforms=2,
    )
    sm.create_transform_job(**req)
    wait_for(lambda: (out / "a-quick.csv.out").exists(), "the quick file's output")
    wait_for(lambda: log.exists() and "slow b 2|" in log.read_text(), "the slow file to start")
    assert sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"] == "InProgress"
    sm.stop_transform_job(TransformJobName=name)
    status = sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"]
    assert status in {"Stopping", "Stopped"}
    sm.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    desc = sm.describe_transform_job(TransformJobName=name)
    assert desc["TransformJobStatus"] == "Stopped"
    assert "TransformEndTime" in desc
    assert outputs(out) == {}  # neither the finished file's output nor a partial one
    # Stopping again is refused, as SageMaker does for a job that has ended.
    with pytest.raises(sm.exceptions.ClientError, match="cannot be stopped"):
        sm.stop_transform_job(TransformJobName=name)


def test_restart_mid_job_resumes_without_redoing_finished_files(
    own_server: LiveServer, tmp_path: Path
) -> None:
    server = own_server.start()
    sm = server.client("sagemaker")
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "requests.log"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.csv").write_bytes(slow_lines(f"f{i}", 4))  # 0.8 s a file
    model = make_model(sm, "batchlog", {"BATCHLOG_FILE": str(log)})
    name = unique("tj")
    req = job_request(
        name,
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line"},
        TransformOutput={"AssembleWith": "Line"},
        MaxPayloadInMB=1,
    )
    sm.create_transform_job(**req)
    wait_for(lambda: (out / "f1.csv.out").exists(), "two files done")
    server.stop()
    finished = sorted(outputs(out))
    assert "f5.csv.out" not in finished
    server.start()
    sm = server.client("sagemaker")
    desc = wait_job(sm, name, FINAL)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert sorted(outputs(out)) == [f"f{i}.csv.out" for i in range(6)]
    assert outputs(out)["f3.csv.out"] == slow_lines("f3", 4)
    sent = log.read_text()
    for done in finished:
        stem = done.removesuffix(".csv.out")
        for i in range(4):
            assert sent.count(f"slow {stem} {i}|") == 1, (done, sent)
    # nothing left running: the instances of both runs are gone with their server
    assert not list(Path(server.data_dir / "jobs").glob("*/*"))


def test_a_killed_server_resumes_the_job_and_cleans_up(
    own_server: LiveServer, tmp_path: Path
) -> None:
    server = own_server.start()
    sm = server.client("sagemaker")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.csv").write_bytes(slow_lines(f"f{i}", 4))
    model = make_model(sm, "batchlog")
    name = unique("tj")
    req = job_request(
        name,
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line"},
        TransformOutput={"AssembleWith": "Line"},
    )
    sm.create_transform_job(**req)
    wait_for(lambda: (out / "f0.csv.out").exists(), "one file done")
    server.stop(signal.SIGKILL)
    server.start()
    desc = wait_job(server.client("sagemaker"), name, FINAL)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    # every output whole, and no temporary file of the killed run left behind
    assert outputs(out) == {f"f{i}.csv.out": slow_lines(f"f{i}", 4) for i in range(4)}


def test_job_over_an_s3_compatible_server(
    own_server: LiveServer, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    own_server.env.update(s3_server.env())
    own_server.env["MODELHOST_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    server = own_server.start()
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="batch/in/d1/x.csv", Body=b"1,2\n3,4\n")
    s3.put_object(Bucket=s3_bucket, Key="batch/in/y.csv", Body=b"5,6\n")
    sm = server.client("sagemaker")
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        f"s3://{s3_bucket}/batch/in/",
        f"s3://{s3_bucket}/batch/out",
        TransformInput={"SplitType": "Line", "ContentType": "text/csv"},
        TransformOutput={"AssembleWith": "Line"},
        BatchStrategy="MultiRecord",
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="batch/out/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == [
        "batch/out/d1/x.csv.out",
        "batch/out/y.csv.out",
    ]
    body = s3.get_object(Bucket=s3_bucket, Key="batch/out/d1/x.csv.out")["Body"].read()
    assert body == b"1,2\n3,4\n"


def test_stop_right_after_create(server: LiveServer, sm: Any, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n")
    model = make_model(sm, "echo")
    name = unique("tj")
    sm.create_transform_job(**job_request(name, model, str(src), str(out)))
    sm.stop_transform_job(TransformJobName=name)
    desc = wait_job(sm, name, FINAL)
    assert desc["TransformJobStatus"] == "Stopped"
    assert not out.exists() or outputs(out) == {}
    listed = sm.list_transform_jobs(NameContains=name, StatusEquals="Stopped")
    assert [s["TransformJobName"] for s in listed["TransformJobSummaries"]] == [name]
