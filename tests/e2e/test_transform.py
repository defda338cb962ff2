"""Batch transform: real jobs over real files, on real instances of the fixture models."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from modelhost.jobs.records_io import recordio_record, tfrecord_record
from modelhost.storage.local import LocalObjectStore
from tests.fixtures.server import LiveServer, unique
from tests.fixtures.transform import (
    FINAL,
    job_request,
    make_model,
    outputs,
    run_job,
    source_of,
    wait_job,
)

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


def test_line_multi_record_keeps_order_across_files_and_instances(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "d1").mkdir(parents=True)
    big = b"".join(b"%d,%d\n" % (i, i * i) for i in range(60_000))  # ~1 MB: several batches
    (src / "d1" / "big.csv").write_bytes(big)
    (src / "small.csv").write_bytes(b"1,2\n3,4\n")
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        f"file://{src}/",
        f"file://{out}",
        TransformInput={"ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"AssembleWith": "Line", "Accept": "text/csv"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
        MaxConcurrentTransforms=3,
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 2},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {"d1/big.csv.out": big, "small.csv.out": b"1,2\n3,4\n"}
    # Two instances ran it, one log each, and both were stopped before the job completed.
    logs = list(
        (server.data_dir / "logs" / "_transform-jobs" / req["TransformJobName"]).glob("*.log")
    )
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        pid = int(re.search(r"\(pid (\d+)\)", text).group(1))  # type: ignore[union-attr]
        assert text.rstrip().endswith("stopped")
        assert not _alive(pid)
    assert desc["TransformStartTime"] <= desc["TransformEndTime"]
    assert desc["BatchStrategy"] == "MultiRecord"
    assert desc["TransformInput"]["SplitType"] == "Line"


def test_single_record_gzip_with_line_assembly(server: LiveServer, sm: Any, tmp_path: Path) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "requests.log"
    src.mkdir()
    (src / "a.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n\n{"a": 3}\n'))
    model = make_model(sm, "batchlog", {"BATCHLOG_FILE": str(log)})
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={
            "ContentType": "application/json",
            "SplitType": "Line",
            "CompressionType": "Gzip",
        },
        TransformOutput={"AssembleWith": "Line", "Accept": "application/json"},
        BatchStrategy="SingleRecord",
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {"a.jsonl.gz.out": b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'}
    lines = log.read_text().splitlines()
    assert sorted(lines) == [
        f'{{"a": {i}}}|application/json|application/json|true' for i in (1, 2, 3)
    ]


@pytest.mark.parametrize("split", ["RecordIO", "TFRecord", "None"])
def test_binary_splits_and_whole_objects(
    server: LiveServer, sm: Any, tmp_path: Path, split: str
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    frame = {"RecordIO": recordio_record, "TFRecord": tfrecord_record}.get(split, lambda b: b)
    data = b"".join(frame(b"record %d" % i) for i in range(50))
    (src / "data.bin").write_bytes(data)
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={"ContentType": "application/octet-stream", "SplitType": split},
        BatchStrategy="MultiRecord" if split == "TFRecord" else "SingleRecord",
        MaxPayloadInMB=1,
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {"data.bin.out": data}


def test_manifest_over_the_platform_store(server: LiveServer, sm: Any, tmp_path: Path) -> None:
    store = LocalObjectStore(server.data_dir / "objects")
    bucket = "transform-in"
    store.ensure_bucket(bucket)
    store.put_bytes(bucket, "data/one.csv", b"1\n2\n")
    store.put_bytes(bucket, "data/two.csv", b"3\n")
    store.put_bytes(bucket, "data/skipped.csv", b"9\n")
    manifest = [{"prefix": f"s3://{bucket}/data/"}, "one.csv", "two.csv"]
    store.put_bytes(bucket, "m.json", json.dumps(manifest).encode())
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        f"s3://{bucket}/m.json",
        f"s3://{bucket}/results/",
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{bucket}/m.json"}
            },
            "SplitType": "Line",
            "ContentType": "text/csv",
        },
        TransformOutput={"AssembleWith": "Line"},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    keys = sorted(o.key for o in store.list(bucket, "results/"))
    assert keys == ["results/one.csv.out", "results/two.csv.out"]
    assert store.open_read(bucket, "results/one.csv.out").read() == b"1\n2\n"


def test_a_failing_file_fails_the_job_and_only_itself(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "requests.log"
    src.mkdir()
    (src / "good.csv").write_bytes(b"1\n2\n")
    (src / "bad.csv").write_bytes(b"1\nplease fail\n2\n")
    (src / "huge.csv").write_bytes(b"x" * (1024 * 1024 + 10) + b"\n")
    model = make_model(sm, "batchlog", {"BATCHLOG_FILE": str(log)})
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line", "ContentType": "text/csv"},
        TransformOutput={"AssembleWith": "Line"},
        BatchStrategy="SingleRecord",
        MaxPayloadInMB=1,
        ModelClientConfig={"InvocationsMaxRetries": 2, "InvocationsTimeoutInSeconds": 30},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert str(src / "bad.csv") in reason
    assert "the model answered 500" in reason
    assert "after 3 attempts" in reason
    assert "1 more input file(s) failed" in reason
    assert outputs(out) == {"good.csv.out": b"1\n2\n"}
    # the failing record was sent once and retried twice
    assert log.read_text().count("please fail|") == 3


def test_validation_errors(server: LiveServer, sm: Any, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n")
    model = make_model(sm, "echo")

    def error(**changes: Any) -> str:
        req = job_request(unique("tj"), model, str(src), str(tmp_path / "out"))
        req.update(changes)
        with pytest.raises(sm.exceptions.ClientError) as info:
            sm.create_transform_job(**req)
        err = info.value.response["Error"]
        return f"{err['Code']}: {err['Message']}"

    assert error(ModelName="no-such-model") == (
        "ValidationException: Could not find model "
        '"arn:aws:sagemaker:us-east-1:123456789012:model/no-such-model".'
    )
    missing = f"file://{tmp_path}/nothing/"
    msg = error(TransformInput={"DataSource": source_of(missing)})
    assert msg.startswith(f'ValidationException: No S3 objects found under S3 URL "{missing}"')
    assert "MaxConcurrentTransforms * MaxPayloadInMB must not exceed 100" in error(
        MaxConcurrentTransforms=20, MaxPayloadInMB=6
    )
    assert "less than or equal to 100" in error(MaxPayloadInMB=101)
    assert "failed to satisfy constraint: Member must satisfy enum value set" in error(
        BatchStrategy="Everything"
    )
    assert "must be an s3:// URL" in error(
        TransformOutput={"S3OutputPath": "https://example.com/out"}
    )
    name = unique("tj")
    sm.create_transform_job(**job_request(name, model, str(src), str(tmp_path / "out2")))
    wait_job(sm, name, FINAL)
    dup = job_request(name, model, str(src), str(tmp_path / "out3"))
    with pytest.raises(sm.exceptions.ResourceInUse, match="must be unique"):
        sm.create_transform_job(**dup)
    with pytest.raises(sm.exceptions.ClientError, match="Could not find transform job"):
        sm.describe_transform_job(TransformJobName=unique("none"))
    with pytest.raises(sm.exceptions.ClientError, match="cannot be stopped"):
        sm.stop_transform_job(TransformJobName=name)


BYO_SERVER = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PARAMS = {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}


class Handler(BaseHTTPRequestHandler):
    def _reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/execution-parameters":
            self._reply(json.dumps(PARAMS).encode())
        else:
            self._reply(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        env = ",".join(f"{k}={os.environ.get(k)}" for k in sorted(os.environ)
                       if k.startswith("SAGEMAKER_") and k != "SAGEMAKER_BIND_TO_PORT")
        self._reply(b"%d records; %s" % (body.count(b"\\n"), env.encode()))

    def log_message(self, *args):
        print(*args, file=sys.stderr, flush=True)


port = int(os.environ["SAGEMAKER_BIND_TO_PORT"])
host = os.environ.get("MODELHOST_BIND_HOST", "127.0.0.1")
ThreadingHTTPServer((host, port), Handler).serve_forever()
"""


def test_execution_parameters_and_batch_environment_of_a_byo_server(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    exe = tmp_path / "byo-batch"
    exe.write_text(f"#!{sys.executable}\n{BYO_SERVER}")
    exe.chmod(0o755)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n2\n3\n")
    name = unique("byo-batch")
    sm.create_model(ModelName=name, PrimaryContainer={"Image": str(exe)})
    job = unique("tj")
    req = job_request(
        job,
        name,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line"},
        Environment={"SAGEMAKER_EXTRA": "yes"},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    # No BatchStrategy in the request: the container's MULTI_RECORD applies (one request).
    assert outputs(out) == {"a.csv.out": b"3 records; SAGEMAKER_BATCH=true,SAGEMAKER_EXTRA=yes"}
    # the instance's log is where endpoint logs go, one per job instance
    (log,) = (server.data_dir / "logs" / "_transform-jobs" / job).glob("*.log")
    assert "POST /invocations" in log.read_text()
    # ... and CloudWatch Logs serves it as SageMaker names it
    group = "/aws/sagemaker/TransformJobs"
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert f"{job}/{log.stem}" in {s["logStreamName"] for s in streams}
    events = logs.get_log_events(
        logGroupName=group, logStreamName=f"{job}/{log.stem}", startFromHead=True
    )["events"]
    assert any("POST /invocations" in e["message"] for e in events)
    endpoint_groups = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/Endpoints/")
    assert not any("_transform" in g["logGroupName"] for g in endpoint_groups["logGroups"])


def test_csv_input_filter_join_and_output_filter(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "rows.csv").write_bytes(b"a,1,2\nb,3,4\nc,5,6\n")
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line", "ContentType": "text/csv"},
        TransformOutput={"AssembleWith": "Line", "Accept": "text/csv"},
        BatchStrategy="MultiRecord",
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {"rows.csv.out": b"a,2\nb,4\nc,6\n"}
    assert desc["DataProcessing"]["JoinSource"] == "Input"


def test_json_input_filter_join_and_output_filter(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "x.jsonl").write_bytes(
        b'{"id": "a", "features": [1, 2]}\n{"id": "b", "features": [3]}\n'
    )
    model = make_model(sm, "sum")
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line", "ContentType": "application/json"},
        TransformOutput={"AssembleWith": "Line", "Accept": "application/json"},
        BatchStrategy="SingleRecord",
        DataProcessing={
            "InputFilter": "$.features",
            "JoinSource": "Input",
            "OutputFilter": "$['id','SageMakerOutput']",
        },
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {
        "x.jsonl.out": b'{"id":"a","SageMakerOutput":{"sum":3.0}}\n'
        b'{"id":"b","SageMakerOutput":{"sum":3.0}}\n'
    }


def test_data_processing_needs_line_records_and_valid_filters(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n")
    model = make_model(sm, "echo")
    for tin, processing, message in [
        ({}, {"JoinSource": "Input"}, "needs SplitType Line"),
        ({"SplitType": "Line"}, {"InputFilter": "$[["}, "InputFilter: '$[[' is not a JSONPath"),
    ]:
        req = job_request(
            unique("tj"),
            model,
            str(src),
            str(tmp_path / "out"),
            TransformInput=tin,
            DataProcessing=processing,
        )
        with pytest.raises(sm.exceptions.ClientError, match=re.escape(message)):
            sm.create_transform_job(**req)


def test_max_payload_zero_streams_whole_objects(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    big = b"".join(b"row %d\n" % i for i in range(400_000))  # ~4.5 MB, no newline at the end
    (src / "big.txt").write_bytes(big[:-1])
    (src / "small.txt").write_bytes(b"a\nb\n")
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line", "ContentType": "text/plain"},
        TransformOutput={"AssembleWith": "Line"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=0,
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {"big.txt.out": big, "small.txt.out": b"a\nb\n"}
    failing = make_model(sm, "error")
    req = job_request(
        unique("tj"),
        failing,
        str(src),
        str(tmp_path / "out2"),
        TransformInput={"ContentType": "text/csv"},
        MaxPayloadInMB=0,
        ModelClientConfig={"InvocationsMaxRetries": 1},
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Failed"
    assert "the model answered 500" in desc["FailureReason"]
    assert "after 2 attempts" in desc["FailureReason"]


def test_instances_that_cannot_start_fail_the_job(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n")
    model = make_model(sm, "badimport")
    name = unique("tj")
    desc = run_job(sm, job_request(name, model, str(src), str(tmp_path / "out")))
    assert desc["TransformJobStatus"] == "Failed"
    assert desc["FailureReason"].startswith("Could not start the model's instances:")
    assert not (tmp_path / "out").exists()
    logs = list((server.data_dir / "logs" / "_transform-jobs" / name).glob("*.log"))
    assert logs  # the instance's log, with its traceback, is kept


def test_many_multi_batch_files_share_one_instance(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    files = {
        f"f{n}.csv": b"".join(b"%d,%d\n" % (n, i) for i in range(120_000 + n * 999))
        for n in range(5)
    }  # about 1.1 MB each: two batches or more
    for name, data in files.items():
        (src / name).write_bytes(data)
    model = make_model(sm, "echo")
    req = job_request(
        unique("tj"),
        model,
        str(src),
        str(out),
        TransformInput={"SplitType": "Line", "ContentType": "text/csv"},
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
        MaxConcurrentTransforms=2,
    )
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert outputs(out) == {f"{name}.out": data for name, data in files.items()}


def test_an_output_that_cannot_be_written_fails_its_file(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n")
    (src / "b.csv").write_bytes(b"2\n")
    (out / "a.csv.out").mkdir(parents=True)  # in the way of a's output
    model = make_model(sm, "echo")
    req = job_request(unique("tj"), model, str(src), str(out), TransformInput={"SplitType": "Line"})
    desc = run_job(sm, req)
    assert desc["TransformJobStatus"] == "Failed"
    assert "could not write its output" in desc["FailureReason"]
    assert str(src / "a.csv") in desc["FailureReason"]
    assert (out / "b.csv.out").read_bytes() == b"2"
    assert [p.name for p in out.iterdir() if p.name.startswith(".mh-tmp-")] == []
