"""The embedded S3 server (SeaweedFS) of ``modelhost serve``: every port on loopback, the AWS
CLI's ``aws s3`` against it with any credentials, model data served from it, objects kept
across a restart, no SeaweedFS left behind (normal stop, SIGKILL of the server, a leftover from
an earlier server), and the old local store's objects moved in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from modelhost.demo import build_archive
from modelhost.storage.embedded import start_embedded_s3
from tests.fixtures.server import REGION, LiveServer, aws_env, deploy, unique

pytestmark = pytest.mark.e2e

AWS = Path(sys.executable).parent / "aws"
DEFAULT_BUCKET = "sagemaker-us-east-1-123456789012"
GONE_TIMEOUT_S = 15.0


def start_embedded(server: LiveServer) -> LiveServer:
    server.env["MODELHOST_EMBEDDED_S3"] = "true"
    return server.start()


def s3_url(server: LiveServer) -> str:
    return (server.data_dir / "s3" / "endpoint").read_text().strip()


def weed_pid(server: LiveServer) -> int:
    return int((server.data_dir / "s3" / "weed.pid").read_text())


def s3_client(url: str, key: str = "anything") -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key="whatever",
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child) counts as gone
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"SeaweedFS (pid {pid}) still running {GONE_TIMEOUT_S} s later")


def listening_addresses(pid: int) -> list[str]:
    out = subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, timeout=10, check=True)
    return [line.split()[3] for line in out.stdout.splitlines() if f"pid={pid}," in line]


def test_aws_cli_model_data_restart_and_stop(own_server: LiveServer, tmp_path: Path) -> None:
    start_embedded(own_server)
    pid = weed_pid(own_server)
    addresses = listening_addresses(pid)
    assert len(addresses) >= 8, addresses  # weed mini's master, volume, filer, s3, admin ...
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
    url = s3_url(own_server)
    # The relay listens where the API does (the plugin binds 127.0.0.1), and /modelhost/info
    # gives clients its URL.
    assert own_server.process is not None
    assert url.removeprefix("http://") in listening_addresses(own_server.process.pid)
    with urllib.request.urlopen(f"{own_server.url}/modelhost/info", timeout=10) as resp:
        assert json.load(resp)["S3EndpointUrl"] == url
    env = aws_env(tmp_path) | {"AWS_ENDPOINT_URL_S3": url, "AWS_ACCESS_KEY_ID": "anyone"}
    model = tmp_path / "model.tar.gz"
    model.write_bytes(build_archive())
    name = unique("s3-iris")

    def aws(*args: str) -> str:
        done = subprocess.run(
            [str(AWS), "s3", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert DEFAULT_BUCKET in aws("ls")  # created at start, as the SDK expects
    aws("cp", str(model), f"s3://{DEFAULT_BUCKET}/{name}/model.tar.gz")
    assert f"{name}/" in aws("ls", f"s3://{DEFAULT_BUCKET}/")

    sm = own_server.client("sagemaker")
    desc = deploy(sm, name, f"s3://{DEFAULT_BUCKET}/{name}/model.tar.gz")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    answer = own_server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=name, ContentType="application/json", Body="[[5.1, 3.5, 1.4, 0.2]]"
    )
    assert b"setosa" in answer["Body"].read()

    assert own_server.stop() == 0
    wait_gone(pid)
    assert not (own_server.data_dir / "s3" / "endpoint").exists()
    start_embedded(own_server)
    assert weed_pid(own_server) != pid
    kept = s3_client(s3_url(own_server)).get_object(
        Bucket=DEFAULT_BUCKET, Key=f"{name}/model.tar.gz"
    )
    assert kept["Body"].read() == model.read_bytes()


def test_sigkill_of_the_server_takes_seaweedfs_with_it(own_server: LiveServer) -> None:
    start_embedded(own_server)
    pid = weed_pid(own_server)
    assert alive(pid)
    own_server.stop(signal.SIGKILL)
    wait_gone(pid)  # PR_SET_PDEATHSIG


def test_next_start_stops_a_leftover_seaweedfs(own_server: LiveServer) -> None:
    # A SeaweedFS on the data directory that no server owns (as a server killed where no
    # PDEATHSIG exists would leave it): started here, then forgotten.
    leftover = start_embedded_s3(own_server.data_dir / "s3", [])
    leftover.front.stop()
    try:
        start_embedded(own_server)
        wait_gone(leftover.process.pid)
        assert weed_pid(own_server) != leftover.process.pid
    finally:
        if leftover.process.poll() is None:
            leftover.process.kill()
        leftover.process.wait(10)


def test_old_local_store_objects_move_into_the_embedded_server(own_server: LiveServer) -> None:
    old = own_server.data_dir / "objects" / "legacy-bucket" / "some" / "model.tar.gz"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"payload from before")
    start_embedded(own_server)
    got = s3_client(s3_url(own_server)).get_object(Bucket="legacy-bucket", Key="some/model.tar.gz")
    assert got["Body"].read() == b"payload from before"
    assert not old.exists()
    assert "moved 1 objects" in own_server.log_tail(200)


def test_sdk_default_kms_upload_and_any_credentials(own_server: LiveServer) -> None:
    start_embedded(own_server)
    url = s3_url(own_server)
    writer, reader = s3_client(url, "writer"), s3_client(url, "reader")
    writer.put_object(Bucket=DEFAULT_BUCKET, Key="k", Body=b"v", ServerSideEncryption="aws:kms")
    assert reader.get_object(Bucket=DEFAULT_BUCKET, Key="k")["Body"].read() == b"v"
    big = os.urandom(9 * 1024 * 1024)  # above boto3's multipart threshold
    path = own_server.data_dir / "big.bin"
    path.write_bytes(big)
    writer.upload_file(
        str(path), DEFAULT_BUCKET, "big", ExtraArgs={"ServerSideEncryption": "aws:kms"}
    )
    assert reader.get_object(Bucket=DEFAULT_BUCKET, Key="big")["Body"].read() == big
    presigned = reader.generate_presigned_url(
        "get_object", Params={"Bucket": DEFAULT_BUCKET, "Key": "k"}
    )
    with urllib.request.urlopen(presigned, timeout=10) as resp:
        assert resp.read() == b"v"
