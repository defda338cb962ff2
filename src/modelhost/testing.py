"""A pytest plugin for your own test suites: real modelhost servers, real models.

Installed with the package (entry point ``pytest11``), it gives every test the fixture
``modelhost_server``: a ``modelhost serve`` process on a free 127.0.0.1 port with a temporary
data directory, stopped (with every instance it started) after the test. For the test's
duration the environment points boto3, the AWS CLI and the SageMaker SDK at it —
``AWS_ENDPOINT_URL_SAGEMAKER``, ``..._SAGEMAKER_RUNTIME``, ``..._STS``, ``..._CLOUDWATCH``,
``..._CLOUDWATCH_LOGS``, ``..._S3`` (the embedded S3 server, when it runs),
``SAGEMAKER_USER_CONFIG_OVERRIDE`` — with test credentials and region, so code under test
needs no ``endpoint_url``::

    def test_deploy(modelhost_server):
        sm = boto3.client("sagemaker")        # talks to modelhost
        ...

Server settings go in a marker: ``@pytest.mark.modelhost(env={"MODELHOST_EMBEDDED_S3":
"false"})`` (any ``MODELHOST_*`` setting; the test's own environment is passed on too).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelhost.sdkconfig import FILE_NAME as SDK_CONFIG
from modelhost.storage.embedded import client_endpoint

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
SERVICES = ("SAGEMAKER", "SAGEMAKER_RUNTIME", "STS", "CLOUDWATCH", "CLOUDWATCH_LOGS")


@dataclass
class ModelhostServer:
    """A running ``modelhost serve``: its URL, data directory and (embedded) S3 URL."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    s3_url: str | None = None

    @property
    def environment(self) -> dict[str, str]:
        """The variables that point AWS clients at this server."""
        env = {f"AWS_ENDPOINT_URL_{s}": self.url for s in SERVICES}
        if self.s3_url:
            env["AWS_ENDPOINT_URL_S3"] = self.s3_url
        env["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(self.data_dir / SDK_CONFIG)
        return env | CREDENTIALS | {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` pointed at this server (S3: its S3 server)."""
        import boto3

        url = self.s3_url if service == "s3" else self.url
        make: Any = boto3.client
        return make(
            service,
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            **kwargs,
        )

    def log(self) -> str:
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (the server stops its instances), SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> ModelhostServer:
    """Start ``modelhost serve`` on a free loopback port and wait until it answers."""
    for attempt in range(3):  # another process may take the port before the server binds it
        server = _start_once(data_dir, _free_port(), env or {})
        try:
            _wait_ready(server)
            server.s3_url = client_endpoint(data_dir)
            return server
        except _PortTaken:
            server.stop()
            if attempt == 2:
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


class _PortTaken(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_once(data_dir: Path, port: int, env: dict[str, str]) -> ModelhostServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **env, "MODELHOST_DATA_DIR": str(data_dir)}
    full |= {"MODELHOST_HOST": "127.0.0.1", "MODELHOST_PORT": str(port)}
    with (data_dir / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelhost.cli.main", "serve"],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ModelhostServer(f"http://127.0.0.1:{port}", data_dir, process)


def _wait_ready(server: ModelhostServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            if "cannot listen on" in server.log():
                raise _PortTaken(server.log())
            raise RuntimeError(f"modelhost serve exited early:\n{server.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"modelhost serve not ready in {START_TIMEOUT_S} s:\n{server.log()[-4000:]}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "modelhost(env): settings (MODELHOST_* variables) for the modelhost_server fixture",
    )


@pytest.fixture
def modelhost_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModelhostServer]:
    """A modelhost server of the test's own, and the environment pointing AWS clients at it."""
    marker = request.node.get_closest_marker("modelhost")
    env: dict[str, str] = dict(marker.kwargs.get("env", {})) if marker is not None else {}
    server = start_server(tmp_path_factory.mktemp("modelhost"), env)
    try:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        for name, value in server.environment.items():
            monkeypatch.setenv(name, value)
        yield server
    finally:
        server.stop()
