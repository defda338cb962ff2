"""SageMaker's request shapes become typed deployment records at the API layer; rows written
before those records existed are translated when the server starts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelhost.api.operations.deployments import deployment_for, upgrade_deployments
from modelhost.backends import images
from modelhost.controller.fleet import FleetFailed, Fleets
from modelhost.instance_types import Profile, profile_for
from modelhost.settings import Settings
from modelhost.state.records import (
    DeployedContainer,
    DeployedVariant,
    Deployment,
    Resource,
    VariantState,
)
from modelhost.state.store import Store

MODEL = Resource(
    "Iris",
    "arn:model/iris",
    1.0,
    {
        "PrimaryContainer": {
            "Image": "my-image:1",
            "ModelDataUrl": "s3://b/model.tar.gz",
            "Environment": {"A": "1"},
            "ContainerHostname": "box",
        }
    },
)
CONFIG = Resource(
    "cfg",
    "arn:config/cfg",
    2.0,
    {
        "ProductionVariants": [
            {
                "VariantName": "Big",
                "ModelName": "iris",  # names are case-insensitive
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 2,
                "InitialVariantWeight": 3,
                "ContainerStartupHealthCheckTimeoutInSeconds": 120,
            },
            {
                "VariantName": "Small",
                "ModelName": "iris",
                "ServerlessConfig": {"MemorySizeInMB": 4096, "MaxConcurrency": 2},
            },
            {"VariantName": "Gone", "ModelName": "deleted", "InstanceType": "ml.m5.large"},
        ]
    },
)
CONTAINER = DeployedContainer("my-image:1", "s3://b/model.tar.gz", None, {"A": "1"}, "box")
EXPECTED = (
    DeployedVariant("Big", "Iris", (CONTAINER,), "ml.m5.xlarge", None, 3.0, 120.0),
    DeployedVariant("Small", "Iris", (CONTAINER,), None, 4096, 1.0, None, max_concurrency=2),
    DeployedVariant("Gone", "deleted", None, "ml.m5.large", None, 1.0, None),
)


def test_variants_are_translated_from_the_requests() -> None:
    deployment = deployment_for(CONFIG, {"iris": MODEL})
    assert deployment.variants == EXPECTED
    assert deployment.config is CONFIG  # the requests are kept for DescribeEndpoint


def test_typed_variants_survive_the_store() -> None:
    deployment = deployment_for(CONFIG, {"iris": MODEL})
    again = Deployment.from_doc(deployment.to_doc())
    assert again is not None and again.variants == EXPECTED


def test_multi_container_models_keep_every_container() -> None:
    model = Resource("m", "arn", 1.0, {"Containers": [{"Image": "a"}, {"Image": "b"}]})
    config = Resource(
        "c", "arn", 1.0, {"ProductionVariants": [{"VariantName": "V", "ModelName": "m"}]}
    )
    [variant] = deployment_for(config, {"m": model}).variants or ()
    assert [c.image for c in variant.containers or ()] == ["a", "b"]


def _old_row(name: str) -> dict[str, Any]:
    """An endpoint as the server stored it before typed variants (Endpoint.to_doc then)."""
    deployment = {
        "config": {"name": "cfg", "arn": CONFIG.arn, "created": 2.0, "spec": CONFIG.spec},
        "models": {"iris": {"name": "Iris", "arn": MODEL.arn, "created": 1.0, "spec": MODEL.spec}},
        "model_dirs": {"Big": "/data/cache/models/abc"},
    }
    return {
        "name": name,
        "arn": f"arn:endpoint/{name}",
        "config_name": "cfg",
        "status": "InService",
        "created": 3.0,
        "modified": 3.0,
        "variants": [
            {"name": "Big", "desired_weight": 3.0, "desired_count": 2},
            {"name": "Small", "desired_weight": 1.0, "desired_count": 1},
            {"name": "Gone", "desired_weight": 1.0, "desired_count": 1},
        ],
        "deployment": deployment,
        "pending_deployment": deployment,
        "failure_reason": None,
        "update": "config",
        "pending_config": "cfg",
        "pending_variants": [],
        "generation": 4,
    }


def test_rows_from_before_typed_variants_are_upgraded(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.insert("endpoint", "old", 3.0, _old_row("old"))
    loaded = store.endpoint("old")
    assert loaded is not None and loaded.deployment is not None
    assert loaded.deployment.variants is None
    assert upgrade_deployments(store) == 1
    assert upgrade_deployments(store) == 0  # once
    ep = store.endpoint("old")
    assert ep is not None and ep.deployment is not None and ep.pending_deployment is not None
    assert ep.deployment.variants == EXPECTED
    assert ep.pending_deployment.variants == EXPECTED
    assert ep.deployment.model_dirs == {"Big": "/data/cache/models/abc"}
    assert ep.generation == 4  # nothing else changed
    store.close()


class FakeArtifacts:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.asked: list[tuple[str | None, Any]] = []

    def materialize(self, url: str | None = None, source: Any = None) -> Path:
        self.asked.append((url, source))
        return self.root


def _fleets(tmp_path: Path) -> tuple[Fleets, FakeArtifacts]:
    artifacts = FakeArtifacts(tmp_path)
    settings = Settings(data_dir=tmp_path, startup_health_timeout_s=7)
    return Fleets(settings, None, None, artifacts), artifacts  # type: ignore[arg-type]


def test_an_upgraded_row_plans_the_fleet_the_requests_asked_for(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    row = _old_row("old")
    row["deployment"]["config"]["spec"] = {
        "ProductionVariants": CONFIG.spec["ProductionVariants"][:2]
    }
    store.insert("endpoint", "old", 3.0, row)
    upgrade_deployments(store)
    ep = store.endpoint("old")
    store.close()
    assert ep is not None
    fleets, artifacts = _fleets(tmp_path)
    with _no_engine():
        fleet = asyncio.run(fleets.plan(ep.deployment, [VariantState("Big", 5.0, 2)]))
    big, small = fleet.plans["Big"], fleet.plans["Small"]
    assert (big.profile, big.weight, big.startup_timeout) == (profile_for("ml.m5.xlarge"), 5.0, 120)
    assert (big.image, big.environment, big.hostname) == ("my-image:1", {"A": "1"}, "box")
    assert (small.profile, small.weight, small.startup_timeout) == (Profile(2, 4.0), 1.0, 7)
    assert artifacts.asked == [("s3://b/model.tar.gz", None)] * 2


def test_a_missing_model_fails_the_fleet_by_its_arn(tmp_path: Path) -> None:
    deployment = deployment_for(CONFIG, {})
    fleets, _ = _fleets(tmp_path)
    with pytest.raises(FleetFailed, match=r'Could not find model "arn:aws:sagemaker:.*model/iris"'):
        asyncio.run(fleets.plan(deployment, []))


def test_a_row_never_translated_fails_clearly(tmp_path: Path) -> None:
    fleets, _ = _fleets(tmp_path)
    with pytest.raises(FleetFailed, match="no recorded deployment"):
        asyncio.run(fleets.plan(Deployment(CONFIG, {"iris": MODEL}), []))


@contextmanager
def _no_engine() -> Iterator[None]:
    """A container image is accepted only when an engine answers: pretend one does."""
    images.use_engine_probe(lambda: "docker")
    try:
        yield
    finally:
        images.use_engine_probe(None)
