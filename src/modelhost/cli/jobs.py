"""``modelhost transform`` (create a transform job and follow it with a progress bar) and
``modelhost jobs`` (list transform jobs): boto3 against a running server."""

from __future__ import annotations

import json
import time
import urllib.error
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from botocore.exceptions import BotoCoreError
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelhost.cli._aws import Server, UrlOpt, console, err, fail, reporting

POLL_S = 0.5
FINAL = {"Completed", "Failed", "Stopped"}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class Split(StrEnum):
    NONE = "None"
    LINE = "Line"
    RECORDIO = "RecordIO"
    TFRECORD = "TFRecord"


class Strategy(StrEnum):
    MULTI = "MultiRecord"
    SINGLE = "SingleRecord"


def register(app: typer.Typer) -> None:
    app.command()(transform)
    app.command()(jobs)


def location(text: str) -> str:
    """An s3:// or file:// URL as given; a local path made absolute (a directory keeps its
    trailing slash, so that its files are the input)."""
    if text.startswith(("s3://", "file://")):
        return text
    path = str(Path(text).expanduser().resolve())
    return path + "/" if text.endswith("/") or Path(path).is_dir() else path


def job_request(
    name: str,
    model: str,
    source: str,
    output: str,
    *,
    split: Split,
    strategy: Strategy | None,
    instance_count: int,
    instance_type: str,
    content_type: str | None,
    accept: str | None,
    max_payload: int | None,
    max_concurrent: int | None,
    gzip: bool,
) -> dict[str, Any]:
    tin: dict[str, Any] = {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": source}},
        "SplitType": split.value,
        "CompressionType": "Gzip" if gzip else "None",
    }
    if content_type:
        tin["ContentType"] = content_type
    tout: dict[str, Any] = {
        "S3OutputPath": output,
        "AssembleWith": "Line" if split is Split.LINE else "None",
    }
    if accept:
        tout["Accept"] = accept
    req: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": model,
        "TransformInput": tin,
        "TransformOutput": tout,
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    }
    if strategy is not None:
        req["BatchStrategy"] = strategy.value
    if max_payload is not None:
        req["MaxPayloadInMB"] = max_payload
    if max_concurrent is not None:
        req["MaxConcurrentTransforms"] = max_concurrent
    return req


def transform(
    model: Annotated[str, typer.Argument(help="Model name (CreateModel).")],
    input_path: Annotated[str, typer.Argument(metavar="INPUT", help="s3:// prefix or path.")],
    output_path: Annotated[str, typer.Argument(metavar="OUTPUT", help="s3:// prefix or path.")],
    split_type: Annotated[Split, typer.Option(help="How records are split.")] = Split.LINE,
    strategy: Annotated[Strategy | None, typer.Option(help="BatchStrategy.")] = None,
    instance_count: Annotated[int, typer.Option(min=1, help="Instances.")] = 1,
    instance_type: Annotated[str, typer.Option(help="Instance type.")] = "ml.m5.large",
    content_type: Annotated[str | None, typer.Option(help="ContentType of the input.")] = None,
    accept: Annotated[str | None, typer.Option(help="Accept.")] = None,
    max_payload: Annotated[int | None, typer.Option(help="MaxPayloadInMB (0-100).")] = None,
    max_concurrent: Annotated[int | None, typer.Option(help="MaxConcurrentTransforms.")] = None,
    gzip: Annotated[bool, typer.Option(help="The input files are gzip-compressed.")] = False,
    name: Annotated[str | None, typer.Option(help="Job name [MODEL-<time>].")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = True,
    timeout: Annotated[
        float, typer.Option(help="Stop following after this many seconds (the job goes on).")
    ] = 24 * 3600.0,
    url: UrlOpt = None,
) -> None:
    """Transform every file under INPUT with MODEL into OUTPUT (a batch transform job)."""
    job = name or f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"[:63]
    server = Server.from_options(url)
    req = job_request(
        job,
        model,
        location(input_path),
        location(output_path),
        split=split_type,
        strategy=strategy,
        instance_count=instance_count,
        instance_type=instance_type,
        content_type=content_type,
        accept=accept,
        max_payload=max_payload,
        max_concurrent=max_concurrent,
        gzip=gzip,
    )
    with reporting(server):
        sm = server.sagemaker()
        sm.create_transform_job(**req)
        err.print(f"Transform job [bold]{escape(job)}[/bold] started.", highlight=False)
        if not wait:
            return
        desc = _follow(server, sm, job, timeout)
    status = desc["TransformJobStatus"]
    if status != "Completed":
        fail(f"Transform job {job} {status}: {desc.get('FailureReason', '')}".rstrip(": "))
    where = escape(req["TransformOutput"]["S3OutputPath"])
    err.print(f"[green]Completed[/green]: outputs in {where}")


def _progress(server: Server, job: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(server.get(f"/modelhost/transform-jobs/{job}/progress"))
        return data
    except (OSError, ValueError, urllib.error.HTTPError, BotoCoreError):
        return {}


def _follow(server: Server, sm: Any, job: str, timeout: float) -> dict[str, Any]:
    """A progress bar (files, records, records/s) until the job ends (its description), or
    until ``timeout`` seconds have passed (a failure; the job goes on)."""
    started = time.monotonic()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.fields[files]} files"),
        TextColumn("{task.fields[records]} records ({task.fields[rate]}/s)"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(job, total=None, files="?", records=0, rate="0")
        while True:
            # the status first: progress read after a final status is the final progress
            desc: dict[str, Any] = sm.describe_transform_job(TransformJobName=job)
            p = _progress(server, job)
            records = int(p.get("RecordsDone") or 0)
            total = p.get("FilesTotal")
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(
                task,
                completed=int(p.get("FilesDone") or 0),
                total=total,
                files="?" if total is None else total,
                records=records,
                rate=f"{records / elapsed:,.0f}",
            )
            if desc["TransformJobStatus"] in FINAL:
                return desc
            if time.monotonic() - started > timeout:
                status = desc["TransformJobStatus"]
                fail(f"Transform job {job} is still {status} after {timeout:.0f} s.")
            time.sleep(POLL_S)


def _status(status: str) -> str:
    colour = {"Completed": "green", "Failed": "red", "Stopped": "red"}.get(status, "yellow")
    return f"[{colour}]{status}[/{colour}]"


def jobs(as_json: JsonOpt = False, url: UrlOpt = None) -> None:
    """List transform jobs: status, times, failure reason."""
    server = Server.from_options(url)
    with reporting(server):
        sm = server.sagemaker()
        pages = sm.get_paginator("list_transform_jobs").paginate(SortBy="CreationTime")
        rows: list[dict[str, Any]] = [
            {
                "name": s["TransformJobName"],
                "status": s["TransformJobStatus"],
                "created": s["CreationTime"].isoformat(),
                "ended": s["TransformEndTime"].isoformat() if "TransformEndTime" in s else None,
                "failure_reason": s.get("FailureReason"),
            }
            for page in pages
            for s in page["TransformJobSummaries"]
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        err.print("No transform jobs. Start one with `modelhost transform MODEL INPUT OUTPUT`.")
        return
    table = Table()
    for title in ("Name", "Status", "Created", "Ended"):
        table.add_column(title, no_wrap=True)
    table.add_column("Failure reason", overflow="fold")
    for r in rows:
        table.add_row(
            escape(r["name"]),
            _status(r["status"]),
            r["created"][:19].replace("T", " "),
            (r["ended"] or "-")[:19].replace("T", " "),
            f"[red]{escape(r['failure_reason'])}[/red]" if r["failure_reason"] else "",
        )
    console.print(table)
