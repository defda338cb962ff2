"""modelhost's own GET pages for the client commands (beside app.py's transform progress and
loaded models): where clients upload objects, and an asynchronous endpoint's backlog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelhost.addresses import host_of, reachable_url
from modelhost.asyncinf.backlog import backlog_summary
from modelhost.asyncinf.worker import AsyncInference
from modelhost.settings import Settings

Page = Callable[[Request], Awaitable[Response]]


def client_s3_url(settings: Settings, client_host: str | None = None) -> str | None:
    """The S3 URL clients should use: MODELHOST_S3_PUBLIC_URL, else the embedded server's front
    (on a wildcard address: at the host the client reached the API at, ``client_host``, else
    this machine's name), else the configured S3 server; None with the local directory store."""
    s3 = settings.s3_public_url or settings.s3_endpoint_url
    return reachable_url(s3, client_host) if s3 else None


def server_info(settings: Settings, client_host: str | None = None) -> dict[str, str | None]:
    """``GET /modelhost/info``: where client commands (``modelhost deploy``, ``invoke-async``)
    upload objects. The S3 server clients should use (:func:`client_s3_url`); null with the
    local directory store, whose directory is given instead (only a client on this machine can
    write there)."""
    s3 = client_s3_url(settings, client_host)
    return {
        "S3EndpointUrl": s3,
        "LocalObjectsDir": None if s3 else str(settings.objects_dir),
        "Region": settings.region,
    }


def info_endpoint(settings: Settings) -> Page:
    async def info(request: Request) -> Response:
        return JSONResponse(server_info(settings, host_of(request.headers.get("host"))))

    return info


def queue_endpoint(workers: AsyncInference | None) -> Page:
    """``GET /modelhost/endpoints/<name>/queue``: an asynchronous endpoint's backlog
    (``modelhost queue``)."""

    async def backlog(request: Request) -> Response:
        name = request.path_params["name"]
        if workers is None:
            return JSONResponse(
                {"endpoint": name, "backlog": 0, "oldest_age_s": 0.0, "requests": []}
            )
        summary = await asyncio.to_thread(backlog_summary, workers.queue, name, time.time())
        return JSONResponse(summary)

    return backlog
