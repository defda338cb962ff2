"""CreateTransformJob, DescribeTransformJob, ListTransformJobs, StopTransformJob.

Create validates what the botocore model cannot (the model and the input exist, payload and
concurrency limits, what modelhost supports), translates the request into the typed plan the
runner reads (PascalCase stops here), stores the job InProgress and nudges the jobs loop.
"""

from __future__ import annotations

from typing import Any

from modelhost.api.operations.context import Context, Request, Response, ts
from modelhost.api.operations.deployments import deployed_containers, execution_mode
from modelhost.api.operations.listing import page_tracked
from modelhost.errors import ResourceInUse, ValidationException, not_found
from modelhost.jobs.dataprocessing import FilterError
from modelhost.jobs.dataprocessing import check as check_filter
from modelhost.jobs.files import NoInputs, check_inputs
from modelhost.state.store import Duplicate
from modelhost.state.transform_jobs import (
    FINAL,
    KIND,
    TransformJob,
    TransformPlan,
    TransformStatus,
    add_job,
    all_jobs,
    get_job,
    update_job,
)

MAX_PAYLOAD_MB = 100
_SCHEMES = ("s3://", "file://", "/")


def create_transform_job(ctx: Context, req: Request) -> Response:
    name = req["TransformJobName"]
    arn = ctx.arns.arn(KIND, name)
    if ctx.store.get(KIND, name) is not None:
        raise _in_use(arn)
    plan = _plan(ctx, req)
    if ctx.objects is not None:
        try:
            check_inputs(ctx.objects, plan.input_uri, plan.manifest)
        except NoInputs as exc:
            raise ValidationException(str(exc)) from None
    now = ctx.clock()
    job = TransformJob(name, arn, TransformStatus.IN_PROGRESS, now, now, req, plan)
    job.request = {k: v for k, v in req.items() if k != "Tags"}
    try:
        add_job(ctx.store, job)
    except Duplicate:
        raise _in_use(arn) from None
    if tags := req.get("Tags"):
        ctx.store.add_tags(arn, tags)
    ctx.wake()
    return {"TransformJobArn": arn}


def _in_use(arn: str) -> ResourceInUse:
    return ResourceInUse(
        "Transform job names must be unique within an AWS account and region, and a transform "
        f"job with this name already exists ({arn})"
    )


def _plan(ctx: Context, req: Request) -> TransformPlan:
    model = ctx.store.resource("model", req["ModelName"])
    if model is None:
        arn = ctx.arns.arn("model", req["ModelName"])
        raise ValidationException(f'Could not find model "{arn}".')
    containers = deployed_containers(model.spec)
    if len(containers) > 1 and execution_mode(model.spec) != "Serial":
        raise ValidationException(
            f"Model {model.name} is a Direct multi-container model; a transform job needs a "
            "model with one container or a serial inference pipeline."
        )
    _check_limits(req)
    tin, tout, res = req["TransformInput"], req["TransformOutput"], req["TransformResources"]
    source = tin["DataSource"]["S3DataSource"]
    if source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
        raise ValidationException(
            f"S3DataType {source['S3DataType']} is not supported by modelhost; use S3Prefix or "
            "ManifestFile."
        )
    for what, uri in (("S3Uri", source["S3Uri"]), ("S3OutputPath", tout["S3OutputPath"])):
        if not uri.startswith(_SCHEMES):
            raise ValidationException(
                f"{what} {uri!r} must be an s3:// URL, a file:// URL or an absolute path."
            )
    client = req.get("ModelClientConfig", {})
    processing = req.get("DataProcessing", {})
    return TransformPlan(
        model_name=model.name,
        container=containers[0],
        pipeline=containers[1:],
        instance_type=res["InstanceType"],
        instance_count=res["InstanceCount"],
        input_uri=source["S3Uri"],
        manifest=source["S3DataType"] == "ManifestFile",
        output_path=tout["S3OutputPath"],
        content_type=tin.get("ContentType"),
        gzip=tin.get("CompressionType", "None") == "Gzip",
        split=tin.get("SplitType", "None"),
        accept=tout.get("Accept"),
        assemble_lines=tout.get("AssembleWith", "None") == "Line",
        max_concurrent=req.get("MaxConcurrentTransforms") or None,
        max_payload_mb=req.get("MaxPayloadInMB"),
        strategy=req.get("BatchStrategy"),
        timeout_s=float(client.get("InvocationsTimeoutInSeconds", 600)),
        retries=int(client.get("InvocationsMaxRetries", 3)),
        environment=dict(req.get("Environment", {})),
        input_filter=processing.get("InputFilter"),
        output_filter=processing.get("OutputFilter"),
        join_input=processing.get("JoinSource") == "Input",
    )


def _check_limits(req: Request) -> None:
    payload = req.get("MaxPayloadInMB")
    if payload is not None and payload > MAX_PAYLOAD_MB:
        raise ValidationException(
            f"1 validation error detected: Value '{payload}' at 'maxPayloadInMB' failed to "
            f"satisfy constraint: Member must have value less than or equal to {MAX_PAYLOAD_MB}"
        )
    concurrent = req.get("MaxConcurrentTransforms")
    if concurrent is not None and concurrent > MAX_PAYLOAD_MB:
        raise ValidationException(
            f"1 validation error detected: Value '{concurrent}' at 'maxConcurrentTransforms' "
            f"failed to satisfy constraint: Member must have value less than or equal to "
            f"{MAX_PAYLOAD_MB}"
        )
    if (concurrent or 1) * (6 if payload is None else payload) > MAX_PAYLOAD_MB:
        raise ValidationException(
            "MaxConcurrentTransforms * MaxPayloadInMB must not exceed 100 MB: "
            f"{concurrent or 1} * {6 if payload is None else payload} is more."
        )
    _check_processing(req)


def _check_processing(req: Request) -> None:
    processing = req.get("DataProcessing", {})
    wanted = processing.get("InputFilter") or processing.get("OutputFilter")
    if not wanted and processing.get("JoinSource") != "Input":
        return
    if req["TransformInput"].get("SplitType") != "Line":
        raise ValidationException(
            "DataProcessing (InputFilter, OutputFilter, JoinSource) needs SplitType Line "
            "in modelhost: filters and joins work record by record."
        )
    for key in ("InputFilter", "OutputFilter"):
        try:
            check_filter(processing.get(key))
        except FilterError as exc:
            raise ValidationException(f"{key}: {exc}") from None


def _job(ctx: Context, name: str) -> TransformJob:
    job = get_job(ctx.store, name)
    if job is None:
        raise not_found("transform job", ctx.arns.arn(KIND, name))
    return job


def describe_transform_job(ctx: Context, req: Request) -> Response:
    job = _job(ctx, req["TransformJobName"])
    out: dict[str, Any] = {**job.request}
    out |= {
        "TransformJobName": job.name,
        "TransformJobArn": job.arn,
        "TransformJobStatus": job.status.value,
        "CreationTime": ts(job.created),
    }
    if job.failure_reason:
        out["FailureReason"] = job.failure_reason
    if job.started is not None:
        out["TransformStartTime"] = ts(job.started)
    if job.ended is not None:
        out["TransformEndTime"] = ts(job.ended)
    return out


def list_transform_jobs(ctx: Context, req: Request) -> Response:
    items, token = page_tracked(all_jobs(ctx.store), req)
    summaries = []
    for j in items:
        item: dict[str, Any] = {
            "TransformJobName": j.name,
            "TransformJobArn": j.arn,
            "CreationTime": ts(j.created),
            "LastModifiedTime": ts(j.modified),
            "TransformJobStatus": j.status.value,
        }
        if j.ended is not None:
            item["TransformEndTime"] = ts(j.ended)
        if j.failure_reason:
            item["FailureReason"] = j.failure_reason
        summaries.append(item)
    return {"TransformJobSummaries": summaries, **({"NextToken": token} if token else {})}


def stop_transform_job(ctx: Context, req: Request) -> Response:
    name = req["TransformJobName"]
    job = _job(ctx, name)

    def change(j: TransformJob) -> str | None:
        if j.status in FINAL:
            return j.status.value
        if j.status is TransformStatus.IN_PROGRESS:
            j.status = TransformStatus.STOPPING
            j.modified = ctx.clock()
        return None

    final = update_job(ctx.store, name, change)
    if final is not None:
        raise ValidationException(
            f'Transform job "{job.arn}" has already ended with status {final}; it cannot be '
            "stopped."
        )
    ctx.wake()
    return {}


HANDLERS = {
    "CreateTransformJob": create_transform_job,
    "DescribeTransformJob": describe_transform_job,
    "ListTransformJobs": list_transform_jobs,
    "StopTransformJob": stop_transform_job,
}
