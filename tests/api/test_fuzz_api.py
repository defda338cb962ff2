"""A seeded slice of the API fuzzer (tests/fixtures/fuzz_requests.py) against a live server with a
model, an endpoint configuration and an InService endpoint to aim at: every answer passes the
oracle (no undocumented 5xx, AWS-shaped errors, /ping still answers, no state change from a
rejected request). The long run is bench/fuzz_api.py; its figures are in docs/robustness.md."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, seed, settings

from tests.fixtures import fuzz_oracle as oracle
from tests.fixtures import fuzz_requests as fz
from tests.fixtures.server import LiveServer

pytestmark = pytest.mark.api

EXAMPLES = 300


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with oracle.seeded_server(tmp_path_factory.mktemp("fuzz")) as live:
        yield live


@seed(14)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)  # fmt: skip
@given(req=fz.requests())
def test_fuzzed_requests_pass_the_oracle(fuzz_server: LiveServer, req: fz.Request) -> None:
    probe = oracle.StateProbe(fuzz_server.data_dir / "state.db")
    assert oracle.judge(fuzz_server.port, req, probe) == []
