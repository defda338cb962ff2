"""The modelhost command line: serve, deploy, invoke, invoke-async, queue, endpoints, models,
delete, scale, transform, jobs, logs, keys."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from modelhost.cli._aws import UrlOpt
from modelhost.settings import DEFAULT_PORT, Settings

if TYPE_CHECKING:
    from modelhost.auth.gate import Gate
    from modelhost.storage.embedded import EmbeddedS3

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

HostOpt = Annotated[str | None, typer.Option(help="Bind address (env MODELHOST_HOST; 127.0.0.1).")]
PortOpt = Annotated[int | None, typer.Option(help=f"Port (env MODELHOST_PORT; {DEFAULT_PORT}).")]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="State, objects, logs (env MODELHOST_DATA_DIR; ./.modelhost)."),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        help="Where instances run: local (processes on this machine) or ray (actors on a Ray "
        "cluster; needs the ray extra) (env MODELHOST_BACKEND; local)."
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        help="The Ray cluster to join, as ray.init takes it, e.g. 127.0.0.1:6379 (env "
        "MODELHOST_RAY_ADDRESS; none: start a local Ray)."
    ),
]


def settings_from(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    backend: str | None = None,
    ray_address: str | None = None,
) -> Settings:
    overrides: dict[str, object] = {}
    if backend is not None:
        overrides["backend"] = backend
    if ray_address is not None:
        overrides["ray_address"] = ray_address
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if data_dir is not None:
        overrides["data_dir"] = data_dir.resolve()
    return Settings(**overrides)  # type: ignore[arg-type]


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
    demo: Annotated[bool, typer.Option(help="Deploy the demo iris endpoint.")] = False,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Serve beyond loopback without access keys: anyone who reaches the port can "
            "run code as this user (env MODELHOST_INSECURE_NO_AUTH).",
        ),
    ] = False,
    backend: BackendOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Start the modelhost server (control plane, runtime API, instances, S3)."""
    try:
        settings = settings_from(host, port, data_dir, backend, ray_address)
    except ValueError as exc:  # pydantic's ValidationError: e.g. an unknown --backend
        typer.secho(f"modelhost: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    if insecure_no_auth:
        settings = settings.model_copy(update={"insecure_no_auth": True})
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from modelhost.pages import client_s3_url

    gate = _auth_gate(settings)
    url = f"http://{settings.host}:{settings.port}"
    lock = _lock_data_dir(settings.data_dir)
    try:
        settings, s3 = _start_object_store(settings, gate)
        s3_url = client_s3_url(settings)  # MODELHOST_S3_PUBLIC_URL, else the relay's
        try:
            _serve(settings, url, s3_url, demo)
        finally:
            if s3 is not None:
                s3.stop()
    finally:
        lock.close()


def _auth_gate(settings: Settings) -> Gate:
    """The access keys' gate; refuse to serve beyond loopback without keys (unless told to,
    loudly)."""
    from modelhost.auth.gate import Gate, is_loopback, startup_problem

    gate = Gate.from_settings(settings)
    problem = startup_problem(settings, gate.keys.any())
    if problem is not None:
        typer.secho(f"modelhost: {problem}", fg="red", err=True)
        raise typer.Exit(2)
    log = logging.getLogger("modelhost")
    if gate.keys.any():
        log.info("access keys on (%s): every request must be signed", gate.keys.path)
    elif not is_loopback(settings.host):
        log.warning(
            "WARNING: serving on %s WITHOUT AUTHENTICATION (--insecure-no-auth): anyone who "
            "can reach this port can deploy code that runs as this user",
            settings.host,
        )
    if not is_loopback(settings.instance_host):
        log.warning(
            "WARNING: instances listen on %s and take no signature: anyone who can reach "
            "their ports can invoke the models directly. Let only the routers' hosts reach "
            "them (a private network or a firewall)",
            settings.instance_host,
        )
    return gate


def _start_object_store(settings: Settings, gate: Gate) -> tuple[Settings, EmbeddedS3 | None]:
    from modelhost.sdkconfig import write_sdk_config
    from modelhost.storage.embedded import EmbeddedS3Error
    from modelhost.storage.platform import start_platform_s3

    write_sdk_config(settings)
    try:
        return start_platform_s3(settings, gate.s3_check)
    except EmbeddedS3Error as exc:
        typer.secho(f"modelhost: cannot start the embedded S3 server: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


def _serve(settings: Settings, url: str, s3_url: str | None, demo: bool) -> None:
    import uvloop

    from modelhost.addresses import reachable_url
    from modelhost.app import Services, create_app
    from modelhost.serving import Server

    def on_ready(services: Services) -> None:
        if demo:
            banner_url = reachable_url(url)  # not 0.0.0.0: the host's name
            asyncio.get_running_loop().create_task(_deploy_demo(services, banner_url, s3_url))

    application = create_app(settings, on_ready)
    runtime = application.services.runtime  # type: ignore[attr-defined]
    server = Server(
        application,
        settings.host,
        settings.port,
        settings.max_payload_bytes,
        fast=runtime.fast,
        busy_poll_s=settings.busy_poll_us / 1e6,
    )

    def listening() -> None:
        logging.getLogger("modelhost").info("listening on %s", url)

    try:
        uvloop.run(server.serve(listening))
    except OSError as exc:
        typer.secho(
            f"modelhost: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}. "
            "Is another server using that port? Choose one with --port or MODELHOST_PORT.",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """One server per data directory: a second would start the same endpoints again."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "server.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        owner = lock.read().strip() or "another process"
        typer.secho(
            f"modelhost: the data directory {data_dir} is in use by a running server "
            f"(pid {owner}). Stop it, or give this one another --data-dir.",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


async def _deploy_demo(services: object, url: str, s3_url: str | None) -> None:
    from modelhost import demo
    from modelhost.app import Services
    from modelhost.sdkconfig import sdk_config_path
    from modelhost.storage.platform import platform_store

    assert isinstance(services, Services)
    s = services.settings
    store = platform_store(s)
    model_url = await asyncio.to_thread(demo.ensure_artifact, store)
    for op, req in demo.requests(model_url):
        status, _, body = await asyncio.to_thread(
            services.dispatcher.handle, f"SageMaker.{op}", json.dumps(req).encode()
        )
        if status != 200 and b"already existing" not in body:
            print(f"demo: {op} failed: {body.decode()}", file=sys.stderr)
            return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ep = await asyncio.to_thread(services.store.endpoint, demo.DEMO_ENDPOINT)
        ready = services.runtime.routes.get(demo.DEMO_ENDPOINT) is not None
        if ep is not None and (
            ep.status.value == "Failed" or (ready and ep.status.value == "InService")
        ):
            if ep.status.value == "Failed":
                print(f"demo endpoint failed: {ep.failure_reason}", file=sys.stderr)
            else:
                print(demo.how_to_call(url, s.region, s3_url, sdk_config_path(s)), flush=True)
            return
        await asyncio.sleep(0.1)


@app.command()
def logs(
    endpoint: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    url: UrlOpt = None,
) -> None:
    """Print the logs of every instance of ENDPOINT (or of transform job ENDPOINT)."""
    from modelhost.cli._aws import Server, reporting
    from modelhost.cli.logs import show_logs

    server = Server.from_options(url)
    with reporting(server):
        show_logs(server, endpoint, follow)


def _register_client_commands() -> None:
    from modelhost.cli import client, jobs
    from modelhost.cli.keys import keys_app

    client.register(app)
    jobs.register(app)
    app.add_typer(keys_app, name="keys")


_register_client_commands()

if __name__ == "__main__":
    app()
