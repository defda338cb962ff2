"""CreateEndpoint, DescribeEndpoint, ListEndpoints, UpdateEndpoint,
UpdateEndpointWeightsAndCapacities, DeleteEndpoint.

Each writes desired state and nudges the controller; the controller brings instances up and
moves the status on (Creating -> InService | Failed, Updating -> InService, Deleting -> gone).
"""

from __future__ import annotations

from typing import Any

from modelhost.api.async_invocations import check_async_update
from modelhost.api.operations.autoscaling import check_update as check_autoscaled
from modelhost.api.operations.context import Context, Request, Response, ts
from modelhost.api.operations.deployments import deployment_for, variants_from_config
from modelhost.api.operations.listing import page_tracked
from modelhost.errors import ValidationException, already_exists, not_found
from modelhost.state.records import (
    Deployment,
    Endpoint,
    EndpointStatus,
    Resource,
    UpdateKind,
    VariantState,
)
from modelhost.state.store import Duplicate

KIND = "endpoint"


def _config(ctx: Context, name: str) -> Resource:
    config = ctx.store.resource("endpoint_config", name)
    if config is None:
        arn = ctx.arns.arn("endpoint_config", name)
        raise ValidationException(f'Could not find endpoint configuration "{arn}".')
    return config


def _deployment(ctx: Context, config: Resource) -> Deployment:
    models: dict[str, Resource] = {}
    for pv in config.spec["ProductionVariants"]:
        model = ctx.store.resource("model", pv["ModelName"])
        if model is None:
            arn = ctx.arns.arn("model", pv["ModelName"])
            raise ValidationException(f'Could not find model "{arn}".')
        models[model.name.lower()] = model
    return deployment_for(config, models)


def _endpoint(ctx: Context, name: str) -> Endpoint:
    ep = ctx.store.endpoint(name)
    if ep is None:
        raise not_found("endpoint", ctx.arns.arn(KIND, name))
    return ep


def create_endpoint(ctx: Context, req: Request) -> Response:
    name = req["EndpointName"]
    arn = ctx.arns.arn(KIND, name)
    if ctx.store.get(KIND, name) is not None:
        raise already_exists("endpoint", arn)
    config = _config(ctx, req["EndpointConfigName"])
    deployment = _deployment(ctx, config)
    now = ctx.clock()
    ep = Endpoint(
        name=name,
        arn=arn,
        config_name=config.name,
        status=EndpointStatus.CREATING,
        created=now,
        modified=now,
        variants=variants_from_config(config),
        deployment=deployment,
    )
    try:
        ctx.store.add_endpoint(ep)
    except Duplicate:
        raise already_exists("endpoint", arn) from None
    if tags := req.get("Tags"):
        ctx.store.add_tags(arn, tags)
    ctx.wake()
    return {"EndpointArn": arn}


def describe_endpoint(ctx: Context, req: Request) -> Response:
    ep = _endpoint(ctx, req["EndpointName"])
    out: dict[str, Any] = {
        "EndpointName": ep.name,
        "EndpointArn": ep.arn,
        "EndpointConfigName": ep.config_name,
        "ProductionVariants": _describe_variants(ep),
        "EndpointStatus": ep.status.value,
        "CreationTime": ts(ep.created),
        "LastModifiedTime": ts(ep.modified),
    }
    if ep.failure_reason:
        out["FailureReason"] = ep.failure_reason
    spec = ep.deployment.config.spec if ep.deployment else {}
    for key in ("AsyncInferenceConfig",):
        if key in spec:
            out[key] = spec[key]
    return out


def _describe_variants(ep: Endpoint) -> list[dict[str, Any]]:
    deployment = ep.deployment
    variant_specs = {
        pv["VariantName"]: pv
        for pv in (deployment.config.spec["ProductionVariants"] if deployment else [])
    }
    out = []
    for v in ep.variants:
        item: dict[str, Any] = {
            "VariantName": v.name,
            "DesiredWeight": v.desired_weight,
            "DesiredInstanceCount": v.desired_count,
        }
        if v.current_weight is not None:
            item["CurrentWeight"] = v.current_weight
        if v.current_count is not None:
            item["CurrentInstanceCount"] = v.current_count
        spec = variant_specs.get(v.name, {})
        if deployment is not None and "ModelName" in spec:
            model = deployment.models.get(spec["ModelName"].lower())
            if images := _images(model, deployment.config.created):
                item["DeployedImages"] = images
        if "ServerlessConfig" in spec:
            # Serverless variants have no instances to count: SageMaker shows their
            # configuration instead of Current/DesiredInstanceCount.
            item.pop("DesiredInstanceCount", None)
            item.pop("CurrentInstanceCount", None)
            item["CurrentServerlessConfig"] = item["DesiredServerlessConfig"] = _serverless(
                spec["ServerlessConfig"], ep.provisioned(v.name)
            )
        out.append(item)
    return out


def _serverless(config: dict[str, Any], provisioned: int | None) -> dict[str, Any]:
    """The config's ServerlessConfig with the ProvisionedConcurrency in effect (Application
    Auto Scaling changes it at once, so Current and Desired agree); none when it is 0."""
    out = {k: v for k, v in config.items() if k != "ProvisionedConcurrency"}
    if provisioned:
        out["ProvisionedConcurrency"] = provisioned
    return out


def _images(model: Resource | None, when: float) -> list[dict[str, Any]]:
    if model is None:
        return []
    containers = [model.spec["PrimaryContainer"]] if "PrimaryContainer" in model.spec else []
    containers += model.spec.get("Containers", [])
    return [
        {"SpecifiedImage": c["Image"], "ResolvedImage": c["Image"], "ResolutionTime": ts(when)}
        for c in containers
        if c.get("Image")
    ]


def list_endpoints(ctx: Context, req: Request) -> Response:
    items, token = page_tracked(ctx.store.endpoints(), req)
    summaries = [
        {
            "EndpointName": e.name,
            "EndpointArn": e.arn,
            "CreationTime": ts(e.created),
            "LastModifiedTime": ts(e.modified),
            "EndpointStatus": e.status.value,
        }
        for e in items
    ]
    return {"Endpoints": summaries, **({"NextToken": token} if token else {})}


def _require_in_service(ctx: Context, ep: Endpoint) -> None:
    if ep.status is not EndpointStatus.IN_SERVICE:
        raise ValidationException(
            f'Cannot update in-progress endpoint "{ep.arn}".'
            if ep.status is not EndpointStatus.FAILED
            else f'Cannot update failed endpoint "{ep.arn}". Delete it and create it again.'
        )


def update_endpoint(ctx: Context, req: Request) -> Response:
    name = req["EndpointName"]
    current = _endpoint(ctx, name)
    _require_in_service(ctx, current)
    config = _config(ctx, req["EndpointConfigName"])
    check_autoscaled(ctx, current, config.spec["ProductionVariants"])
    check_async_update(current, config.spec)
    variants = _updated_variants(current, config, req)
    deployment = _deployment(ctx, config)

    def change(ep: Endpoint) -> None:
        _require_in_service(ctx, ep)
        ep.status = EndpointStatus.UPDATING
        ep.update = UpdateKind.CONFIG
        ep.pending_config = config.name
        ep.pending_variants = variants
        ep.pending_deployment = deployment
        ep.failure_reason = None
        ep.modified = ctx.clock()
        ep.generation += 1

    ctx.store.update_endpoint(name, change)
    ctx.wake()
    return {"EndpointArn": current.arn}


def _updated_variants(ep: Endpoint, config: Resource, req: Request) -> list[VariantState]:
    fresh = variants_from_config(config)
    if not req.get("RetainAllVariantProperties"):
        return fresh
    excluded = {p["VariantPropertyType"] for p in req.get("ExcludeRetainedVariantProperties", [])}
    for v in fresh:
        old = ep.variant(v.name)
        if old is None:
            continue
        if "DesiredInstanceCount" not in excluded:
            v.desired_count = old.desired_count
        if "DesiredWeight" not in excluded:
            v.desired_weight = old.desired_weight
    return fresh


def update_endpoint_weights_and_capacities(ctx: Context, req: Request) -> Response:
    name = req["EndpointName"]
    current = _endpoint(ctx, name)
    _require_in_service(ctx, current)
    wanted = req["DesiredWeightsAndCapacities"]
    unknown = [d["VariantName"] for d in wanted if current.variant(d["VariantName"]) is None]
    if unknown:
        raise ValidationException(
            f"The variant name(s) [{', '.join(unknown)}] is/are not present in endpoint {name}."
        )
    for d in wanted:
        if "DesiredWeight" not in d and "DesiredInstanceCount" not in d:
            raise ValidationException(
                f"Specify DesiredWeight or DesiredInstanceCount for variant {d['VariantName']}."
            )

    def change(ep: Endpoint) -> None:
        _require_in_service(ctx, ep)
        for d in wanted:
            v = ep.variant(d["VariantName"])
            assert v is not None
            v.desired_weight = float(d.get("DesiredWeight", v.desired_weight))
            v.desired_count = int(d.get("DesiredInstanceCount", v.desired_count))
        ep.status = EndpointStatus.UPDATING
        ep.update = UpdateKind.CAPACITY
        ep.modified = ctx.clock()
        ep.generation += 1

    ctx.store.update_endpoint(name, change)
    ctx.wake()
    return {"EndpointArn": current.arn}


def delete_endpoint(ctx: Context, req: Request) -> Response:
    name = req["EndpointName"]
    arn = ctx.arns.arn(KIND, name)

    def change(ep: Endpoint) -> bool:
        ep.status = EndpointStatus.DELETING
        ep.modified = ctx.clock()
        ep.generation += 1
        return True

    if ctx.store.update_endpoint(name, change) is None:
        raise not_found("endpoint", arn)
    ctx.wake()
    return {}


HANDLERS = {
    "CreateEndpoint": create_endpoint,
    "DescribeEndpoint": describe_endpoint,
    "ListEndpoints": list_endpoints,
    "UpdateEndpoint": update_endpoint,
    "UpdateEndpointWeightsAndCapacities": update_endpoint_weights_and_capacities,
    "DeleteEndpoint": delete_endpoint,
}
