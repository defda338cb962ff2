"""AddTags, ListTags, DeleteTags."""

from __future__ import annotations

from modelhost.api.operations.context import Context, Request, Response
from modelhost.api.operations.listing import offset_of, token_for
from modelhost.errors import ResourceLimitExceeded, ValidationException

MAX_TAGS = 50


def _require_resource(ctx: Context, arn: str) -> str:
    """The resource's canonical ARN (names are case-insensitive; ARNs lower-case them)."""
    parsed = ctx.arns.parse(arn)
    if parsed is None or ctx.store.get(*parsed) is None:
        raise ValidationException(f'Could not find resource "{arn}".')
    return ctx.arns.arn(*parsed)


def add_tags(ctx: Context, req: Request) -> Response:
    arn = _require_resource(ctx, req["ResourceArn"])
    existing = {t["Key"] for t in ctx.store.list_tags(arn)}
    new_keys = {t["Key"] for t in req["Tags"]} - existing
    if len(existing) + len(new_keys) > MAX_TAGS:
        raise ResourceLimitExceeded(f"A resource can have at most {MAX_TAGS} tags.")
    ctx.store.add_tags(arn, req["Tags"])
    return {"Tags": req["Tags"]}


def list_tags(ctx: Context, req: Request) -> Response:
    arn = _require_resource(ctx, req["ResourceArn"])
    items = ctx.store.list_tags(arn)
    start = offset_of(req.get("NextToken"))
    size = req.get("MaxResults") or 50
    out: Response = {"Tags": items[start : start + size]}
    if start + size < len(items):
        out["NextToken"] = token_for(start + size)
    return out


def delete_tags(ctx: Context, req: Request) -> Response:
    arn = _require_resource(ctx, req["ResourceArn"])
    ctx.store.delete_tags(arn, req["TagKeys"])
    return {}


HANDLERS = {"AddTags": add_tags, "ListTags": list_tags, "DeleteTags": delete_tags}
