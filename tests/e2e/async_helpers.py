"""Helpers of the asynchronous inference tests: deploy an async endpoint, wait for a result
object, send a raw InvokeEndpointAsync (to reach the server's own checks past boto3's)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, wait_status


def deploy_async(
    sm: Any,
    name: str,
    model: str,
    output: str,
    failure: str | None = None,
    *,
    max_concurrent: int | None = None,
    count: int = 1,
    wait: bool = True,
    notification: dict[str, Any] | None = None,
) -> None:
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / model)})
    output_config: dict[str, Any] = {"S3OutputPath": output}
    if failure is not None:
        output_config["S3FailurePath"] = failure
    if notification is not None:
        output_config["NotificationConfig"] = notification
    config: dict[str, Any] = {"OutputConfig": output_config}
    if max_concurrent is not None:
        config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": max_concurrent}
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": count,
            }
        ],
        AsyncInferenceConfig=config,
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if wait:
        assert wait_status(sm, name, {"InService", "Failed"})["EndpointStatus"] == "InService"


def local_path(location: str) -> Path:
    return Path(location.removeprefix("file://"))


def wait_file(path: Path, timeout: float = 60.0) -> bytes:
    """The object's content once it exists (SDK-style polling: absent until complete)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def wait_either(output: Path, failure: Path, timeout: float = 60.0) -> tuple[str, bytes]:
    """("output" | "failure", content) for whichever of a request's results appears."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind, path in (("output", output), ("failure", failure)):
            try:
                return kind, path.read_bytes()
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"neither {output} nor {failure} appeared within {timeout} s")


def raw_async(
    server: LiveServer, endpoint: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST /endpoints/<endpoint>/async-invocations as a plain HTTP client."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", f"/endpoints/{endpoint}/async-invocations", body, headers)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(payload)
    finally:
        conn.close()


class Hook:
    """A loopback webhook receiver: records each POST (path, JSON); the first ``failures``
    POSTs to each path are answered 500, to exercise the sender's retries."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.got: list[tuple[str, dict[str, Any]]] = []
        self._failed: dict[str, int] = {}
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook._lock:
                    failed = hook._failed.get(self.path, 0)
                    if failed < hook.failures:
                        hook._failed[self.path] = failed + 1
                        status = 500
                    else:
                        hook.got.append((self.path, json.loads(body)))
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def messages(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for p, m in self.got if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
