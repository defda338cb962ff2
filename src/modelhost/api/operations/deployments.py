"""From SageMaker's request shapes to the typed records the controller reads: an endpoint's
``Deployment`` (captured at CreateEndpoint and UpdateEndpoint) and its desired ``VariantState``s.
PascalCase stops here.

``upgrade_deployments`` translates deployments stored before typed variants existed (rows that
hold only the requests); the server runs it when it starts, before the controller reads them.
"""

from __future__ import annotations

from typing import Any

from modelhost.state.records import (
    DeployedContainer,
    DeployedVariant,
    Deployment,
    Endpoint,
    Resource,
    VariantState,
)
from modelhost.state.store import Store


def deployment_for(config: Resource, models: dict[str, Resource]) -> Deployment:
    """``models``: every model the config names, keyed by lower-cased name."""
    return Deployment(config, models, variants=deployed_variants(config, models))


def deployed_variants(config: Resource, models: dict[str, Resource]) -> tuple[DeployedVariant, ...]:
    return tuple(_variant(pv, models) for pv in config.spec["ProductionVariants"])


def variants_from_config(config: Resource) -> list[VariantState]:
    """The desired variant state an endpoint config asks for."""
    out = []
    for pv in config.spec["ProductionVariants"]:
        count = pv.get("InitialInstanceCount", 1)
        state = VariantState(pv["VariantName"], float(pv.get("InitialVariantWeight", 1.0)), count)
        if (serverless := pv.get("ServerlessConfig")) is not None:
            state.provisioned_concurrency = serverless.get("ProvisionedConcurrency", 0)
        out.append(state)
    return out


def upgrade_deployments(store: Store) -> int:
    """Give every stored deployment without typed variants its variants; how many endpoints
    were changed."""
    changed = 0
    for ep in store.endpoints():
        if _untranslated(ep.deployment) or _untranslated(ep.pending_deployment):
            store.update_endpoint(ep.name, _translate)
            changed += 1
    return changed


def _untranslated(deployment: Deployment | None) -> bool:
    return deployment is not None and deployment.variants is None


def _translate(ep: Endpoint) -> None:
    for deployment in (ep.deployment, ep.pending_deployment):
        if _untranslated(deployment):
            assert deployment is not None
            deployment.variants = deployed_variants(deployment.config, deployment.models)


def _variant(pv: dict[str, Any], models: dict[str, Resource]) -> DeployedVariant:
    model = models.get(pv["ModelName"].lower())
    timeout = pv.get("ContainerStartupHealthCheckTimeoutInSeconds")
    serverless = pv.get("ServerlessConfig")
    containers = None if model is None else deployed_containers(model.spec)
    return DeployedVariant(
        name=pv["VariantName"],
        model_name=pv["ModelName"] if model is None else model.name,
        containers=containers,
        instance_type=pv.get("InstanceType"),
        serverless_memory_mb=None if serverless is None else serverless.get("MemorySizeInMB"),
        initial_weight=float(pv.get("InitialVariantWeight", 1.0)),
        startup_timeout_s=None if timeout is None else float(timeout),
        max_concurrency=None if serverless is None else serverless.get("MaxConcurrency"),
        provisioned_concurrency=(
            None if serverless is None else serverless.get("ProvisionedConcurrency")
        ),
        mode="" if model is None or len(containers or ()) < 2 else execution_mode(model.spec),
    )


def execution_mode(spec: dict[str, Any]) -> str:
    """A multi-container model's InferenceExecutionConfig Mode (Serial unless it says)."""
    return str((spec.get("InferenceExecutionConfig") or {}).get("Mode") or "Serial")


def deployed_containers(spec: dict[str, Any]) -> tuple[DeployedContainer, ...]:
    containers = spec.get("Containers") or [spec.get("PrimaryContainer", {})]
    return tuple(
        DeployedContainer(
            image=c.get("Image"),
            model_data_url=c.get("ModelDataUrl"),
            model_data_source=c.get("ModelDataSource"),
            environment=dict(c.get("Environment", {})),
            hostname=c.get("ContainerHostname"),
            multi_model=c.get("Mode") == "MultiModel",
            model_cache=c.get("MultiModelConfig", {}).get("ModelCacheSetting") != "Disabled",
        )
        for c in containers
    )
