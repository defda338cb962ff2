"""Client commands (deploy, invoke, endpoints, models, delete): boto3 against a running server."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from botocore.exceptions import ClientError
from rich.markup import escape
from rich.table import Table

from modelhost.cli._aws import Server, UrlOpt, console, err, fail, is_missing, reporting
from modelhost.cli.async_cmds import invoke_async, queue
from modelhost.cli.deploy import POLL_S, deploy, is_deploy_name
from modelhost.cli.scale import scale

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

SCALING_ACTIVITIES = 500  # the most `modelhost endpoints` reads to find each latest


def register(app: typer.Typer) -> None:
    app.command()(deploy)
    app.command()(invoke)
    app.command()(endpoints)
    app.command()(models)
    app.command()(delete)
    app.command()(scale)
    app.command("invoke-async")(invoke_async)
    app.command("queue")(queue)


# --- invoke ------------------------------------------------------------------------------------


def _request_body(body: str | None, file: Path | None) -> bytes:
    if body is not None and file is not None:
        fail("Give --body or --file, not both.")
    if body is not None:
        return body.encode()
    if file is not None:
        try:
            return sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        except OSError as exc:
            fail(f"Cannot read {file}: {exc.strerror}")
    if sys.stdin.isatty():
        fail("Give the request body with --body TEXT, --file PATH, or on stdin.")
    return sys.stdin.buffer.read()


def invoke(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    body: Annotated[str | None, typer.Option(help="Request body text.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the body from a file ('-': stdin).")
    ] = None,
    content_type: Annotated[str, typer.Option(help="Content-Type.")] = "application/json",
    accept: Annotated[str | None, typer.Option(help="Accept.")] = None,
    variant: Annotated[str | None, typer.Option(help="TargetVariant.")] = None,
    url: UrlOpt = None,
) -> None:
    """Send one request to endpoint NAME; the response body goes to stdout as is."""
    payload = _request_body(body, file)
    server = Server.from_options(url)
    extra = {"Accept": accept} if accept else {}
    if variant:
        extra["TargetVariant"] = variant
    with reporting(server):
        resp = server.runtime().invoke_endpoint(
            EndpointName=name, Body=payload, ContentType=content_type, **extra
        )
        data = resp["Body"].read()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# --- endpoints and models ----------------------------------------------------------------------


def _when(value: datetime | None) -> str | None:
    return value.astimezone().isoformat(timespec="seconds") if value else None


def _endpoint_row(sm: SageMakerClient, name: str) -> dict[str, Any] | None:
    try:
        desc = sm.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if is_missing(exc):  # deleted since it was listed
            return None
        raise
    types = {}
    try:
        config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
        types = {v["VariantName"]: v.get("InstanceType") for v in config["ProductionVariants"]}
    except ClientError as exc:
        if not is_missing(exc):
            raise
    variants = [
        {
            "name": v["VariantName"],
            "instance_type": types.get(v["VariantName"]),
            "current_instance_count": v.get("CurrentInstanceCount"),
            "desired_instance_count": v.get("DesiredInstanceCount"),
            "current_weight": v.get("CurrentWeight"),
            "desired_weight": v.get("DesiredWeight"),
        }
        for v in desc.get("ProductionVariants", [])
    ]
    return {
        "name": desc["EndpointName"],
        "status": desc["EndpointStatus"],
        "config": desc["EndpointConfigName"],
        "variants": variants,
        "created": _when(desc.get("CreationTime")),
        "modified": _when(desc.get("LastModifiedTime")),
        "failure_reason": desc.get("FailureReason"),
    }


def _brief(reason: str) -> str:
    """A long failure reason (with log lines) as its first and last lines."""
    lines = [line for line in reason.splitlines() if line.strip()]
    return lines[0] if len(lines) < 3 else f"{lines[0]} ... {lines[-1].strip()}"


def _short(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _status(status: str) -> str:
    colour = {"InService": "green", "Failed": "red"}.get(status, "yellow")
    return f"[{colour}]{status}[/{colour}]"


def _endpoints_table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    for title in ("Name", "Status", "Variants (current/desired)", "Instance type", "Created"):
        table.add_column(title, no_wrap=True, min_width=len(title) if title == "Status" else None)
    table.add_column("Last scaling", overflow="fold")
    table.add_column("Failure reason", overflow="fold")
    for r in rows:
        variants = r["variants"]
        table.add_row(
            escape(r["name"]),
            _status(r["status"]),
            "\n".join(
                f"{escape(v['name'])} {_count(v['current_instance_count'])}/"
                f"{_count(v['desired_instance_count'])}"
                for v in variants
            ),
            "\n".join(escape(v["instance_type"] or "-") for v in variants),
            _short(r["created"]),
            "\n".join(_scaling_text(v.get("last_scaling")) for v in variants),
            f"[red]{escape(_brief(r['failure_reason']))}[/red]" if r["failure_reason"] else "",
        )
    return table


def _rows(
    url: str | None,
    operation: str,
    key: str,
    name_key: str,
    row: Callable[[SageMakerClient, str], dict[str, Any] | None],
) -> list[dict[str, Any]]:
    """Every resource a List operation names, sorted by name, described by ``row`` (those
    deleted in between are skipped)."""
    server = Server.from_options(url)
    with reporting(server):
        sm = server.sagemaker()
        paginator = sm.get_paginator(operation)  # type: ignore[call-overload]
        names = [item[name_key] for page in paginator.paginate(SortBy="Name") for item in page[key]]
        return [r for n in names if (r := row(sm, n)) is not None]


def endpoints(as_json: JsonOpt = False, url: UrlOpt = None) -> None:
    """List endpoints: status, variants with instance counts, instance types, the latest
    scaling activity of each variant."""
    rows = _rows(url, "list_endpoints", "Endpoints", "EndpointName", _endpoint_row)
    if rows:
        _add_scaling(Server.from_options(url), rows)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        err.print("No endpoints. Deploy one with `modelhost deploy DIR --name NAME`.")
    else:
        console.print(_endpoints_table(rows))


def _add_scaling(server: Server, rows: list[dict[str, Any]]) -> None:
    """Each variant's latest scaling activity (Application Auto Scaling), or None."""
    latest: dict[str, dict[str, Any]] = {}
    with reporting(server):
        aas: Any = server.autoscaling()
        pages = aas.get_paginator("describe_scaling_activities").paginate(
            ServiceNamespace="sagemaker", PaginationConfig={"MaxItems": SCALING_ACTIVITIES}
        )
        for page in pages:
            for a in page["ScalingActivities"]:
                seen = latest.get(a["ResourceId"])
                if seen is None or a["StartTime"] > seen["StartTime"]:
                    latest[a["ResourceId"]] = a
    for r in rows:
        for v in r["variants"]:
            a = latest.get(f"endpoint/{r['name']}/variant/{v['name']}")
            v["last_scaling"] = (
                None
                if a is None
                else {
                    "description": a["Description"],
                    "status": a["StatusCode"],
                    "cause": a["Cause"],
                    "start": _when(a["StartTime"]),
                }
            )


def _scaling_text(activity: dict[str, Any] | None) -> str:
    if activity is None:
        return "-"
    return (
        f"{_short(activity['start'])} {escape(activity['description'])} "
        f"({escape(activity['status'])})"
    )


def _model_row(sm: SageMakerClient, name: str) -> dict[str, Any] | None:
    try:
        desc = sm.describe_model(ModelName=name)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    containers = [desc["PrimaryContainer"]] if "PrimaryContainer" in desc else []
    containers += desc.get("Containers", [])
    return {
        "name": desc["ModelName"],
        "image": [c.get("Image") for c in containers],
        "model_data": [c.get("ModelDataUrl") for c in containers],
        "created": _when(desc.get("CreationTime")),
    }


def models(
    endpoint: Annotated[
        str | None, typer.Argument(help="With --loaded: the multi-model endpoint.")
    ] = None,
    loaded: Annotated[
        bool, typer.Option("--loaded", help="The models each instance of ENDPOINT holds.")
    ] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
) -> None:
    """List models: image, model data, creation time. With ENDPOINT --loaded: the models each
    instance of a multi-model endpoint holds, their size and last use."""
    if loaded or endpoint is not None:
        if endpoint is None or not loaded:
            fail("Use `modelhost models ENDPOINT --loaded`.")
        from modelhost.cli import loaded_models

        loaded_models.show(Server.from_options(url), endpoint, as_json)
        return
    rows = _rows(url, "list_models", "Models", "ModelName", _model_row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        err.print("No models.")
        return
    table = Table()
    table.add_column("Name", no_wrap=True)
    for title in ("Image", "Model data"):
        table.add_column(title, overflow="fold")
    table.add_column("Created", no_wrap=True)
    for r in rows:
        table.add_row(
            escape(r["name"]),
            "\n".join(escape(i or "(built-in)") for i in r["image"]),
            "\n".join(escape(d or "-") for d in r["model_data"]),
            _short(r["created"]),
        )
    console.print(table)


# --- delete ------------------------------------------------------------------------------------


def _deploy_named(sm: SageMakerClient, name: str) -> tuple[list[str], list[str]]:
    """The endpoint configurations and models named NAME or NAME-<timestamp> (deploy's names)."""
    configs = [
        c["EndpointConfigName"]
        for page in sm.get_paginator("list_endpoint_configs").paginate(NameContains=name[:40])
        for c in page["EndpointConfigs"]
        if is_deploy_name(name, c["EndpointConfigName"])
    ]
    found = [
        m["ModelName"]
        for page in sm.get_paginator("list_models").paginate(NameContains=name[:40])
        for m in page["Models"]
        if is_deploy_name(name, m["ModelName"])
    ]
    return configs, found


def _delete_endpoint(
    sm: SageMakerClient, name: str, wait: bool, timeout: float, missing_ok: bool
) -> bool:
    """DeleteEndpoint, then (with ``wait``) poll until it is gone; False when there was none."""
    try:
        sm.delete_endpoint(EndpointName=name)
    except ClientError as exc:
        if missing_ok and is_missing(exc):
            return False
        raise
    if not wait:
        return True
    deadline = time.monotonic() + timeout
    with err.status(f"Deleting endpoint {escape(name)} ..."):
        while True:
            try:
                sm.describe_endpoint(EndpointName=name)
            except ClientError as exc:
                if is_missing(exc):
                    return True
                raise
            if time.monotonic() > deadline:
                fail(f"Endpoint {name} is still there after {timeout:.0f} s.")
            time.sleep(POLL_S)


def delete(
    name: Annotated[str, typer.Argument(help="Endpoint name (with --model, a model's).")],
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also delete the endpoint configurations and models named NAME or "
            "NAME-<timestamp> (what `modelhost deploy` created).",
        ),
    ] = False,
    one_model: Annotated[
        bool, typer.Option("--model", help="NAME is a model: delete that model alone.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait until the endpoint is gone.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 120.0,
    url: UrlOpt = None,
) -> None:
    """Delete endpoint NAME (with --all, its configurations and models too; with --model,
    the model NAME alone)."""
    if one_model and all_:
        fail("--model and --all do not go together: --model deletes one model.")
    server = Server.from_options(url)
    with reporting(server):
        sm = server.sagemaker()
        if one_model:
            sm.delete_model(ModelName=name)
            err.print(f"Deleted model {name}", highlight=False)
            return
        if not all_:
            _delete_endpoint(sm, name, wait, timeout, missing_ok=False)
            err.print(f"Deleted endpoint {name}", highlight=False)
            return
        gone = _delete_endpoint(sm, name, True, timeout, missing_ok=True)
        deleted = [f"endpoint {name}"] if gone else []
        configs, found = _deploy_named(sm, name)
        for config in configs:
            sm.delete_endpoint_config(EndpointConfigName=config)
            deleted.append(f"endpoint configuration {config}")
        for model in found:
            sm.delete_model(ModelName=model)
            deleted.append(f"model {model}")
    if not deleted:
        fail(f"Nothing named {name} to delete.")
    err.print("Deleted " + ", ".join(deleted), highlight=False)
