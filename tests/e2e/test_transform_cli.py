"""``modelhost transform`` and ``modelhost jobs`` as a user runs them: subprocesses against a
live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import LiveServer, unique
from tests.fixtures.transform import make_model

pytestmark = pytest.mark.e2e


def modelhost(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    return subprocess.run(
        [sys.executable, "-m", "modelhost.cli.main", *args, "--url", server.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_transform_follows_the_job_and_jobs_lists_it(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.csv").write_bytes(b"".join(b"%d\n" % i for i in range(1000)))
    (src / "b.csv").write_bytes(b"x\n")
    model = make_model(sm, "echo")
    name = unique("cli-tj")
    done = modelhost(
        server,
        "transform",
        model,
        str(src),
        str(out),
        "--strategy",
        "MultiRecord",
        "--instance-count",
        "2",
        "--content-type",
        "text/csv",
        "--name",
        name,
    )
    assert done.returncode == 0, done.stderr
    assert f"Transform job {name} started" in done.stderr
    assert "2/2 files" in done.stderr
    assert "1001 records" in done.stderr
    assert (out / "a.csv.out").read_bytes() == b"".join(b"%d\n" % i for i in range(1000))
    listed = modelhost(server, "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == name]
    assert row["status"] == "Completed"
    table = modelhost(server, "jobs")
    assert name in table.stdout
    logs = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelhost.cli.main",
            "logs",
            name,
            "--url",
            server.url,
        ],
        cwd=tmp_path,  # not the server's data directory: logs come through CloudWatch Logs
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert logs.returncode == 0, logs.stderr
    assert f"{name}/i-" in logs.stdout and "modelhost.runtime: stopped" in logs.stdout


def test_a_failed_transform_exits_1_with_the_reason(
    server: LiveServer, sm: Any, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.csv").write_bytes(b"1\n")
    model = make_model(sm, "error")
    failed = modelhost(
        server, "transform", model, str(src), str(tmp_path / "out"), "--content-type", "text/csv"
    )
    assert failed.returncode == 1
    assert "Failed" in failed.stderr and "a.csv" in failed.stderr
    missing = modelhost(server, "transform", model, str(tmp_path / "none"), str(tmp_path / "o"))
    assert missing.returncode == 1
    assert "No S3 objects found" in missing.stderr
