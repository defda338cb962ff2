"""``modelhost invoke-async`` and ``modelhost queue`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.async_helpers import deploy_async, wait_file
from tests.e2e.test_cli import client
from tests.fixtures.server import LiveServer, unique

pytestmark = pytest.mark.e2e


def test_invoke_async_waits_and_prints_the_result(server: LiveServer, tmp_path: Path) -> None:
    name = unique("cli-async")
    deploy_async(server.client("sagemaker"), name, "echo", f"file://{tmp_path}/out")
    source = tmp_path / "input.json"
    source.write_bytes(b'{"hello": "async"}')
    data = ("--data-dir", str(server.data_dir))
    out = client(server, "invoke-async", name, str(source), "--wait", *data)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b'{"hello": "async"}'
    assert "queued" in out.stderr.decode()
    saved = tmp_path / "saved.json"
    out = client(server, "invoke-async", name, str(source), "--wait", "-o", str(saved), *data)
    assert out.returncode == 0, out.stderr.decode()
    assert saved.read_bytes() == b'{"hello": "async"}'
    # Without --wait: the locations, and the result appears later.
    out = client(server, "invoke-async", name, str(source), *data)
    assert out.returncode == 0 and out.stdout == b""
    location = next(
        line.split("output:")[1].strip()
        for line in out.stderr.decode().splitlines()
        if "output:" in line
    )
    assert wait_file(Path(location.removeprefix("file://"))) == b'{"hello": "async"}'


def test_invoke_async_reports_a_failure(server: LiveServer, tmp_path: Path) -> None:
    name = unique("cli-async-err")
    deploy_async(server.client("sagemaker"), name, "error", f"file://{tmp_path}/out")
    source = tmp_path / "input.json"
    source.write_bytes(b"[1]")
    out = client(
        server, "invoke-async", name, str(source), "--wait", "--data-dir", str(server.data_dir)
    )
    assert out.returncode == 1
    assert "The request failed: Received server error (500)" in out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()


def test_queue_shows_the_backlog(server: LiveServer, tmp_path: Path) -> None:
    name = unique("cli-queue")
    deploy_async(
        server.client("sagemaker"), name, "slow", f"file://{tmp_path}/out", max_concurrent=1
    )
    source = tmp_path / "input.txt"
    # Each request holds the one slot 8 s: the backlog outlasts the four CLI starts even on a
    # loaded machine (about 2 s each there), so it is still there when `queue` looks.
    source.write_bytes(b"8")
    data = ("--data-dir", str(server.data_dir))
    for _ in range(3):
        assert client(server, "invoke-async", name, str(source), *data).returncode == 0
    out = client(server, "queue", name, "--json")  # from another directory: the server's URL
    assert out.returncode == 0, out.stderr.decode()
    summary = json.loads(out.stdout)
    assert summary["endpoint"] == name
    assert summary["backlog"] >= 2
    assert {r["status"] for r in summary["requests"]} <= {"queued", "running"}
    table = client(server, "queue", name)
    assert f"{name}: " in table.stdout.decode() and "InferenceId" in table.stdout.decode()
