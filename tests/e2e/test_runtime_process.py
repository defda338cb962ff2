"""`python -m modelhost.runtime serve` as a real process on a free loopback port."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest

from modelhost.runtime.serverstate import ServerOptions
from tests.fixtures.models import fixture_model_dir, sklearn_iris_dir

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 10.0
MAX_BODY = 65536


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Runtime:
    """One server process; its stderr goes to a file so it can never block on a full pipe."""

    def __init__(self, model_dir: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.model_dir = model_dir
        self.log = log
        full_env = {
            **os.environ,
            "MODELHOST_MODEL_DIR": str(model_dir),
            "MODELHOST_BIND_HOST": "127.0.0.1",
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            **env,
        }
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelhost.runtime", "serve"],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"runtime exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                if self.request("GET", "/ping")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"runtime not ready in {READY_TIMEOUT_S}s:\n{self.stderr()}")

    def wait_for_log(self, text: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while text not in self.stderr():
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never logged:\n{self.stderr()}")
            time.sleep(0.02)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read(), response
        finally:
            conn.close()

    def invoke(self, body: bytes, **headers: str) -> tuple[int, bytes, http.client.HTTPResponse]:
        names = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.request("POST", "/invocations", body, names)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start(model_dir: Path, log: Path, **env: str) -> Iterator[Runtime]:
    runtime = Runtime(model_dir, log, **env)
    try:
        runtime.wait_ready()
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("echo")
    model_dir = fixture_model_dir("echo", tmp / "model")
    yield from start(model_dir, tmp / "stderr.log", MODELHOST_MAX_BODY_BYTES=str(MAX_BODY))


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("iris")
    yield from start(sklearn_iris_dir(tmp / "model"), tmp / "stderr.log")


@pytest.fixture
def runtime_for(tmp_path: Path) -> Iterator[list[Runtime]]:
    """Processes a single test starts by hand; all are stopped afterwards."""
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.stop()


def launch(started: list[Runtime], name: str, tmp_path: Path) -> Runtime:
    runtime = Runtime(fixture_model_dir(name, tmp_path / name), tmp_path / f"{name}.log")
    started.append(runtime)
    return runtime


# --- echo ---------------------------------------------------------------------------------------


def test_ping_is_empty_200(echo: Runtime) -> None:
    status, body, response = echo.request("GET", "/ping")
    assert (status, body) == (200, b"")
    assert response.getheader("Content-Length") == "0"


def test_echo_round_trips_body_type_and_custom_attributes(echo: Runtime) -> None:
    status, body, response = echo.invoke(
        b'{"x": 1}',
        Content_Type="application/json",
        X_Amzn_SageMaker_Custom_Attributes="trace=abc",
    )
    assert (status, body) == (200, b'{"x": 1}')
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Content-Length") == "8"
    assert response.getheader("X-Amzn-SageMaker-Custom-Attributes") == "trace=abc"


def test_echo_binary_body(echo: Runtime) -> None:
    payload = bytes(range(256)) * 10
    status, body, response = echo.invoke(payload, Content_Type="application/octet-stream")
    assert (status, body) == (200, payload)
    assert response.getheader("X-Amzn-SageMaker-Custom-Attributes") is None


def test_keep_alive_reuses_one_connection(echo: Runtime) -> None:
    conn = echo.connect()
    try:
        for i in range(5):
            conn.request("POST", "/invocations", body=f"{i}", headers={"Content-Type": "text/x"})
            response = conn.getresponse()
            assert response.read() == f"{i}".encode()
            if i == 0:
                first_socket = conn.sock
            assert conn.sock is first_socket and conn.sock is not None
    finally:
        conn.close()


def raw_exchange(runtime: Runtime, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_chunked_request_body(echo: Runtime) -> None:
    response = raw_exchange(
        echo,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 11" in head
    assert b"Connection: close" in head
    assert body == b"hello world"


def test_pipelined_requests_answered_in_order_then_close(echo: Runtime) -> None:
    one = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
    two = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\ntwo"
    )
    ignored = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    response = raw_exchange(echo, one + two + ignored)
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert response.index(b"one") < response.index(b"two")
    assert response.endswith(b"two")


def test_unknown_path_404_and_wrong_method_405(echo: Runtime) -> None:
    assert echo.request("GET", "/nope")[0] == 404
    assert echo.request("GET", "/invocations")[0] == 405
    assert echo.request("POST", "/ping", b"x")[0] == 405


def test_body_over_limit_is_413(echo: Runtime) -> None:
    status, body, _ = echo.invoke(b"x" * (MAX_BODY + 1), Content_Type="text/plain")
    assert status == 413
    assert str(MAX_BODY).encode() in body
    chunked = b"".join(b"%x\r\n%s\r\n" % (8192, b"y" * 8192) for _ in range(9)) + b"0\r\n\r\n"
    response = raw_exchange(
        echo,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
    )
    assert response.startswith(b"HTTP/1.1 413 ")
    assert echo.request("GET", "/ping")[0] == 200


def test_malformed_request_is_400(echo: Runtime) -> None:
    assert raw_exchange(echo, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")


# --- sklearn with the default handlers -----------------------------------------------------------


ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]])


@pytest.fixture(scope="module")
def iris_expected(iris: Runtime) -> list[int]:
    model = joblib.load(iris.model_dir / "model.joblib")
    return [int(v) for v in model.predict(ROWS)]


def test_iris_json_matches_in_process_predict(iris: Runtime, iris_expected: list[int]) -> None:
    status, body, response = iris.invoke(
        json.dumps(ROWS.tolist()).encode(), Content_Type="application/json", Accept="*/*"
    )
    assert status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(body) == iris_expected


def test_iris_csv_in_npy_out(iris: Runtime, iris_expected: list[int]) -> None:
    csv = "\n".join(",".join(str(v) for v in row) for row in ROWS).encode()
    status, body, response = iris.invoke(
        csv, Content_Type="text/csv", Accept="text/html, application/x-npy;q=0.9"
    )
    assert status == 200
    assert response.getheader("Content-Type") == "application/x-npy"
    assert np.load(io.BytesIO(body)).tolist() == iris_expected


def test_iris_one_row_is_reshaped(iris: Runtime, iris_expected: list[int]) -> None:
    status, body, _ = iris.invoke(b"[5.1, 3.5, 1.4, 0.2]", Content_Type="application/json")
    assert (status, json.loads(body)) == (200, iris_expected[:1])


def test_unsupported_content_type_415(iris: Runtime) -> None:
    status, body, _ = iris.invoke(b"hello", Content_Type="text/plain")
    assert status == 415
    assert b"text/plain" in body and b"application/json" in body


def test_unsupported_accept_406(iris: Runtime) -> None:
    status, body, _ = iris.invoke(
        b"[[1, 2, 3, 4]]", Content_Type="application/json", Accept="text/html"
    )
    assert status == 406
    assert b"text/html" in body and b"application/json" in body


# --- other fixtures -------------------------------------------------------------------------------


def test_sum(runtime_for: list[Runtime], tmp_path: Path) -> None:
    runtime = launch(runtime_for, "sum", tmp_path)
    runtime.wait_ready()
    status, body, response = runtime.invoke(b"[1, 2, 3.5]", Content_Type="application/json")
    assert (status, json.loads(body)) == (200, {"sum": 6.5})
    assert response.getheader("Content-Type") == "application/json"


def test_error_is_500_with_message_and_traceback_logged(
    runtime_for: list[Runtime], tmp_path: Path
) -> None:
    runtime = launch(runtime_for, "error", tmp_path)
    runtime.wait_ready()
    status, body, response = runtime.invoke(b"[1]", Content_Type="application/json")
    assert (status, body) == (500, b"ValueError: boom from predict_fn")
    assert response.getheader("Content-Type", "").startswith("text/plain")
    runtime.wait_for_log("Traceback")
    assert "boom from predict_fn" in runtime.stderr()
    assert runtime.request("GET", "/ping")[0] == 200


def test_badimport_exits_1_with_the_reason_last(runtime_for: list[Runtime], tmp_path: Path) -> None:
    runtime = launch(runtime_for, "badimport", tmp_path)
    assert runtime.proc.wait(READY_TIMEOUT_S) == 1
    last = runtime.stderr().strip().splitlines()[-1]
    assert last == (
        "modelhost.runtime: importing code/inference.py failed: ModuleNotFoundError: "
        "No module named 'modelhost_fixture_module_that_does_not_exist'"
    )
    assert "Traceback" in runtime.stderr()


def test_sigterm_when_idle_exits_0(runtime_for: list[Runtime], tmp_path: Path) -> None:
    runtime = launch(runtime_for, "echo", tmp_path)
    runtime.wait_ready()
    idle = runtime.connect()
    idle.connect()
    try:
        started = time.monotonic()
        runtime.proc.send_signal(signal.SIGTERM)
        assert runtime.proc.wait(EXIT_TIMEOUT_S) == 0
        # an idle connection does not hold the exit for the shutdown grace period (20 s):
        # relative to that, not to a machine-dependent absolute time
        assert time.monotonic() - started < ServerOptions().shutdown_grace_s / 4
    finally:
        idle.close()


def test_sigterm_finishes_the_request_in_flight(runtime_for: list[Runtime], tmp_path: Path) -> None:
    runtime = launch(runtime_for, "slow", tmp_path)
    runtime.wait_ready()
    conn = runtime.connect()
    try:
        conn.request("POST", "/invocations", body=b"1.0", headers={"Content-Type": "text/plain"})
        runtime.wait_for_log("slow: sleeping 1.0")
        runtime.proc.send_signal(signal.SIGTERM)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"slept 1.0")
    finally:
        conn.close()
    assert runtime.proc.wait(EXIT_TIMEOUT_S) == 0


CONTEXT_HANDLERS = """
def model_fn(model_dir):
    return "m"

def transform_fn(model, data, content_type, accept, context):
    seen = context.get_request_header(0, "X-Amzn-SageMaker-Target-Variant")
    context.custom_attributes = f"variant={seen}"
    return "ok", "text/plain"
"""


def test_custom_attributes_set_by_the_handler(runtime_for: list[Runtime], tmp_path: Path) -> None:
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(CONTEXT_HANDLERS)
    runtime = Runtime(tmp_path / "model", tmp_path / "stderr.log")
    runtime_for.append(runtime)
    runtime.wait_ready()
    status, body, response = runtime.invoke(
        b"x",
        X_Amzn_SageMaker_Target_Variant="AllTraffic",
        X_Amzn_SageMaker_Custom_Attributes="from-caller",
    )
    assert (status, body) == (200, b"ok")
    assert response.getheader("X-Amzn-SageMaker-Custom-Attributes") == "variant=AllTraffic"
