"""``modelhost scale ENDPOINT --min N --max M --target T``: a target-tracking policy in one
command (RegisterScalableTarget + PutScalingPolicy through the application-autoscaling API)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from modelhost.cli._aws import Server, UrlOpt, console, fail, reporting

DIMENSION = "sagemaker:variant:DesiredInstanceCount"
POLICY = "modelhost-invocations-per-instance"


def scale(
    endpoint: Annotated[str, typer.Argument(help="The endpoint to scale.")],
    min_count: Annotated[int, typer.Option("--min", help="Fewest instances.")] = 1,
    max_count: Annotated[int, typer.Option("--max", help="Most instances.")] = 4,
    target: Annotated[
        float,
        typer.Option(help="Invocations per instance per minute to keep each instance at."),
    ] = 70.0,
    variant: Annotated[str, typer.Option(help="The production variant.")] = "AllTraffic",
    scale_in_cooldown: Annotated[
        int, typer.Option(help="Seconds after any scaling before a scale-in.")
    ] = 300,
    scale_out_cooldown: Annotated[
        int, typer.Option(help="Seconds after a scale-out before another.")
    ] = 60,
    off: Annotated[bool, typer.Option("--off", help="Stop autoscaling this variant.")] = False,
    url: UrlOpt = None,
) -> None:
    """Scale a variant with traffic: a target-tracking policy on invocations per instance."""
    server = Server.from_options(url)
    resource = f"endpoint/{endpoint}/variant/{variant}"
    target_id = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource,
        "ScalableDimension": DIMENSION,
    }
    with reporting(server):
        aas: Any = server.autoscaling()
        if off:
            aas.deregister_scalable_target(**target_id)
            console.print(f"Autoscaling of {resource} is off; its instance count stays as is.")
            return
        if target <= 0:
            fail("--target must be greater than 0.")
        aas.register_scalable_target(**target_id, MinCapacity=min_count, MaxCapacity=max_count)
        aas.put_scaling_policy(
            PolicyName=POLICY,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": target,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": scale_in_cooldown,
                "ScaleOutCooldown": scale_out_cooldown,
            },
            **target_id,
        )
    console.print(
        f"{resource} scales between {min_count} and {max_count} instances, keeping each at "
        f"about {target:g} invocations a minute."
    )
