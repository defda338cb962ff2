"""Asynchronous inference loses nothing: kill -9 of the server with requests queued and in
flight, an instance killed mid-request; and results on a real S3-compatible server, polled the
way the SageMaker SDK polls them."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.async_helpers import deploy_async, wait_file
from tests.e2e.procs import instance_pids
from tests.fixtures.seaweed import S3Server
from tests.fixtures.server import LiveServer, unique
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.e2e


def _poll(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    wait_for(check, timeout, what, interval=0.1)


def _rows(data_dir: Path) -> dict[str, tuple[str, int]]:
    """inference id -> (status, attempts), read from the server's state store."""
    with sqlite3.connect(data_dir / "state.db") as db:
        rows = db.execute("SELECT inference_id, status, attempts FROM async_requests").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _enqueue(rt: Any, name: str, inputs: Path, ids: list[str], body: bytes) -> None:
    inputs.mkdir(parents=True, exist_ok=True)
    for inference_id in ids:
        (inputs / inference_id).write_bytes(body)
        rt.invoke_endpoint_async(
            EndpointName=name, InputLocation=str(inputs / inference_id), InferenceId=inference_id
        )


def test_kill_9_loses_nothing_and_ends_each_request_once(
    own_server: LiveServer, tmp_path: Path
) -> None:
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    name = unique("crash")
    out = tmp_path / "out"
    deploy_async(sm, name, "slow", f"file://{out}", max_concurrent=1)
    ids = [f"req-{i}" for i in range(5)]
    _enqueue(rt, name, tmp_path / "in", ids, b"1")
    wait_file(out / "req-0.out")  # one ended; the next is in flight, the rest are queued
    own_server.stop(signal.SIGKILL)
    before = _rows(own_server.data_dir)
    # Its output is written before the queue records the end: a kill between the two leaves it
    # running, and the restart ends it from the output, without running it again.
    assert before["req-0"][0] in ("done", "running")
    assert {status for status, _ in before.values()} <= {"done", "running", "queued"}
    assert any(status == "queued" for status, _ in before.values())
    _poll(lambda: instance_pids(own_server.data_dir) == [], "the instances to go with it")

    own_server.start()
    for inference_id in ids:
        assert wait_file(out / f"{inference_id}.out", timeout=90) == b"slept 1.0"
    _poll(
        lambda: all(s == "done" for s, _ in _rows(own_server.data_dir).values()),
        "every request to end",
    )
    after = _rows(own_server.data_dir)
    assert set(after) == set(ids)
    if before["req-0"][0] == "done":
        assert after["req-0"] == before["req-0"]  # ended before the crash: not run again
    assert not list(out.glob("*-error.out"))
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.out" for i in ids)
    # Each ran once, but for the one in flight at the kill (no output yet): it ran again.
    logs = own_server.data_dir / "logs" / name
    runs = sum(p.read_bytes().count(b"slow: sleeping") for p in logs.rglob("*.log"))
    assert len(ids) <= runs <= len(ids) + 1


def test_instance_killed_mid_request_is_retried_on_its_replacement(
    own_server: LiveServer, tmp_path: Path
) -> None:
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    name = unique("heal-async")
    out = tmp_path / "out"
    deploy_async(sm, name, "slow", f"file://{out}", max_concurrent=1)
    [pid] = instance_pids(own_server.data_dir)
    logs = own_server.data_dir / "logs" / name

    def sleeping() -> bool:
        return any(b"slow: sleeping" in p.read_bytes() for p in logs.rglob("*.log"))

    _enqueue(rt, name, tmp_path / "in", ["victim"], b"3")
    _poll(sleeping, "the request to reach the instance")
    os.kill(pid, signal.SIGKILL)
    assert wait_file(out / "victim.out", timeout=90) == b"slept 3.0"
    assert _rows(own_server.data_dir)["victim"] == ("done", 2)
    assert instance_pids(own_server.data_dir) != [pid]


def test_results_on_s3_polled_like_the_sdk(
    own_server: LiveServer, s3_server: S3Server, s3_bucket: str
) -> None:
    own_server.env.update(s3_server.env())
    own_server.env["MODELHOST_S3_ENDPOINT_URL"] = s3_server.endpoint_url
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    s3 = s3_server.client()
    name = unique("s3-async")
    deploy_async(sm, name, "echo", f"s3://{s3_bucket}/async/out", f"s3://{s3_bucket}/async/failed")
    payload = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket=s3_bucket, Key="async/in/big.bin", Body=payload)
    ok = rt.invoke_endpoint_async(
        EndpointName=name,
        InputLocation=f"s3://{s3_bucket}/async/in/big.bin",
        ContentType="application/octet-stream",
    )
    bad = rt.invoke_endpoint_async(
        EndpointName=name, InputLocation=f"s3://{s3_bucket}/async/in/missing.bin"
    )
    assert ok["OutputLocation"] == f"s3://{s3_bucket}/async/out/{ok['InferenceId']}.out"

    def get(location: str) -> bytes | None:
        """The SDK's polling: NoSuchKey means not yet; once there, the object is whole."""
        key = location.removeprefix(f"s3://{s3_bucket}/")
        try:
            body: bytes = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
            return body
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey"
            return None

    got: dict[str, bytes] = {}

    def ended() -> bool:
        for key, location in (("ok", ok["OutputLocation"]), ("bad", bad["FailureLocation"])):
            if key not in got and (content := get(location)) is not None:
                got[key] = content
        return len(got) == 2

    _poll(ended, "both results")
    assert got["ok"] == payload
    assert b"does not exist" in got["bad"] or b"NoSuchKey" in got["bad"]
    assert get(ok["FailureLocation"]) is None
    assert get(bad["OutputLocation"]) is None
