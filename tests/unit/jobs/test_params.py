"""Transform job policies: parameter precedence, batch environment, file assignment."""

from __future__ import annotations

from dataclasses import replace

from modelhost.jobs.params import (
    BatchParams,
    assign,
    batch_environment,
    effective,
    parse_execution_parameters,
)
from modelhost.state.records import DeployedContainer
from modelhost.state.transform_jobs import TransformPlan

PLAN = TransformPlan(
    model_name="m",
    container=DeployedContainer(model_data_url="/m"),
    instance_type="ml.m5.large",
    instance_count=1,
    input_uri="/in/",
    manifest=False,
    output_path="/out/",
)
CONTAINER = {"MaxConcurrentTransforms": 8, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 3}


def test_defaults_without_request_or_container() -> None:
    assert effective(PLAN, {}) == BatchParams(1, 6, False)


def test_container_parameters_fill_what_the_request_left_out() -> None:
    assert effective(PLAN, CONTAINER) == BatchParams(8, 3, True)


def test_the_request_wins_over_the_container() -> None:
    plan = replace(PLAN, max_concurrent=2, max_payload_mb=0, strategy="SingleRecord")
    params = effective(plan, CONTAINER)
    assert params == BatchParams(2, 0, False)
    assert params.limit is None
    assert effective(replace(PLAN, max_payload_mb=1), {}).limit == 1024 * 1024


def test_nonsense_from_the_container_is_ignored() -> None:
    bad = {"MaxConcurrentTransforms": "8", "MaxPayloadInMB": 1000, "BatchStrategy": 3}
    assert effective(PLAN, bad) == BatchParams(1, 6, False)


def test_execution_parameters_answer() -> None:
    assert parse_execution_parameters(200, b'{"MaxPayloadInMB": 3}') == {"MaxPayloadInMB": 3}
    assert parse_execution_parameters(404, b"{}") == {}
    assert parse_execution_parameters(200, b"not json") == {}
    assert parse_execution_parameters(200, b"[1]") == {}


def test_batch_environment_names_only_what_the_request_set() -> None:
    assert batch_environment(PLAN) == {"SAGEMAKER_BATCH": "true"}
    plan = replace(PLAN, max_concurrent=4, max_payload_mb=2, strategy="MultiRecord")
    assert batch_environment(plan) == {
        "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
        "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4",
    }


def test_files_are_spread_round_robin_and_never_split() -> None:
    assert assign(5, 2) == [[0, 2, 4], [1, 3]]
    assert assign(1, 3) == [[0], [], []]


def test_plan_round_trips_through_its_document() -> None:
    plan = replace(PLAN, environment={"A": "1"}, strategy="MultiRecord")
    assert TransformPlan.from_doc(plan.to_doc()) == plan
