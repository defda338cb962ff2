"""CreateEndpointConfig, DescribeEndpointConfig, ListEndpointConfigs, DeleteEndpointConfig."""

from __future__ import annotations

from typing import Any

from modelhost.api.async_invocations import check_async_config
from modelhost.api.operations.context import Context, Request, Response, ts
from modelhost.api.operations.listing import page
from modelhost.api.operations.model_containers import check_variant_model
from modelhost.errors import ValidationException, already_exists, not_found
from modelhost.state.records import Resource
from modelhost.state.store import Duplicate

KIND = "endpoint_config"
_SPEC_KEYS = (
    "ProductionVariants",
    "ShadowProductionVariants",
    "DataCaptureConfig",
    "AsyncInferenceConfig",
    "KmsKeyId",
    "ExplainerConfig",
    "EnableNetworkIsolation",
    "ExecutionRoleArn",
    "VpcConfig",
)


def create_endpoint_config(ctx: Context, req: Request) -> Response:
    name = req["EndpointConfigName"]
    arn = ctx.arns.arn(KIND, name)
    if ctx.store.get(KIND, name) is not None:
        raise already_exists("endpoint configuration", arn)
    _check_variants(ctx, req["ProductionVariants"], "AsyncInferenceConfig" in req)
    if "AsyncInferenceConfig" in req:
        check_async_config(req["AsyncInferenceConfig"])
    spec = {k: req[k] for k in _SPEC_KEYS if k in req}
    try:
        ctx.store.add_resource(KIND, Resource(name, arn, ctx.clock(), spec))
    except Duplicate:
        raise already_exists("endpoint configuration", arn) from None
    if tags := req.get("Tags"):
        ctx.store.add_tags(arn, tags)
    return {"EndpointConfigArn": arn}


def _check_variants(
    ctx: Context, variants: list[dict[str, Any]], asynchronous: bool = False
) -> None:
    seen: set[str] = set()
    for pv in variants:
        vname = pv["VariantName"]
        if vname.lower() in seen:
            raise ValidationException(f"Variant name {vname} is used more than once.")
        seen.add(vname.lower())
        model = pv.get("ModelName")
        if model is None:
            raise ValidationException(f"ModelName is required for production variant {vname}.")
        doc = ctx.store.get("model", model)
        if doc is None:
            raise ValidationException(f'Could not find model "{ctx.arns.arn("model", model)}".')
        check_variant_model(vname, doc.get("spec", {}), "ServerlessConfig" in pv, asynchronous)
        _check_capacity(pv)


def _check_capacity(pv: dict[str, Any]) -> None:
    vname = pv["VariantName"]
    serverless = pv.get("ServerlessConfig")
    if serverless is not None and "InstanceType" in pv:
        raise ValidationException(
            f"Production variant {vname} specifies both InstanceType and ServerlessConfig."
        )
    if serverless is None and "InstanceType" not in pv:
        raise ValidationException(
            f"Production variant {vname} must specify either InstanceType or ServerlessConfig."
        )
    if serverless is None and "InitialInstanceCount" not in pv:
        raise ValidationException(
            f"InitialInstanceCount is required for production variant {vname}."
        )
    if serverless is not None:
        memory = serverless["MemorySizeInMB"]
        if memory % 1024:
            raise ValidationException(
                f"MemorySizeInMB {memory} of production variant {vname} is not one of 1024, "
                "2048, 3072, 4096, 5120 or 6144 (1 GB steps)."
            )
        provisioned = serverless.get("ProvisionedConcurrency")
        if provisioned is not None and provisioned > serverless["MaxConcurrency"]:
            raise ValidationException(
                f"ProvisionedConcurrency of production variant {vname} must not be greater "
                "than MaxConcurrency."
            )


def describe_endpoint_config(ctx: Context, req: Request) -> Response:
    name = req["EndpointConfigName"]
    res = ctx.store.resource(KIND, name)
    if res is None:
        raise not_found("endpoint configuration", ctx.arns.arn(KIND, name))
    return {
        "EndpointConfigName": res.name,
        "EndpointConfigArn": res.arn,
        "CreationTime": ts(res.created),
        **res.spec,
    }


def list_endpoint_configs(ctx: Context, req: Request) -> Response:
    items, token = page(
        ctx.store.resources(KIND),
        req,
        name=lambda r: r.name,
        created=lambda r: r.created,
        sort_keys={"Name": lambda r: r.name.lower(), "CreationTime": lambda r: r.created},
    )
    configs = [
        {"EndpointConfigName": r.name, "EndpointConfigArn": r.arn, "CreationTime": ts(r.created)}
        for r in items
    ]
    return {"EndpointConfigs": configs, **({"NextToken": token} if token else {})}


def delete_endpoint_config(ctx: Context, req: Request) -> Response:
    name = req["EndpointConfigName"]
    arn = ctx.arns.arn(KIND, name)
    if ctx.store.get(KIND, name) is None:
        raise not_found("endpoint configuration", arn)
    # As on SageMaker, a config in use may be deleted: endpoints keep the copy they were
    # created or updated with (their deployment), so they go on serving, and DescribeEndpoint
    # still names the config. The SageMaker Python SDK's Predictor.delete_endpoint() relies on
    # this: it deletes the endpoint's config first, then the endpoint.
    ctx.store.delete(KIND, name)
    ctx.store.delete_tags(arn)
    return {}


HANDLERS = {
    "CreateEndpointConfig": create_endpoint_config,
    "DescribeEndpointConfig": describe_endpoint_config,
    "ListEndpointConfigs": list_endpoint_configs,
    "DeleteEndpointConfig": delete_endpoint_config,
}
