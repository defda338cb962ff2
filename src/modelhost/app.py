"""The modelhost server: one ASGI app on one port.

``/endpoints/...`` goes straight to the runtime hot path (router/app.py); everything else to the
control plane (awsJson1.1 at ``POST /``), health and metrics. The lifespan starts the controller
and, on shutdown (SIGTERM, Ctrl-C), stops every instance it started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import boto3
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from modelhost.api.async_invocations import (
    AsyncInvocations,
    async_config,
    async_endpoint_configs,
)
from modelhost.api.dispatch import Dispatcher
from modelhost.api.operations import OPERATIONS, Context
from modelhost.api.operations.autoscaling import HANDLERS as AUTOSCALING_OPERATIONS
from modelhost.api.operations.deployments import upgrade_deployments
from modelhost.api.query import FORM
from modelhost.api.sts import sts_service
from modelhost.artifacts import ArtifactCache
from modelhost.asyncinf.metrics import AsyncMetrics
from modelhost.asyncinf.notify import Notifier
from modelhost.asyncinf.worker import AsyncInference
from modelhost.auth.gate import SCOPE_KEY, AuthMiddleware, Gate
from modelhost.auth.keys import AccessKey
from modelhost.backends import create_backend
from modelhost.backends.local import Instance
from modelhost.cloudwatch.service import CloudWatch, transform_logs_dir
from modelhost.cluster.leader import Cluster
from modelhost.controller.fleet import Fleets
from modelhost.controller.health import HealthWatch
from modelhost.controller.loop import Activity, Controller
from modelhost.controller.scaling_loop import Scaler
from modelhost.jobs.manager import JobManager
from modelhost.jobs.transform import JobDeps
from modelhost.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from modelhost.metrics import Recorder
from modelhost.model_data import model_data_checker
from modelhost.multimodel.manager import MultiModelRouter, multi_model_router
from modelhost.names import Arns
from modelhost.pages import info_endpoint, queue_endpoint
from modelhost.router.app import Receive, RuntimeApp, Scope, Send
from modelhost.router.routing import RouteTable
from modelhost.settings import Settings
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.store import Store
from modelhost.storage import ObjectStore
from modelhost.storage.platform import platform_store

log = logging.getLogger(__name__)

# InvokeEndpointAsync's InvocationTimeoutSeconds is at most an hour (botocore's shape): an
# asynchronous endpoint's instance may be busy with one request, /ping unanswered, that long.
ASYNC_LONGEST_INVOCATION_S = 3600.0


@dataclass
class Services:
    settings: Settings
    store: Store
    controller: Controller
    dispatcher: Dispatcher
    runtime: RuntimeApp
    jobs: JobManager | None = None
    async_inference: AsyncInference | None = None
    # Application Auto Scaling (X-Amz-Target: AnyScaleFrontendService.<Op>) and its scaler
    autoscaling: Dispatcher | None = None
    scaler: Scaler | None = None
    # CloudWatch Logs and metrics (their history samples the Recorder in the background)
    cloudwatch: CloudWatch | None = None
    # Several servers on one PostgreSQL state store: the singletons run on the holder of the
    # controller lease only (cluster/leader.py); None: this server runs them (SQLite).
    cluster: Cluster | None = None
    # Multi-model endpoints' road from the router's fast path (multimodel/)
    multi_model: MultiModelRouter | None = None
    # /ping checks of serving instances (a hung one is replaced)
    health: HealthWatch | None = None

    def loops(self) -> list[Background]:
        """What runs beside the controller, in the order it starts (it stops in reverse,
        before the controller stops the instances)."""
        loops = (self.jobs, self.async_inference, self.scaler, self.health)
        return [part for part in loops if part is not None]

    async def start(self) -> None:
        if self.cloudwatch is not None:
            self.cloudwatch.start()
        if self.cluster is None:
            await self.start_singletons()
        else:
            await self.cluster.start(self.start_singletons, self.stop_singletons, _exit)

    async def start_singletons(self) -> None:
        """What must run on one server only: it owns the instances, or acts on the whole
        state (jobs, the async queue's workers, scaling)."""
        if self.settings.zygote:  # first: its imports overlap the controller's start
            self.controller.fleets.backend.start_zygote(self.settings.data_dir / "zygote.log")
        await self.controller.start()
        for part in self.loops():
            await part.start()

    async def stop_singletons(self) -> None:
        for part in reversed(self.loops()):
            await part.stop()
        log.info("stopping every instance")
        await self.controller.stop()

    async def stop(self) -> None:
        if self.cluster is None:
            await self.stop_singletons()
        else:
            await self.cluster.stop()
        if self.cloudwatch is not None:
            await self.cloudwatch.stop()  # after the instances: their last requests are counted
        if self.multi_model is not None:
            await self.multi_model.close()
        await self.runtime.routes.close()
        self.store.close()


def _exit() -> None:
    """This server lost the controller lease: stop it (a supervisor restarts it)."""
    os.kill(os.getpid(), signal.SIGTERM)


class Background(Protocol):
    """A loop of the server's own (the jobs loop, the async workers, the scaler)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_services(settings: Settings) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Instances' working copies: none outlives the server that made it (every instance is
    # started anew when a server starts); a crash can leave some behind.
    shutil.rmtree(settings.instances_dir, ignore_errors=True)
    store = Store(settings.state_db_url)
    upgrade_deployments(store)  # rows written before typed variants, before the controller reads
    objects = platform_store(settings)
    artifacts = ArtifactCache(settings.cache_dir, objects, settings.max_artifact_bytes)
    routes = RouteTable()
    cluster = shared_state(settings, store, routes)
    backend = create_backend(settings, instance_env(settings))
    fleets = Fleets(settings, store, backend, artifacts)
    runtime = RuntimeApp(routes, store, settings)
    activity = variant_activity(routes, runtime.fast.metrics)
    controller = Controller(
        fleets,
        routes if cluster is None else cluster.publisher,
        settings.reconcile_interval_s,
        idle_s=settings.serverless_idle_s,
        activity=activity,
    )
    backend.on_exit = controller.instance_exited
    routes.waker = (
        controller.wake_variant if cluster is None else cluster.waker(controller.wake_variant)
    )
    routes.meter = runtime.metrics.set_memory
    jobs = JobManager(store, job_deps(settings, fleets, objects), settings.reconcile_interval_s)

    def wake() -> None:
        controller.wake()
        jobs.wake()

    ctx = Context(
        settings=settings,
        store=store,
        arns=Arns(settings.region, settings.account_id),
        wake=wake,
        check_model_data=model_data_checker(objects),
        objects=objects,
    )
    dispatcher = Dispatcher(ctx, "sagemaker", "SageMaker", OPERATIONS)
    workers = async_inference(settings, store, objects, runtime)
    services = Services(
        settings, store, controller, dispatcher, runtime, jobs=jobs, async_inference=workers
    )
    services.cluster = cluster
    services.multi_model = multi_model_router(settings, objects, runtime.metrics)
    runtime.fast.multi_model = services.multi_model
    services.autoscaling = Dispatcher(
        ctx, "application-autoscaling", "AnyScaleFrontendService", AUTOSCALING_OPERATIONS
    )
    services.scaler = Scaler(
        store,
        runtime.metrics,
        controller.wake,
        interval_s=settings.autoscaling_interval_s,
        window_s=settings.autoscaling_window_s,
        backlogs=lambda: {k: b.size for k, b in workers.queue.backlogs().items()},
        concurrency=lambda endpoint, variant: activity(endpoint, variant)[1],
    )

    def health_grace(inst: Instance) -> float:
        """How long an instance may leave /ping unanswered: the longest a request may run."""
        if inst.spec.endpoint.lower() in workers.configs:
            return ASYNC_LONGEST_INVOCATION_S
        return settings.invocation_timeout_s

    services.health = HealthWatch(
        controller.serving,
        controller.instance_hung,
        settings.health_check_interval_s,
        health_grace,
    )
    return services


def shared_state(settings: Settings, store: Store, routes: RouteTable) -> Cluster | None:
    """On a shared (PostgreSQL) store: this server's place among the others."""
    if not store.shared:
        return None
    owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def is_async(name: str) -> bool:
        ep = store.endpoint(name)
        return ep is not None and async_config(ep) is not None

    return Cluster(
        store,
        routes,
        owner,
        settings.leader_lease_s,
        settings.route_poll_interval_s,
        host_id=settings.host_id or socket.gethostname(),
        is_async=is_async,
        marks=routes,
    )


def async_inference(
    settings: Settings, store: Store, objects: ObjectStore, runtime: RuntimeApp
) -> AsyncInference:
    """InvokeEndpointAsync: the queue, its workers (sending through the router's route table),
    the runtime API's handler, notifications and the backlog metrics."""
    routes = runtime.routes
    queue = AsyncQueue(store)
    workers = AsyncInference(queue, routes, objects, lambda: async_endpoint_configs(store))
    workers.notify = Notifier(
        settings.region, workers.stats, sns_endpoint_url=settings.sns_endpoint_url
    )
    runtime.async_handler = handler = AsyncInvocations(
        store,
        queue,
        workers.wake,
        settings.account_id,
        known=lambda: workers.configs,
        batches=workers.commits,
    )
    runtime.fast.async_path = handler  # the front server's fast path takes it (unsigned)
    runtime.metrics.registry.register(
        AsyncMetrics(
            queue,
            routes,
            workers.stats,
            lambda: {k: c.endpoint for k, c in workers.configs.items()},
        )
    )
    return workers


def job_deps(settings: Settings, fleets: Fleets, objects: ObjectStore) -> JobDeps:
    """Transform jobs: instance logs beside the endpoints' (``logs/_transform-jobs/<job>``:
    ``_`` is no name character, so no endpoint's directory is one of them)."""
    return JobDeps(
        fleets,
        objects,
        transform_logs_dir(settings),
        settings.data_dir / "jobs",
        settings.stop_grace_s,
    )


def variant_activity(routes: RouteTable, recorder: Recorder) -> Activity:
    """What the controller reads to tell an idle serverless variant: the invocations the
    router answered for it, and its requests in flight (held ones included)."""

    def activity(endpoint: str, variant: str) -> tuple[int, int]:
        slot = recorder.slots.get((endpoint, variant))
        route = routes.get(endpoint)
        chosen = route.variant(variant) if route is not None else None
        in_flight = sum(t.in_flight for t in chosen.targets) if chosen is not None else 0
        held = len(routes.waiting.get((endpoint.lower(), variant), ()))
        return (slot.invocations if slot is not None else 0), in_flight + held

    return activity


def scrape_metrics(services: Services) -> bytes:
    """Instance counts come from the route table; deleted endpoints' series are dropped."""
    recorder = services.runtime.metrics
    live = {ep.name for ep in services.store.endpoints()}
    for name in {key[0] for key in recorder.series()} - live:
        recorder.forget(name)
    for name in live:
        route = services.runtime.routes.get(name)
        for variant in route.variants if route is not None else []:
            recorder.set_instances(name, variant.name, len(variant.targets))
    return recorder.exposition()


def instance_env(settings: Settings) -> dict[str, str]:
    """What the built-in model server in every instance needs to know about the platform."""
    env = {
        "MODELHOST_ENVS_DIR": str(settings.data_dir / "envs"),
        "MODELHOST_OBJECTS_DIR": str(settings.objects_dir),
    }
    if settings.s3_endpoint_url:
        env["MODELHOST_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    # The object store's credentials: the settings', else (an S3 server named without them)
    # the AWS chain's, resolved here: instances do not inherit the server's AWS_* variables.
    credentials = settings.s3_credentials
    if credentials is None and settings.s3_endpoint_url:
        credentials = chain_credentials()
    if credentials:
        env["MODELHOST_S3_ACCESS_KEY_ID"], env["MODELHOST_S3_SECRET_ACCESS_KEY"] = credentials
    return env


def chain_credentials() -> tuple[str, str] | None:
    """The AWS credential chain's access key and secret (environment, profile, ...), if any."""
    found = boto3.Session().get_credentials()
    if found is None:
        return None
    frozen = found.get_frozen_credentials()
    if not frozen.access_key or not frozen.secret_key:
        return None
    return frozen.access_key, frozen.secret_key


def progress_endpoint(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """modelhost's own GET: a transform job's progress (``modelhost transform``'s bar)."""

    async def job_progress(request: Request) -> Response:
        jobs = services.jobs
        name = request.path_params["name"]
        found = None if jobs is None else await asyncio.to_thread(jobs.progress, name)
        if found is None:
            return JSONResponse({"message": f"No transform job {name}."}, 404)
        return JSONResponse(found)

    return job_progress


def models_endpoint(services: Services) -> Callable[[Request], Awaitable[Response]]:
    """modelhost's own GET: the models each instance of a multi-model endpoint holds
    (``modelhost models ENDPOINT --loaded``)."""

    async def loaded_models(request: Request) -> Response:
        name = request.path_params["name"]
        mm = services.multi_model
        return JSONResponse({"Instances": [] if mm is None else mm.snapshot(name)})

    return loaded_models


def create_app(
    settings: Settings, on_ready: Callable[[Services], None] | None = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    services = build_services(settings)
    sts = sts_service(settings)  # awsQuery: form-encoded, no X-Amz-Target
    cloudwatch = services.cloudwatch = CloudWatch(
        settings, services.dispatcher.ctx, services.runtime.metrics
    )

    async def control(request: Request) -> Response:
        body = await request.body()
        target = request.headers.get("x-amz-target")
        ours = cloudwatch.handler(target, request.headers, body)  # Logs, CloudWatch metrics
        if ours is not None:
            return _response(await asyncio.to_thread(ours))
        if target is None and request.headers.get("content-type", "").startswith(FORM):
            key = request.scope.get(SCOPE_KEY)
            secret = key.secret if isinstance(key, AccessKey) else None
            status, headers, payload = sts.handle(body, request.headers, secret)
            return Response(payload, status, {k.decode(): v.decode() for k, v in headers})
        dispatcher = services.dispatcher
        if target and target.startswith("AnyScaleFrontendService.") and services.autoscaling:
            dispatcher = services.autoscaling
        status, headers, payload = await asyncio.to_thread(dispatcher.handle, target, body)
        return Response(payload, status, {k.decode(): v.decode() for k, v in headers})

    async def rpc_v2(request: Request) -> Response:
        """rpc-v2-cbor: ``POST /service/<prefix>/operation/<Op>`` (CloudWatch)."""
        body = await request.body()
        service, op = request.path_params["service"], request.path_params["operation"]
        reply = await asyncio.to_thread(
            cloudwatch.rpc.handle_cbor, service, op, body, request.headers
        )
        return _response(reply)

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(_: Request) -> Response:
        body = await asyncio.to_thread(scrape_metrics, services)
        return Response(body, 200, media_type=METRICS_CONTENT_TYPE)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await services.start()
        if on_ready is not None:
            on_ready(services)
        try:
            yield
        finally:
            await services.stop()

    control_app = Starlette(
        routes=[
            Route("/", control, methods=["POST"]),
            Route("/service/{service}/operation/{operation}", rpc_v2, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/ping", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/modelhost/info", info_endpoint(settings), methods=["GET"]),
            Route("/modelhost/transform-jobs/{name}/progress", progress_endpoint(services)),
            Route("/modelhost/endpoints/{name}/models", models_endpoint(services)),
            Route("/modelhost/endpoints/{name}/queue", queue_endpoint(services.async_inference)),
        ],
        lifespan=lifespan,
    )
    runtime = services.runtime

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/endpoints/"):
            await runtime(scope, receive, send)
        else:
            await control_app(scope, receive, send)

    app = _guarded(route, settings, runtime)
    app.services = services  # type: ignore[attr-defined]
    app.cloudwatch = cloudwatch  # type: ignore[attr-defined]
    return app


def _guarded(
    route: Callable[[Scope, Receive, Send], Awaitable[None]],
    settings: Settings,
    runtime: RuntimeApp,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Request signing and access keys (auth/): the fast path checks its own requests, the
    middleware every other one."""
    gate = Gate.from_settings(settings)
    runtime.fast.gate = gate
    guarded = AuthMiddleware(route, gate)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await guarded(scope, receive, send)

    app.gate = gate  # type: ignore[attr-defined]
    return app


def _response(reply: tuple[int, list[tuple[bytes, bytes]], bytes]) -> Response:
    status, headers, payload = reply
    return Response(payload, status, {k.decode(): v.decode() for k, v in headers})
