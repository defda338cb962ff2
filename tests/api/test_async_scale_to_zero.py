"""Asynchronous endpoints scale to zero (MinCapacity 0) on a target-tracking policy over
ApproximateBacklogSizePerInstance, and back out when requests queue up with no instance to
take them, as SageMaker documents for async inference; no queued request is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.async_helpers import deploy_async, local_path, wait_file
from tests.fixtures.server import LiveServer, unique
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.api

DIM = "sagemaker:variant:DesiredInstanceCount"


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"MODELHOST_AUTOSCALING_INTERVAL_S": "0.2", "MODELHOST_AUTOSCALING_WINDOW_S": "2"}
    with LiveServer(tmp_path_factory.mktemp("async-zero"), env=env) as live:
        yield live


def test_async_endpoint_scales_to_zero_and_back_on_backlog(
    fast: LiveServer, tmp_path: Path
) -> None:
    sm, rt = fast.client("sagemaker"), fast.client("sagemaker-runtime")
    aas = fast.client("application-autoscaling")
    name = unique("ep-async-zero")
    deploy_async(sm, name, "echo", f"file://{tmp_path / 'out'}")
    rid = f"endpoint/{name}/variant/AllTraffic"
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIM,
        MinCapacity=0,
        MaxCapacity=2,
    )
    aas.put_scaling_policy(
        PolicyName="backlog",
        ServiceNamespace="sagemaker",
        ResourceId=rid,
        ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": name}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": 0,
            "ScaleOutCooldown": 0,
        },
    )

    def count() -> int | None:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] != "InService":
            return None
        current: int = desc["ProductionVariants"][0]["CurrentInstanceCount"]
        return current

    wait_for(lambda: count() == 0, 30, "the idle endpoint to scale in to zero")

    # Requests queue at zero instances; the backlog brings one back and every one is done.
    outputs = []
    for i in range(3):
        out = rt.invoke_endpoint_async(
            EndpointName=name, InputLocation=_input(tmp_path, i), ContentType="application/json"
        )
        outputs.append(local_path(out["OutputLocation"]))
    for i, path in enumerate(outputs):
        assert wait_file(path, 60) == f'{{"n": {i}}}'.encode()
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid)
    desired = [a["Description"] for a in activities["ScalingActivities"]]
    assert "Setting desired instance count to 0." in desired
    assert "Setting desired instance count to 1." in desired

    # `modelhost endpoints` shows each variant's latest scaling activity.
    listed = subprocess.run(
        [sys.executable, "-m", "modelhost.cli.main", "endpoints", "--json", "--url", fast.url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    [row] = [r for r in json.loads(listed.stdout) if r["name"] == name]
    last = row["variants"][0]["last_scaling"]
    assert last["description"].startswith("Setting desired instance count to "), last
    assert "policy backlog" in last["cause"] and last["status"] in ("InProgress", "Successful")
    sm.delete_endpoint(EndpointName=name)


def _input(tmp_path: Path, i: int) -> str:
    path = tmp_path / f"in-{i}.json"
    path.write_text(f'{{"n": {i}}}')
    return f"file://{path}"
