"""Asynchronous inference's pure rules."""

from __future__ import annotations

import json

from modelhost.asyncinf import policy
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest


def _request(created: float = 100.0, expires: float = 160.0) -> AsyncRequest:
    return AsyncRequest(
        "r1",
        "ep",
        "inf-1",
        "s3://b/in",
        "s3://b/out/inf-1.out",
        "s3://b/f/inf-1-error.out",
        created,
        expires,
        900.0,
    )


def test_result_locations() -> None:
    config = AsyncEndpointConfig("ep", "s3://bucket/out/", "s3://bucket/failed")
    assert policy.result_locations(config, "abc") == (
        "s3://bucket/out/abc.out",
        "s3://bucket/failed/abc-error.out",
    )
    assert policy.result_locations(config, "abc", "/x/y/", "name.json") == (
        "s3://bucket/out/x/y/name.json",
        "s3://bucket/failed/x/y/abc-error.out",
    )


def test_failures_go_beside_outputs_without_a_failure_path() -> None:
    config = AsyncEndpointConfig("ep", "file:///data/out")
    assert policy.result_locations(config, "id")[1] == "file:///data/out/id-error.out"


def test_free_slots_and_pick_instance() -> None:
    assert policy.free_slots([], 4) == 0
    assert policy.free_slots([0, 3, 5], 4) == 5
    assert policy.pick_instance([2, 1, 1], 2) == 1
    assert policy.pick_instance([2, 2], 2) is None
    assert policy.pick_instance([], 2) is None


def test_expired_only_when_first_started_after_the_ttl() -> None:
    req = _request()
    assert not policy.expired(req)  # not started
    req.started = 150.0
    assert not policy.expired(req)
    req.started = 160.5
    assert policy.expired(req)
    assert "RequestTTLSeconds (60 s)" in policy.expiry_reason(req)


def test_retry_up_to_the_limit() -> None:
    assert policy.retry(1) and policy.retry(policy.MAX_ATTEMPTS - 1)
    assert not policy.retry(policy.MAX_ATTEMPTS)


def test_failure_document_is_json() -> None:
    doc = policy.failure_document("ModelError", 'said "no"')
    assert json.loads(doc) == {"ErrorCode": "ModelError", "Message": 'said "no"'}
