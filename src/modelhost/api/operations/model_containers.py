"""CreateModel's rules for models with several containers: serial inference pipelines
(``InferenceExecutionConfig.Mode`` Serial, the default) and multi-container endpoints (Direct).
The botocore model already bounds the list (at most 15) and each hostname's spelling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modelhost.errors import ValidationException

DIRECT = "Direct"
SERIAL = "Serial"


def check_containers(req: Mapping[str, object], containers: Sequence[Mapping[str, object]]) -> None:
    """Raise ValidationException for a combination SageMaker refuses; changes nothing."""
    config = req.get("InferenceExecutionConfig")
    mode = config.get("Mode") if isinstance(config, Mapping) else None
    if mode == DIRECT and req.get("Containers") is None:
        raise ValidationException(
            "InferenceExecutionConfig Mode Direct is only supported for a model with "
            "Containers; this model has a PrimaryContainer."
        )
    if mode == DIRECT:
        missing = [i for i, c in enumerate(containers, 1) if not c.get("ContainerHostname")]
        if missing:
            raise ValidationException(
                "ContainerHostname must be specified for every container when "
                "InferenceExecutionConfig Mode is Direct; container(s) "
                f"{', '.join(map(str, missing))} have none."
            )
    seen: set[str] = set()
    for c in containers:
        hostname = c.get("ContainerHostname")
        if isinstance(hostname, str):
            if hostname.lower() in seen:
                raise ValidationException(
                    f"ContainerHostname {hostname} is used by more than one container; "
                    "container hostnames must be unique within a model."
                )
            seen.add(hostname.lower())
    multi = sum(1 for c in containers if c.get("Mode") == "MultiModel")
    if len(containers) > 1 and multi > 1:
        raise ValidationException(
            f"An inference pipeline can have at most one container with Mode MultiModel; "
            f"this model has {multi}."
        )


def check_variant_model(
    variant: str, spec: Mapping[str, object], serverless: bool, asynchronous: bool = False
) -> None:
    """CreateEndpointConfig: a serverless variant serves one container only, and an
    asynchronous endpoint cannot name a container (InvokeEndpointAsync has no
    TargetContainerHostname), so it takes no Direct model."""
    containers = spec.get("Containers")
    several = isinstance(containers, list) and len(containers) > 1
    if serverless and several:
        raise ValidationException(
            f"Production variant {variant} is serverless; serverless endpoints do not support "
            "models with multiple containers (inference pipelines or Direct invocation)."
        )
    config = spec.get("InferenceExecutionConfig")
    if asynchronous and several and isinstance(config, Mapping) and config.get("Mode") == DIRECT:
        raise ValidationException(
            f"Production variant {variant} uses a Direct multi-container model; asynchronous "
            "inference endpoints support one container or a serial inference pipeline."
        )
