from __future__ import annotations

from typing import Any

from tests.fixtures.server import FIXTURE_MODELS, deploy, unique


def test_echo_round_trip(sm: Any, rt: Any) -> None:
    name = unique("echo")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "echo"))
    assert desc["EndpointStatus"] == "InService", desc
    out = rt.invoke_endpoint(EndpointName=name, Body=b"hello", ContentType="text/plain")
    assert out["Body"].read() == b"hello"
