"""What the store keeps: small dataclasses; statuses are str Enums with SageMaker's strings.

Specs are kept as the validated request (PascalCase, as on the wire) so Describe returns exactly
what was created; what the controller acts on is typed (``DeployedVariant``, translated from the
request by api/operations/deployments.py when the deployment is captured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EndpointStatus(StrEnum):
    OUT_OF_SERVICE = "OutOfService"
    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    IN_SERVICE = "InService"
    DELETING = "Deleting"
    FAILED = "Failed"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"


class UpdateKind(StrEnum):
    NONE = ""
    CONFIG = "config"  # UpdateEndpoint: build a new fleet, move traffic, remove the old one
    CAPACITY = "capacity"  # UpdateEndpointWeightsAndCapacities: in place


@dataclass(slots=True)
class Resource:
    """A model or an endpoint config: a name, an ARN and the validated request."""

    name: str
    arn: str
    created: float
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeployedContainer:
    """One container of a variant's model: what runs and where its model data comes from."""

    image: str | None = None
    model_data_url: str | None = None
    # An S3DataSource and the like, as the request gave it: artifacts/ resolves it.
    model_data_source: dict[str, Any] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    hostname: str | None = None
    # Mode MultiModel: model_data_url is a prefix; each request's TargetModel is an archive
    # under it. model_cache False: MultiModelConfig.ModelCacheSetting Disabled.
    multi_model: bool = False
    model_cache: bool = True

    def to_doc(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "model_data_url": self.model_data_url,
            "model_data_source": self.model_data_source,
            "environment": self.environment,
            "hostname": self.hostname,
            "multi_model": self.multi_model,
            "model_cache": self.model_cache,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> DeployedContainer:
        return cls(
            doc.get("image"),
            doc.get("model_data_url"),
            doc.get("model_data_source"),
            dict(doc.get("environment", {})),
            doc.get("hostname"),
            bool(doc.get("multi_model", False)),
            bool(doc.get("model_cache", True)),
        )


@dataclass(frozen=True, slots=True)
class DeployedVariant:
    """One production variant as deployed: its model's containers (None when the model was not
    found) and how its instances are sized and started."""

    name: str
    model_name: str
    containers: tuple[DeployedContainer, ...] | None
    instance_type: str | None = None
    serverless_memory_mb: int | None = None  # a serverless variant's memory size
    initial_weight: float = 1.0
    startup_timeout_s: float | None = None  # None: the server's default
    max_concurrency: int | None = None  # a serverless variant's MaxConcurrency
    # A serverless variant's ProvisionedConcurrency: it keeps its instances warm (never
    # scales to zero) when set.
    provisioned_concurrency: int | None = None
    # How several containers serve: "Serial" (an inference pipeline) or "Direct" (each
    # request names its container); "" for a model with one container.
    mode: str = ""

    def to_doc(self) -> dict[str, Any]:
        containers = self.containers
        return {
            "name": self.name,
            "model_name": self.model_name,
            "containers": None if containers is None else [c.to_doc() for c in containers],
            "instance_type": self.instance_type,
            "serverless_memory_mb": self.serverless_memory_mb,
            "initial_weight": self.initial_weight,
            "startup_timeout_s": self.startup_timeout_s,
            "max_concurrency": self.max_concurrency,
            "provisioned_concurrency": self.provisioned_concurrency,
            "mode": self.mode,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> DeployedVariant:
        containers = doc.get("containers")
        return cls(
            doc["name"],
            doc["model_name"],
            None if containers is None else tuple(map(DeployedContainer.from_doc, containers)),
            doc.get("instance_type"),
            doc.get("serverless_memory_mb"),
            float(doc.get("initial_weight", 1.0)),
            doc.get("startup_timeout_s"),
            doc.get("max_concurrency"),
            doc.get("provisioned_concurrency"),
            doc.get("mode", ""),
        )


@dataclass(slots=True)
class Deployment:
    """What an endpoint runs, captured when it is created or updated: its endpoint config and
    every model that config names (as requested: DescribeEndpoint reads them), and the variants
    translated into typed records (what the controller reads). Deleting a model afterwards does
    not break the endpoint (nor its recovery after a restart), as on SageMaker."""

    config: Resource
    models: dict[str, Resource]
    # Where each variant's model data was unpacked, once a fleet ran it: a restart recovers
    # from there when the source (an S3 object, a local file) is gone or unreachable.
    model_dirs: dict[str, str] = field(default_factory=dict)
    # None only in a row written before typed variants: the server translates those when it
    # starts (api/operations/deployments.py, upgrade_deployments).
    variants: tuple[DeployedVariant, ...] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "config": _resource_doc(self.config),
            "models": {k: _resource_doc(m) for k, m in self.models.items()},
            "model_dirs": self.model_dirs,
        }
        if self.variants is not None:
            doc["variants"] = [v.to_doc() for v in self.variants]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> Deployment | None:
        if not doc:
            return None
        models = {k: Resource(**m) for k, m in doc["models"].items()}
        variants = doc.get("variants")
        return cls(
            Resource(**doc["config"]),
            models,
            dict(doc.get("model_dirs", {})),
            None if variants is None else tuple(map(DeployedVariant.from_doc, variants)),
        )


def _resource_doc(r: Resource) -> dict[str, Any]:
    return {"name": r.name, "arn": r.arn, "created": r.created, "spec": r.spec}


@dataclass(slots=True)
class VariantState:
    name: str
    desired_weight: float
    desired_count: int
    current_weight: float | None = None
    current_count: int | None = None
    # A serverless variant's ProvisionedConcurrency in effect (its config's, then whatever
    # Application Auto Scaling set; 0: none, it may scale to zero). None: not serverless, or
    # a row written before this field (the deployment's value then holds).
    provisioned_concurrency: int | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "desired_weight": self.desired_weight,
            "desired_count": self.desired_count,
            "current_weight": self.current_weight,
            "current_count": self.current_count,
            "provisioned_concurrency": self.provisioned_concurrency,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> VariantState:
        return cls(
            doc["name"],
            doc["desired_weight"],
            doc["desired_count"],
            doc.get("current_weight"),
            doc.get("current_count"),
            doc.get("provisioned_concurrency"),
        )


@dataclass(slots=True)
class Endpoint:
    name: str
    arn: str
    config_name: str
    status: EndpointStatus
    created: float
    modified: float
    variants: list[VariantState] = field(default_factory=list)
    deployment: Deployment | None = None
    failure_reason: str | None = None
    update: UpdateKind = UpdateKind.NONE
    pending_config: str | None = None  # the config an UpdateEndpoint moves to
    pending_variants: list[VariantState] = field(default_factory=list)
    pending_deployment: Deployment | None = None
    generation: int = 0  # bumped by every accepted change; the controller compares it

    def variant(self, name: str) -> VariantState | None:
        return next((v for v in self.variants if v.name == name), None)

    def provisioned(self, name: str) -> int | None:
        """A serverless variant's ProvisionedConcurrency in effect (0: none); None for a
        variant that is not serverless."""
        v = self.variant(name)
        if v is not None and v.provisioned_concurrency is not None:
            return v.provisioned_concurrency
        deployed = self.deployment.variants if self.deployment is not None else None
        dv = next((d for d in deployed or () if d.name == name), None)
        if dv is None or dv.serverless_memory_mb is None:
            return None
        return dv.provisioned_concurrency or 0

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arn": self.arn,
            "config_name": self.config_name,
            "status": self.status.value,
            "created": self.created,
            "modified": self.modified,
            "variants": [v.to_doc() for v in self.variants],
            "deployment": self.deployment.to_doc() if self.deployment else None,
            "pending_deployment": (
                self.pending_deployment.to_doc() if self.pending_deployment else None
            ),
            "failure_reason": self.failure_reason,
            "update": self.update.value,
            "pending_config": self.pending_config,
            "pending_variants": [v.to_doc() for v in self.pending_variants],
            "generation": self.generation,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Endpoint:
        return cls(
            name=doc["name"],
            arn=doc["arn"],
            config_name=doc["config_name"],
            status=EndpointStatus(doc["status"]),
            created=doc["created"],
            modified=doc["modified"],
            variants=[VariantState.from_doc(v) for v in doc["variants"]],
            deployment=Deployment.from_doc(doc.get("deployment")),
            pending_deployment=Deployment.from_doc(doc.get("pending_deployment")),
            failure_reason=doc.get("failure_reason"),
            update=UpdateKind(doc.get("update", "")),
            pending_config=doc.get("pending_config"),
            pending_variants=[VariantState.from_doc(v) for v in doc.get("pending_variants", [])],
            generation=doc.get("generation", 0),
        )
