"""Regression tests for what the fuzzers (tests/api/test_fuzz_api.py, bench/fuzz_api.py) found:
each one a request that once got an undocumented 5xx or broke the server."""

from __future__ import annotations

import pytest

from tests.fixtures import fuzz_oracle as oracle
from tests.fixtures import fuzz_requests as fz
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.api

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "SageMaker.ListModels"}),
        ("/", {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "Logs_20140328.DescribeLogGroups"}),
        ("/", {"Content-Type": "application/x-amz-json-1.0",
               "X-Amz-Target": "GraniteServiceVersion20100801.ListMetrics"}),
    ],
)  # fmt: skip
def test_deeply_nested_json_is_a_serialization_error(
    server: LiveServer, path: str, headers: dict[str, str]
) -> None:
    """json.loads raised RecursionError, which became a 500 InternalFailure."""
    req = fz.Request("any", "json", "op", "POST", path, headers, DEEP, "deep_json")
    answer = oracle.send(server.port, req)
    code, message = oracle.error_code_and_message(answer)
    # CloudWatch names it as its query protocol does (InvalidParameterValueException)
    assert answer.status == 400, answer.body[:300]
    assert code in {"SerializationException", "InvalidParameterValueException"}
    assert "nested too deeply" in message
