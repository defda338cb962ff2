"""``modelhost deploy``: a model directory, model.tar.gz or s3:// URL to an InService endpoint.

The command does what a SageMaker user would do by hand: pack and upload the artifact, then
CreateModel, CreateEndpointConfig and CreateEndpoint (UpdateEndpoint when the endpoint exists),
and wait for the endpoint to reach a final status.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from botocore.exceptions import ClientError
from rich.markup import escape

from modelhost.cli._aws import DataOpt, Server, UrlOpt, err, fail, is_missing, reporting, settings
from modelhost.cli.objects import server_store
from modelhost.storage import s3_url

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

BUCKET = "modelhost-deployments"
POLL_S = 0.5
MAX_NAME = 63
STAMP_RE = r"\d{8}-\d{6}-\d{3}"  # what stamp() makes; `delete --all` recognises it
_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}


def stamp() -> str:
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"


def versioned(name: str, when: str) -> str:
    """``<name>-<timestamp>``, cut so it stays a valid SageMaker name."""
    room = MAX_NAME - len(when) - 1
    return f"{name[:room].rstrip('-')}-{when}"


def is_deploy_name(name: str, candidate: str) -> bool:
    """True for ``name`` and the ``<name>-<timestamp>`` names deploy makes for it."""
    if candidate == name:
        return True
    m = re.fullmatch(rf".+-({STAMP_RE})", candidate)
    return m is not None and versioned(name, m[1]) == candidate


# --- the artifact ------------------------------------------------------------------------------


def pack(model_dir: Path, dest: Path) -> Path:
    """model.tar.gz of a directory, paths relative to it, without __pycache__."""
    # Symbolic links are packed as the files they point to: the server refuses links in
    # archives (they could point anywhere), and a user's link is meant as its content.
    with tarfile.open(dest, "w:gz", dereference=True) as tar:
        for root, dirs, files in os.walk(model_dir, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            here = Path(root)
            for entry in [*dirs, *sorted(files)]:
                path = here / entry
                tar.add(path, path.relative_to(model_dir).as_posix(), recursive=False)
    return dest


def model_data_url(path: str, name: str, when: str, server: Server, data_dir: Path | None) -> str:
    """An s3:// URL as given, or where a local directory or tar.gz was uploaded."""
    if path.startswith("s3://"):
        return path
    local = Path(path).expanduser()
    if not local.exists():
        fail(f"{path} does not exist (give a model directory, a .tar.gz or an s3:// URL).")
    if local.is_file() and not local.name.endswith((".tar.gz", ".tgz")):
        fail(
            f"{path} is not a .tar.gz archive (give a model directory, a .tar.gz or an s3:// URL)."
        )
    target = server_store(server, data_dir)
    key = f"{name}/{when}/model.tar.gz"
    with target.writing():
        target.store.ensure_bucket(BUCKET)
        if local.is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                target.store.upload_file(pack(local, Path(tmp) / "model.tar.gz"), BUCKET, key)
        else:
            target.store.upload_file(local, BUCKET, key)
    url = s3_url(BUCKET, key)
    err.print(f"Uploaded {escape(path)} to {url} ({escape(target.where)})", highlight=False)
    return url


# --- control-plane calls -----------------------------------------------------------------------


def _describe(sm: SageMakerClient, name: str) -> dict[str, Any] | None:
    try:
        return dict(sm.describe_endpoint(EndpointName=name))
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def _exists(call: Any, **kwargs: str) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        if is_missing(exc):
            return False
        raise
    return True


def _free_name(name: str, when: str, taken: bool) -> str:
    return versioned(name, when) if taken else name


def _wait_gone(sm: SageMakerClient, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with err.status(f"Deleting failed endpoint {escape(name)} ..."):
        while _describe(sm, name) is not None:
            if time.monotonic() > deadline:
                fail(f"Endpoint {name} was not deleted within {timeout:.0f} s.")
            time.sleep(POLL_S)


def _create_resources(
    sm: SageMakerClient, name: str, container: dict[str, Any], variant: dict[str, Any], when: str
) -> str:
    """CreateModel + CreateEndpointConfig under free names; returns the config name."""
    model = _free_name(name, when, _exists(sm.describe_model, ModelName=name))
    sm.create_model(ModelName=model, PrimaryContainer=container)  # type: ignore[arg-type]
    config = _free_name(name, when, _exists(sm.describe_endpoint_config, EndpointConfigName=name))
    sm.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[{**variant, "ModelName": model}],  # type: ignore[list-item]
    )
    err.print(f"Created model {model} and endpoint configuration {config}", highlight=False)
    return config


def _start(sm: SageMakerClient, name: str, config: str, timeout: float) -> None:
    current = _describe(sm, name)
    if current is not None and current["EndpointStatus"] == "Failed":
        err.print(f"Endpoint {name} is Failed: deleting it to create it again.", highlight=False)
        sm.delete_endpoint(EndpointName=name)
        _wait_gone(sm, name, timeout)
        current = None
    if current is None:
        sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
        err.print(f"Creating endpoint {name}", highlight=False)
    else:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
        err.print(f"Updating endpoint {name} to {config}", highlight=False)


def wait_final(sm: SageMakerClient, name: str, timeout: float) -> dict[str, Any]:
    """Poll DescribeEndpoint, showing the status, until it leaves the in-progress states."""
    started = time.monotonic()
    with err.status("") as shown:
        while True:
            desc = _describe(sm, name)
            if desc is None:
                fail(f"Endpoint {name} disappeared (was it deleted?).")
            status = desc["EndpointStatus"]
            elapsed = time.monotonic() - started
            if status not in _BUSY:
                return desc
            if elapsed > timeout:
                fail(
                    f"Endpoint {name} is still {status} after {timeout:.0f} s; "
                    "follow it with `modelhost endpoints` and `modelhost logs`."
                )
            shown.update(f"Endpoint [bold]{escape(name)}[/bold]: {status} ({elapsed:.0f} s)")
            time.sleep(POLL_S)


def _report(server: Server, desc: dict[str, Any], config: str) -> None:
    name, status = desc["EndpointName"], escape(desc["EndpointStatus"])
    reason = desc.get("FailureReason")
    if status == "InService" and (reason or desc["EndpointConfigName"] != config):
        err.print(
            f"[red]Update of {escape(name)} failed; it still serves configuration "
            f"{escape(desc['EndpointConfigName'])}.[/red]"
        )
    elif status != "InService":
        err.print(f"[red]Deployment of {escape(name)} failed: the endpoint is {status}.[/red]")
    if status != "InService" or reason or desc["EndpointConfigName"] != config:
        if reason:
            err.print(f"[red]{escape(reason)}[/red]", highlight=False)
        err.print(
            f"Instance logs: modelhost logs {escape(name)} --url {server.url}", highlight=False
        )
        raise typer.Exit(1)
    err.print(
        f"[green]Endpoint {escape(name)} is InService.[/green] Invoke it with a request your "
        "model's input_fn accepts:\n"
        f"  modelhost invoke {name} --file request.json --content-type application/json\n"
        f"  curl -X POST {server.url}/endpoints/{name}/invocations "
        "-H 'Content-Type: application/json' --data-binary @request.json",
        highlight=False,
    )


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env takes KEY=VALUE, not {pair!r}.")
        out[key] = value
    return out


def deploy(
    path: Annotated[str, typer.Argument(help="Model directory, model.tar.gz or s3:// URL.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Endpoint (and model) name.")],
    instance_type: Annotated[str, typer.Option(help="Instance type.")] = "ml.m5.large",
    instance_count: Annotated[int, typer.Option(min=1, help="Instances.")] = 1,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the container.")
    ] = None,
    image: Annotated[str | None, typer.Option(help="Container image URI.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for InService or Failed.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 300.0,
    url: UrlOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Deploy a model to endpoint NAME: upload, create (or update) it, wait for InService."""
    s = settings(data_dir)
    server = Server.from_options(url, s)
    when = stamp()
    container: dict[str, Any] = {"Environment": _env_pairs(env or [])}
    if image:
        container["Image"] = image
    variant = {
        "VariantName": "AllTraffic",
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
    }
    with reporting(server):
        sm = server.sagemaker()
        sm.list_endpoints(MaxResults=1)  # a server that does not answer fails here, before uploads
        container["ModelDataUrl"] = model_data_url(path, name, when, server, data_dir)
        config = _create_resources(sm, name, container, variant, when)
        _start(sm, name, config, timeout)
        if not wait:
            err.print("Not waiting: follow it with `modelhost endpoints`.", highlight=False)
            return
        _report(server, wait_final(sm, name, timeout), config)
