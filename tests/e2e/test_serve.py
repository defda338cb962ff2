"""`modelhost serve` itself: a clear message when the port is taken."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, free_port, unique

pytestmark = pytest.mark.e2e


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelhost.cli.main",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_server_per_data_dir(own_server: LiveServer) -> None:
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("locked")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelhost.cli.main",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(own_server.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "is in use by a running server" in done.stderr
    # the running server's endpoints are untouched
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
