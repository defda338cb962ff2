"""CreateModel, DescribeModel, ListModels, DeleteModel."""

from __future__ import annotations

from modelhost.api.operations.context import Context, Request, Response, ts
from modelhost.api.operations.listing import page
from modelhost.api.operations.model_containers import check_containers
from modelhost.errors import ValidationException, already_exists, not_found
from modelhost.state.records import Resource
from modelhost.state.store import Duplicate

KIND = "model"
_SPEC_KEYS = (
    "PrimaryContainer",
    "Containers",
    "InferenceExecutionConfig",
    "ExecutionRoleArn",
    "VpcConfig",
    "EnableNetworkIsolation",
)


def create_model(ctx: Context, req: Request) -> Response:
    name = req["ModelName"]
    arn = ctx.arns.arn(KIND, name)
    containers = _containers(req)
    if ctx.store.get(KIND, name) is not None:
        raise already_exists("model", arn)
    check_containers(req, containers)
    for container in containers:
        _check_container(container)
        ctx.check_model_data(container)
    spec = {k: req[k] for k in _SPEC_KEYS if k in req}
    try:
        ctx.store.add_resource(KIND, Resource(name, arn, ctx.clock(), spec))
    except Duplicate:
        raise already_exists("model", arn) from None
    if tags := req.get("Tags"):
        ctx.store.add_tags(arn, tags)
    return {"ModelArn": arn}


def _containers(req: Request) -> list[dict[str, object]]:
    primary, containers = req.get("PrimaryContainer"), req.get("Containers")
    if primary is not None and containers is not None:
        raise ValidationException("Specify either PrimaryContainer or Containers, not both.")
    if primary is None and not containers:
        raise ValidationException("Either PrimaryContainer or Containers must be specified.")
    return [primary] if primary is not None else list(containers or [])


def _check_container(container: dict[str, object]) -> None:
    url = container.get("ModelDataUrl")
    if url is not None and "ModelDataSource" in container:
        raise ValidationException("Specify either ModelDataUrl or ModelDataSource, not both.")
    if isinstance(url, str) and not url.startswith(("s3://", "https://", "file://", "/")):
        raise ValidationException(
            f"ModelDataUrl {url!r} must be an s3:// URL, a file:// URL or an absolute path."
        )


def describe_model(ctx: Context, req: Request) -> Response:
    name = req["ModelName"]
    res = ctx.store.resource(KIND, name)
    if res is None:
        raise not_found("model", ctx.arns.arn(KIND, name))
    return {"ModelName": res.name, "ModelArn": res.arn, "CreationTime": ts(res.created), **res.spec}


def list_models(ctx: Context, req: Request) -> Response:
    items, token = page(
        ctx.store.resources(KIND),
        req,
        name=lambda r: r.name,
        created=lambda r: r.created,
        sort_keys={"Name": lambda r: r.name.lower(), "CreationTime": lambda r: r.created},
    )
    models = [
        {"ModelName": r.name, "ModelArn": r.arn, "CreationTime": ts(r.created)} for r in items
    ]
    return {"Models": models, **({"NextToken": token} if token else {})}


def delete_model(ctx: Context, req: Request) -> Response:
    name = req["ModelName"]
    arn = ctx.arns.arn(KIND, name)
    if not ctx.store.delete(KIND, name):
        raise not_found("model", arn)
    ctx.store.delete_tags(arn)
    return {}


HANDLERS = {
    "CreateModel": create_model,
    "DescribeModel": describe_model,
    "ListModels": list_models,
    "DeleteModel": delete_model,
}
