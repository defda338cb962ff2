"""Application Auto Scaling (``X-Amz-Target: AnyScaleFrontendService.<Op>``) for SageMaker
variants: RegisterScalableTarget, DeregisterScalableTarget, DescribeScalableTargets,
PutScalingPolicy (target tracking; StepScaling, checked in step_scaling.py and run by
CloudWatch alarms), DescribeScalingPolicies, DeleteScalingPolicy,
DescribeScalingActivities.

Operations write targets and policies to the store (state/scaling.py); the scaler
(controller/scaling_loop.py) reads them every few seconds and acts. PascalCase stops here.
"""

from __future__ import annotations

import uuid
from typing import Any

from modelhost.api.operations.context import Context, Handler, Request, Response, ts
from modelhost.api.operations.listing import offset_of, token_for
from modelhost.api.operations.step_scaling import check_step_scaling
from modelhost.errors import LimitExceededException, ObjectNotFoundException, ValidationException
from modelhost.state.alarms import AlarmStore
from modelhost.state.records import Endpoint
from modelhost.state.scaling import ScalableTarget, ScalingPolicy, ScalingStore

NAMESPACE = "sagemaker"
INSTANCES = "sagemaker:variant:DesiredInstanceCount"
PROVISIONED = "sagemaker:variant:DesiredProvisionedConcurrency"
DIMENSIONS = (INSTANCES, PROVISIONED)
UTILIZATION = "ProvisionedConcurrencyUtilization"
PREDEFINED = {
    # predefined metric type -> (metrics.Recorder's metric, divided by the instance count)
    "SageMakerVariantInvocationsPerInstance": ("Invocations", True),
    # Serverless variants' DesiredProvisionedConcurrency: requests in flight / provisioned.
    "SageMakerVariantProvisionedConcurrencyUtilization": (UTILIZATION, False),
}
# CustomizedMetricSpecification names (namespace AWS/SageMaker) the scaler can measure.
CUSTOM = {
    "InvocationsPerInstance": ("Invocations", True),
    "Invocations": ("Invocations", False),
    # Async inference's backlog (jobs/async_inference.py): measured once its queue reports it.
    "ApproximateBacklogSizePerInstance": ("ApproximateBacklogSize", True),
    "ApproximateBacklogSize": ("ApproximateBacklogSize", False),
}
MAX_POLICIES_PER_TARGET = 50
TRACKING = "TargetTrackingScaling"
STEP = "StepScaling"


def _scaling(ctx: Context) -> ScalingStore:
    return ScalingStore(ctx.store)


def _namespace(req: Request) -> None:
    ns = req["ServiceNamespace"]
    if ns != NAMESPACE:
        raise ValidationException(
            f"Unsupported service namespace {ns}: modelhost scales SageMaker variants only."
        )


def _resource(ctx: Context, req: Request) -> tuple[Endpoint, str]:
    """The endpoint and variant a ResourceId names, checked against the dimension."""
    _namespace(req)
    rid, dim = req["ResourceId"], req["ScalableDimension"]
    if dim not in DIMENSIONS:
        raise ValidationException(
            f"Unsupported scalable dimension {dim} for service namespace sagemaker; "
            f"use one of {', '.join(DIMENSIONS)}."
        )
    parts = rid.split("/")
    if len(parts) != 4 or parts[0] != "endpoint" or parts[2] != "variant" or "" in parts:
        raise ValidationException(
            f"Unsupported resource ID {rid}: expected endpoint/<endpoint-name>/variant/<variant>."
        )
    ep = ctx.store.endpoint(parts[1])
    variant = ep.variant(parts[3]) if ep is not None else None
    if ep is None or variant is None:
        raise ValidationException(f"The target resource {rid} does not exist.")
    serverless = _serverless(ep, variant.name)
    if dim == INSTANCES and serverless:
        raise ValidationException(
            f"Variant {variant.name} of endpoint {ep.name} is serverless: scale its "
            f"{PROVISIONED} instead of {dim}."
        )
    if dim == PROVISIONED and not serverless:
        raise ValidationException(
            f"The scalable dimension {dim} applies to serverless variants only; "
            f"variant {variant.name} of endpoint {ep.name} runs on instances."
        )
    return ep, variant.name


def _serverless(ep: Endpoint, variant: str) -> bool:
    spec = ep.deployment.config.spec if ep.deployment else {}
    return any(
        pv.get("VariantName") == variant and "ServerlessConfig" in pv
        for pv in spec.get("ProductionVariants", [])
    )


def _max_concurrency(ep: Endpoint, variant: str) -> int:
    spec = ep.deployment.config.spec if ep.deployment else {}
    for pv in spec.get("ProductionVariants", []):
        if pv.get("VariantName") == variant and "ServerlessConfig" in pv:
            return int(pv["ServerlessConfig"]["MaxConcurrency"])
    return 0


def check_update(ctx: Context, ep: Endpoint, new_variants: list[dict[str, Any]]) -> None:
    """UpdateEndpoint may not remove an autoscaled variant or change its instance type (or
    make it serverless) while its scalable target is registered, as on SageMaker."""
    old = {
        pv["VariantName"]: pv
        for pv in (ep.deployment.config.spec["ProductionVariants"] if ep.deployment else [])
    }
    new = {pv["VariantName"]: pv for pv in new_variants}
    blocked = sorted(
        t.variant
        for t in _scaling(ctx).targets()
        if t.endpoint.lower() == ep.name.lower()
        and t.variant in old
        and (
            t.variant not in new
            or new[t.variant].get("InstanceType") != old[t.variant].get("InstanceType")
        )
    )
    if blocked:
        raise ValidationException(
            f"The variant(s) [{', '.join(blocked)}] of endpoint {ep.name} are registered with "
            "Application Auto Scaling: deregister their scalable targets before removing "
            "them or changing their instance type."
        )


def _is_async(ep: Endpoint) -> bool:
    return bool(ep.deployment and "AsyncInferenceConfig" in ep.deployment.config.spec)


def _not_registered(req: Request) -> ObjectNotFoundException:
    return ObjectNotFoundException(
        f"No scalable target registered for service namespace: {req['ServiceNamespace']}, "
        f"resource ID: {req['ResourceId']}, scalable dimension: {req['ScalableDimension']}"
    )


def register_scalable_target(ctx: Context, req: Request) -> Response:
    ep, _variant = _resource(ctx, req)
    scaling = _scaling(ctx)
    rid, dim = req["ResourceId"], req["ScalableDimension"]
    old = scaling.target(rid, dim)
    lo = req.get("MinCapacity", old.min if old else None)
    hi = req.get("MaxCapacity", old.max if old else None)
    if lo is None or hi is None:
        raise ValidationException(
            "MinCapacity and MaxCapacity are required when registering a new scalable target."
        )
    if lo > hi:
        raise ValidationException(
            f"Minimum capacity {lo} cannot be greater than maximum capacity {hi}."
        )
    if lo < 0:
        raise ValidationException("Minimum capacity cannot be less than 0.")
    if lo == 0 and dim == INSTANCES and not _is_async(ep):
        raise ValidationException(
            "Minimum capacity 0 is supported for asynchronous inference endpoints only; "
            f"endpoint {ep.name} serves real-time requests, so its minimum is 1."
        )
    if hi < 1:
        raise ValidationException("Maximum capacity must be at least 1.")
    if dim == PROVISIONED and hi > (most := _max_concurrency(ep, _variant)):
        raise ValidationException(
            f"Maximum capacity {hi} cannot be greater than the MaxConcurrency {most} of "
            f"serverless variant {_variant}: its ProvisionedConcurrency may not exceed it."
        )
    suspended = dict(old.suspended) if old else {}
    for key, value in (req.get("SuspendedState") or {}).items():
        suspended[key] = bool(value)
    target = ScalableTarget(
        namespace=NAMESPACE,
        resource_id=rid,
        dimension=dim,
        min=lo,
        max=hi,
        arn=old.arn if old else _target_arn(ctx),
        created=old.created if old else ctx.clock(),
        role_arn=req.get("RoleARN") or (old.role_arn if old else _role_arn(ctx)),
        suspended=suspended,
    )
    scaling.put_target(target)
    return {"ScalableTargetARN": target.arn}


def _target_arn(ctx: Context) -> str:
    a = ctx.arns
    return f"arn:aws:application-autoscaling:{a.region}:{a.account_id}:scalable-target/{_id()}"


def _role_arn(ctx: Context) -> str:
    return (
        f"arn:aws:iam::{ctx.arns.account_id}:role/aws-service-role/"
        "sagemaker.application-autoscaling.amazonaws.com/"
        "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
    )


def _id() -> str:
    return uuid.uuid4().hex[:28]


def deregister_scalable_target(ctx: Context, req: Request) -> Response:
    _namespace(req)
    scaling = _scaling(ctx)
    target = scaling.target(req["ResourceId"], req["ScalableDimension"])
    if target is None:
        raise ObjectNotFoundException(
            f"No scalable target found for service namespace: {req['ServiceNamespace']}, "
            f"resource ID: {req['ResourceId']}, scalable dimension: {req['ScalableDimension']}"
        )
    scaling.delete_target(target)
    return {}


def _target_out(t: ScalableTarget) -> dict[str, Any]:
    return {
        "ServiceNamespace": t.namespace,
        "ResourceId": t.resource_id,
        "ScalableDimension": t.dimension,
        "MinCapacity": t.min,
        "MaxCapacity": t.max,
        "RoleARN": t.role_arn,
        "CreationTime": ts(t.created),
        "SuspendedState": {
            "DynamicScalingInSuspended": t.suspended.get("DynamicScalingInSuspended", False),
            "DynamicScalingOutSuspended": t.suspended.get("DynamicScalingOutSuspended", False),
            "ScheduledScalingSuspended": t.suspended.get("ScheduledScalingSuspended", False),
        },
        "ScalableTargetARN": t.arn,
    }


def _page(items: list[Any], req: Request, default_max: int = 50) -> tuple[list[Any], str | None]:
    limit = req.get("MaxResults") or default_max
    if not 1 <= limit <= 50:
        raise ValidationException(
            f"1 validation error detected: Value '{limit}' at 'maxResults' failed to satisfy "
            "constraint: Member must have value less than or equal to 50"
        )
    start = offset_of(req.get("NextToken"))
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return chunk, token_for(start + limit) if more else None


def describe_scalable_targets(ctx: Context, req: Request) -> Response:
    _namespace(req)
    targets = _scaling(ctx).targets()
    if ids := req.get("ResourceIds"):
        targets = [t for t in targets if t.resource_id in ids]
    if dim := req.get("ScalableDimension"):
        targets = [t for t in targets if t.dimension == dim]
    chunk, token = _page(targets, req)
    out: dict[str, Any] = {"ScalableTargets": [_target_out(t) for t in chunk]}
    if token:
        out["NextToken"] = token
    return out


def put_scaling_policy(ctx: Context, req: Request) -> Response:
    _resource(ctx, req)
    scaling = _scaling(ctx)
    rid, dim, name = req["ResourceId"], req["ScalableDimension"], req["PolicyName"]
    if scaling.target(rid, dim) is None:
        raise _not_registered(req)
    kind = req.get("PolicyType", STEP)
    if kind == STEP:
        config = check_step_scaling(req)
        metric, per_instance, target = "", False, 0.0
    elif kind == TRACKING:
        config = _check_tracking(req)
        metric, per_instance = _metric(config)
        _check_dimension(dim, metric)
        target = float(config["TargetValue"])
    else:
        raise ValidationException(
            f"Unsupported policy type {kind} for service namespace sagemaker; use "
            f"{TRACKING} or {STEP}."
        )
    old = scaling.policy(rid, dim, name)
    others = [p for p in scaling.policies() if p.resource_id == rid and p.dimension == dim]
    if old is None and len(others) >= MAX_POLICIES_PER_TARGET:
        raise LimitExceededException(
            f"A scalable target can have at most {MAX_POLICIES_PER_TARGET} scaling policies."
        )
    uid = old.arn.split(":")[6] if old else str(uuid.uuid4())
    a = ctx.arns
    arn = (
        f"arn:aws:autoscaling:{a.region}:{a.account_id}:scalingPolicy:{uid}:"
        f"resource/{NAMESPACE}/{rid}:policyName/{name}"
    )
    alarms = [
        {
            "AlarmName": f"TargetTracking-{rid}-Alarm{side}-{uuid.uuid4()}",
            "AlarmARN": f"arn:aws:cloudwatch:{a.region}:{a.account_id}:alarm:"
            f"TargetTracking-{rid}-Alarm{side}-{uuid.uuid4()}",
        }
        for side in ("High", "Low")
        if kind == TRACKING
    ]
    policy = ScalingPolicy(
        name=name,
        arn=arn,
        namespace=NAMESPACE,
        resource_id=rid,
        dimension=dim,
        policy_type=kind,
        created=old.created if old else ctx.clock(),
        spec=config,
        metric=metric,
        per_instance=per_instance,
        target=target,
        scale_out_cooldown_s=float(config.get("ScaleOutCooldown", config.get("Cooldown", 300))),
        scale_in_cooldown_s=float(config.get("ScaleInCooldown", config.get("Cooldown", 300))),
        disable_scale_in=bool(config.get("DisableScaleIn", False)),
        alarms=old.alarms if old and old.policy_type == kind else alarms,
    )
    scaling.put_policy(policy)
    return {"PolicyARN": arn, "Alarms": [_alarm(x) for x in policy.alarms]}


def _check_tracking(req: Request) -> dict[str, Any]:
    if req.get("StepScalingPolicyConfiguration") is not None:
        raise ValidationException(
            "StepScalingPolicyConfiguration is not allowed for a TargetTrackingScaling policy."
        )
    config: dict[str, Any] | None = req.get("TargetTrackingScalingPolicyConfiguration")
    if config is None:
        raise ValidationException(
            "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling "
            "policy."
        )
    target = float(config["TargetValue"])
    if target <= 0:
        raise ValidationException(f"The target value {target} must be greater than 0.")
    for key in ("ScaleOutCooldown", "ScaleInCooldown"):
        if config.get(key, 0) < 0:
            raise ValidationException(f"{key} must be at least 0 seconds.")
    return config


def _check_dimension(dim: str, metric: str) -> None:
    """Provisioned concurrency tracks its utilization; instance counts track the rest."""
    if (dim == PROVISIONED) != (metric == UTILIZATION):
        wanted = (
            "SageMakerVariantProvisionedConcurrencyUtilization"
            if dim == PROVISIONED
            else "an invocation or backlog metric"
        )
        raise ValidationException(
            f"The metric of a target-tracking policy on scalable dimension {dim} must be {wanted}."
        )


def _alarm(a: dict[str, str]) -> dict[str, str]:
    return {"AlarmName": a["AlarmName"], "AlarmARN": a["AlarmARN"]}


def _metric(config: dict[str, Any]) -> tuple[str, bool]:
    predefined = config.get("PredefinedMetricSpecification")
    custom = config.get("CustomizedMetricSpecification")
    if (predefined is None) == (custom is None):
        raise ValidationException(
            "Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification "
            "must be given."
        )
    if predefined is not None:
        kind = predefined["PredefinedMetricType"]
        if kind not in PREDEFINED:
            raise ValidationException(
                f"Unsupported predefined metric type {kind} for service namespace sagemaker; "
                f"modelhost measures {', '.join(PREDEFINED)}."
            )
        return PREDEFINED[kind]
    assert custom is not None
    name, namespace = custom.get("MetricName"), custom.get("Namespace")
    if custom.get("Metrics"):
        raise ValidationException("Metric math (Metrics) is not supported by modelhost.")
    if not name or not namespace or not custom.get("Statistic"):
        raise ValidationException(
            "CustomizedMetricSpecification needs MetricName, Namespace and Statistic."
        )
    if namespace != "AWS/SageMaker" or name not in CUSTOM:
        raise ValidationException(
            f"Unsupported metric {namespace}/{name}: modelhost measures AWS/SageMaker "
            f"{', '.join(CUSTOM)}."
        )
    return CUSTOM[name]


def _policy_out(p: ScalingPolicy, alarms: AlarmStore) -> dict[str, Any]:
    """A step policy's Alarms are the CloudWatch alarms whose AlarmActions name it."""
    linked = p.alarms
    if p.policy_type == STEP:
        linked = [{"AlarmName": a.name, "AlarmARN": a.arn} for a in alarms.acting_on(p.arn)]
    config = (
        "StepScalingPolicyConfiguration"
        if p.policy_type == STEP
        else "TargetTrackingScalingPolicyConfiguration"
    )
    return {
        "PolicyARN": p.arn,
        "PolicyName": p.name,
        "ServiceNamespace": p.namespace,
        "ResourceId": p.resource_id,
        "ScalableDimension": p.dimension,
        "PolicyType": p.policy_type,
        config: p.spec,
        "Alarms": [_alarm(x) for x in linked],
        "CreationTime": ts(p.created),
    }


def describe_scaling_policies(ctx: Context, req: Request) -> Response:
    _namespace(req)
    policies = _scaling(ctx).policies()
    if names := req.get("PolicyNames"):
        policies = [p for p in policies if p.name in names]
    if rid := req.get("ResourceId"):
        policies = [p for p in policies if p.resource_id == rid]
    if dim := req.get("ScalableDimension"):
        policies = [p for p in policies if p.dimension == dim]
    chunk, token = _page(policies, req, default_max=10)
    alarms = AlarmStore(ctx.store)
    out: dict[str, Any] = {"ScalingPolicies": [_policy_out(p, alarms) for p in chunk]}
    if token:
        out["NextToken"] = token
    return out


def delete_scaling_policy(ctx: Context, req: Request) -> Response:
    _namespace(req)
    scaling = _scaling(ctx)
    rid, dim, name = req["ResourceId"], req["ScalableDimension"], req["PolicyName"]
    policy = scaling.policy(rid, dim, name)
    if policy is None:
        raise ObjectNotFoundException(
            f"No scaling policy found for service namespace: {req['ServiceNamespace']}, "
            f"resource ID: {rid}, scalable dimension: {dim}, policy name: {name}"
        )
    scaling.delete_policy(policy)
    return {}


def describe_scaling_activities(ctx: Context, req: Request) -> Response:
    _namespace(req)
    activities = _scaling(ctx).activities()
    if rid := req.get("ResourceId"):
        activities = [a for a in activities if a.resource_id == rid]
    if dim := req.get("ScalableDimension"):
        activities = [a for a in activities if a.dimension == dim]
    chunk, token = _page(activities, req)
    items = []
    for a in chunk:
        item: dict[str, Any] = {
            "ActivityId": a.activity_id,
            "ServiceNamespace": a.namespace,
            "ResourceId": a.resource_id,
            "ScalableDimension": a.dimension,
            "Description": a.description,
            "Cause": a.cause,
            "StartTime": ts(a.start),
            "StatusCode": a.status,
            "StatusMessage": a.message,
        }
        if a.end is not None:
            item["EndTime"] = ts(a.end)
        items.append(item)
    out: dict[str, Any] = {"ScalingActivities": items}
    if token:
        out["NextToken"] = token
    return out


HANDLERS: dict[str, Handler] = {
    "RegisterScalableTarget": register_scalable_target,
    "DeregisterScalableTarget": deregister_scalable_target,
    "DescribeScalableTargets": describe_scalable_targets,
    "PutScalingPolicy": put_scaling_policy,
    "DescribeScalingPolicies": describe_scaling_policies,
    "DeleteScalingPolicy": delete_scaling_policy,
    "DescribeScalingActivities": describe_scaling_activities,
}
