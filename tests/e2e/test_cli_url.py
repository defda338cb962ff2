"""Client commands that know only the server's URL: ``deploy`` uploads through the server's
(embedded) S3 server, ``logs`` reads CloudWatch Logs, both from a directory that is not the
server's data directory; with access keys on, the caller's key signs all of it. A server with
the plain local directory store says the client must run on its machine."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import boto3
import pytest

from tests.e2e.test_auth import create_key
from tests.fixtures.server import FIXTURE_MODELS, REGION, LiveServer, free_port, unique

pytestmark = pytest.mark.e2e

CLI_TIMEOUT_S = 120.0
LINE_TIMEOUT_S = 20.0
TEST_KEYS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("cliurl"), env={"MODELHOST_EMBEDDED_S3": "true"})
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client's working directory: not the server's data directory."""
    return tmp_path_factory.mktemp("elsewhere")


def cli_env(**keys: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELHOST_"))}
    return env | {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull} | keys


def run(cwd: Path, *args: str, **keys: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelhost.cli.main", *args],
        cwd=cwd,
        env=cli_env(**(keys or TEST_KEYS)),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def invoke(server: LiveServer, name: str, seconds: str) -> None:
    rt = server.client("sagemaker-runtime")
    body = rt.invoke_endpoint(EndpointName=name, Body=seconds, ContentType="text/plain")["Body"]
    assert body.read() == f"slept {float(seconds)}".encode()


@pytest.fixture(scope="module")
def slow(s3_server: LiveServer, elsewhere: Path) -> str:
    """The slow fixture (it logs a line per request), deployed from ``elsewhere``."""
    name = unique("url-slow")
    out = run(
        elsewhere, "deploy", str(FIXTURE_MODELS / "slow"), "--name", name, "--url", s3_server.url
    )
    assert out.returncode == 0, out.stderr
    s3 = (s3_server.data_dir / "s3" / "endpoint").read_text().strip()
    assert f"(the S3 server {s3})" in out.stderr
    assert "InService" in out.stderr
    return name


def test_deploy_from_elsewhere_uploads_through_s3(
    s3_server: LiveServer, elsewhere: Path, slow: str
) -> None:
    assert not (elsewhere / ".modelhost").exists()
    s3 = boto3.client(
        "s3",
        endpoint_url=(s3_server.data_dir / "s3" / "endpoint").read_text().strip(),
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    listed = s3.list_objects_v2(Bucket="modelhost-deployments", Prefix=f"{slow}/")
    assert [o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])] == ["model.tar.gz"]


def test_logs_from_elsewhere_print_the_instance_lines(
    s3_server: LiveServer, elsewhere: Path, slow: str
) -> None:
    invoke(s3_server, slow, "0.01")
    out = run(elsewhere, "logs", slow, "--url", s3_server.url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(
        line.startswith("AllTraffic/") and line.endswith(" | slow: sleeping 0.01") for line in lines
    ), out.stdout
    missing = run(elsewhere, "logs", unique("nothing"), "--url", s3_server.url)
    assert missing.returncode == 1 and "No logs for endpoint" in missing.stderr


def _reader(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def _wait_line(lines: queue.Queue[str], seen: list[str], needle: str) -> None:
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while not any(needle in line for line in seen):
        left = deadline - time.monotonic()
        assert left > 0, f"no line with {needle!r} in {LINE_TIMEOUT_S} s: {seen}"
        try:
            seen.append(lines.get(timeout=left))
        except queue.Empty:
            continue


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_follow_prints_each_new_line_once(
    s3_server: LiveServer, elsewhere: Path, slow: str
) -> None:
    invoke(s3_server, slow, "0.02")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelhost.cli.main", "logs", slow, "-f", "--url", s3_server.url],
        cwd=elsewhere,
        env=cli_env(**TEST_KEYS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal: a test run started in the background inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler.
        preexec_fn=_default_sigint,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
        seen: list[str] = []
        _wait_line(lines, seen, "slow: sleeping 0.02")
        invoke(s3_server, slow, "0.03")
        _wait_line(lines, seen, "slow: sleeping 0.03")
        invoke(s3_server, slow, "0.04")  # some polls later: nothing printed twice
        _wait_line(lines, seen, "slow: sleeping 0.04")
        for n in ("0.02", "0.03"):
            assert sum(line.endswith(f"| slow: sleeping {n}") for line in seen) == 1, seen
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 130 and "Traceback" not in err, err


def test_an_unreachable_server_is_named(elsewhere: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    model = str(FIXTURE_MODELS / "echo")
    for args in (("deploy", model, "--name", "x"), ("logs", "x"), ("logs", "x", "--follow")):
        out = run(elsewhere, *args, "--url", url)
        assert out.returncode == 1, (args, out.stderr)
        assert url in out.stderr and "modelhost serve" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr, (args, out.stderr)


def test_with_access_keys_the_callers_key_signs_everything(
    s3_server: LiveServer, elsewhere: Path, slow: str
) -> None:
    """After the module's other tests of ``s3_server``: once a key exists, it requires one."""
    invoke(s3_server, slow, "0.05")
    key_id, secret = create_key(s3_server.data_dir, "cli-admin", "admin")
    keys = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    name = unique("url-keyed")
    model = str(FIXTURE_MODELS / "echo")
    deployed = run(
        elsewhere, "deploy", model, "--name", name, "--no-wait", "--url", s3_server.url, **keys
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "Uploaded" in deployed.stderr and f"Creating endpoint {name}" in deployed.stderr
    logs = run(elsewhere, "logs", slow, "--url", s3_server.url, **keys)
    assert logs.returncode == 0 and "| slow: sleeping 0.05" in logs.stdout, logs.stderr
    refused: Any = run(elsewhere, "logs", slow, "--url", s3_server.url, **TEST_KEYS)
    assert refused.returncode == 1 and "modelhost access key" in refused.stderr, refused.stderr
    reader_id, reader_secret = create_key(s3_server.data_dir, "cli-reader", "read-only")
    reader = {"AWS_ACCESS_KEY_ID": reader_id, "AWS_SECRET_ACCESS_KEY": reader_secret}
    read_only = run(
        elsewhere, "deploy", model, "--name", unique("url-ro"), "--url", s3_server.url, **reader
    )
    assert read_only.returncode == 1, read_only.stderr
    assert "Uploading to the S3 server" in read_only.stderr, read_only.stderr
    assert "AccessDenied" in read_only.stderr, read_only.stderr
    assert "modelhost access key" in read_only.stderr and "Traceback" not in read_only.stderr


def test_the_local_directory_store_says_it_needs_the_servers_machine(
    server: LiveServer, elsewhere: Path
) -> None:
    """The session's server has no S3 server: a data directory this machine lacks is named."""
    missing = elsewhere / "not-the-data-dir"
    model = str(FIXTURE_MODELS / "echo")
    args = ("deploy", model, "--name", unique("url-local"), "--url", server.url)
    out = run(elsewhere, *args, "--data-dir", str(missing))
    assert out.returncode == 1, out.stderr
    assert "no S3 server" in out.stderr and "server's machine" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
