"""Who may call the server: the rule, and the checks each front door runs.

The rule (``Gate.required``): once the keys file holds any key, every request must be signed
with one of them (SigV4, sigv4.py) and allowed by its policy (policy.py), loopback or not. With
no keys, a server bound to loopback (or started with ``--insecure-no-auth``) stays open, as
before; any other server refuses every request (``serve`` does not even start that way:
``startup_problem``).

Three front doors use it: the InvokeEndpoint fast path (``check_invoke``, router/invoke.py),
the ASGI app (``AuthMiddleware``, every other API and ``/metrics``) and the embedded S3 relay
(``s3_check``, storage/s3front.py, which gets the refusal framed as S3 answers it).
``/healthz`` and ``/ping`` stay open: they say only that the server is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from modelhost.addresses import is_loopback as is_loopback
from modelhost.addresses import is_wildcard as is_wildcard
from modelhost.api.query import query_error
from modelhost.api.rpc import rpc_error
from modelhost.api.serialize import json_error, request_id, rest_error, s3_error
from modelhost.auth.keys import AccessKey, KeyRing, keys_path
from modelhost.auth.policy import Action, allows
from modelhost.auth.sigv4 import Received, Verifier
from modelhost.errors import AccessDeniedException, AuthFailure
from modelhost.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]

log = logging.getLogger(__name__)

SCOPE_KEY = "modelhost.access_key"  # the verified AccessKey, in the ASGI scope
OPEN_PATHS = frozenset({"/healthz", "/ping"})
SAGEMAKER = frozenset({"sagemaker"})
S3_SERVICES = frozenset({"s3"})
# X-Amz-Target prefix -> the SigV4 signing name of its service
TARGETS = {
    "SageMaker": "sagemaker",
    "AnyScaleFrontendService": "application-autoscaling",
    "Logs_20140328": "logs",
    "GraniteServiceVersion20100801": "monitoring",
}
RUNTIME_ACTIONS = {
    "invocations": "InvokeEndpoint",
    "invocations-response-stream": "InvokeEndpointWithResponseStream",
    "async-invocations": "InvokeEndpointAsync",
}
OWN_PAGES = {"/metrics": "GetMetrics", "/modelhost/info": "GetServerInfo"}
CLOUDWATCH_QUERY_VERSION = "2010-08-01"
FORM = "application/x-www-form-urlencoded"


def startup_problem(settings: Settings, has_keys: bool) -> str | None:
    """Why ``serve`` must not start with these settings (None: it may). Instances on a
    non-loopback address (MODELHOST_INSTANCE_HOST) count as serving beyond loopback: the
    server that reaches them is meant to be reached from other hosts too."""
    if is_wildcard(settings.instance_host):
        return (
            f"MODELHOST_INSTANCE_HOST={settings.instance_host} is a wildcard: the routes name "
            f"that address to the other servers, so give the one they reach this host at."
        )
    if has_keys or settings.insecure_no_auth:
        return None
    outward = [h for h in (settings.host, settings.instance_host) if not is_loopback(h)]
    if not outward:
        return None
    path = keys_path(settings.data_dir, settings.keys_file)
    return (
        f"refusing to serve on {outward[0]} without access keys: anyone who can reach the "
        f"port could run code as this user. Create a key first:\n"
        f"  modelhost keys create admin --policy admin --data-dir {settings.data_dir}\n"
        f"(keys file {path}), then sign requests with it (AWS_ACCESS_KEY_ID / "
        f"AWS_SECRET_ACCESS_KEY). To serve unauthenticated anyway, pass --insecure-no-auth."
    )


class Gate:
    """The keys, the verifier and the rule, shared by the server's front doors."""

    def __init__(self, keys: KeyRing, region: str, open_when_empty: bool, account_id: str):
        self.keys = keys
        self.open_when_empty = open_when_empty
        self.account_id = account_id
        self.verifier = Verifier(keys, region)

    @classmethod
    def from_settings(cls, settings: Settings) -> Gate:
        ring = KeyRing(keys_path(settings.data_dir, settings.keys_file))
        loose = settings.insecure_no_auth or is_loopback(settings.host)
        return cls(ring, settings.region, loose, settings.account_id)

    def required(self) -> bool:
        return not self.open_when_empty or self.keys.any()

    def check(
        self, received: Received, services: frozenset[str], action: Action, s3: bool = False
    ) -> AccessKey:
        """The key that signed ``received``; an ``AuthFailure`` unless there is one and its
        policy allows ``action``."""
        key = self.verifier.verify(received, services, s3)
        if not allows(key.policy, action):
            what = f"{action.service}:{action.operation}"
            on = f" on endpoint {action.endpoint}" if action.endpoint else ""
            raise AccessDeniedException(
                f"User: arn:aws:iam::{self.account_id}:user/{key.name} is not authorized to "
                f"perform: {what}{on} because its modelhost key policy "
                f"({key.policy.describe()}) does not allow it"
            )
        return key

    def check_invoke(
        self, path: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes, endpoint: str
    ) -> None:
        """The fast path's InvokeEndpoint (its query string is not passed on: a request that
        signed one fails verification)."""
        received = Received("POST", path.decode("latin-1"), "", headers, body)
        self.check(received, SAGEMAKER, Action("sagemaker", "InvokeEndpoint", endpoint))

    def s3_check(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]]
    ) -> Reply | None:
        """The embedded S3 relay's check (storage/s3front.py ``Check``): the refusal as S3
        answers it (XML with S3's code), or None to let the request through."""
        if not self.required():
            return None
        path, _, query = target.partition("?")
        received = Received(method, path, query, headers, None)
        try:
            try:
                self.check(received, S3_SERVICES, Action("s3", method), s3=True)
            except AuthFailure:
                raise
            except Exception:  # a bug in the check: refuse rather than let the request in
                log.exception("checking an S3 request's signature failed")
                raise AuthFailure("The request could not be checked.") from None
        except AuthFailure as err:
            return s3_error(err, request_id())
        return None


class AuthMiddleware:
    """The ASGI side: every request but ``OPEN_PATHS`` is verified before the app sees it;
    a refusal is answered in the protocol the request spoke."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or not self.gate.required():
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        received = Received(
            scope["method"],
            raw_path.decode("latin-1"),
            scope["query_string"].decode("latin-1"),
            headers,
            body,
        )
        route = classify(scope["path"], headers, body)
        try:
            if len(body) > 64 * 1024:  # hashing a big body is off the event loop
                key = await asyncio.to_thread(
                    self.gate.check, received, route.services, route.action
                )
            else:
                key = self.gate.check(received, route.services, route.action)
        except AuthFailure as err:
            status, out, payload = route.error(err)
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": payload})
            return
        scope[SCOPE_KEY] = key  # who signed it, for STS's AssumeRole
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _read(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


class Route:
    """What a request is, for the gate: the services its signature may name, the action the
    key's policy judges, and how a refusal is framed."""

    def __init__(
        self, services: frozenset[str], action: Action, error: Callable[[AuthFailure], Reply]
    ):
        self.services = services
        self.action = action
        self.error = error


def classify(path: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Route:
    found = {k: v for k, v in headers if k in (b"x-amz-target", b"content-type")}
    if path.startswith("/endpoints/"):
        parts = path.split("/")
        name = parts[2] if len(parts) > 2 else ""
        op = RUNTIME_ACTIONS.get(parts[3] if len(parts) > 3 else "", "")
        return Route(SAGEMAKER, Action("sagemaker", op, name), _rest)
    if path.startswith("/service/"):  # rpc-v2-cbor: /service/<prefix>/operation/<Op>
        op = path.rsplit("/", 1)[-1]
        return Route(frozenset({"monitoring"}), Action("monitoring", op), _rpc(cbor_wire=True))
    if path == "/":
        target = found.get(b"x-amz-target", b"").decode("latin-1")
        if target:
            prefix, _, op = target.partition(".")
            service = TARGETS.get(prefix, "sagemaker")
            if service == "monitoring":
                return Route(frozenset({service}), Action(service, op), _rpc(cbor_wire=False))
            return Route(frozenset({service}), Action(service, op), _json)
        if found.get(b"content-type", b"").decode("latin-1").startswith(FORM):
            params = dict(parse_qsl(body.decode("utf-8", "replace")))
            monitoring = params.get("Version") == CLOUDWATCH_QUERY_VERSION
            service = "monitoring" if monitoring else "sts"
            return Route(frozenset({service}), Action(service, params.get("Action", "")), _query)
        return Route(SAGEMAKER, Action("sagemaker", ""), _json)
    # modelhost's own pages (Gets): /metrics, the server's info, a transform job's progress
    op = OWN_PAGES.get(path) or (
        "GetAsyncQueue" if path.endswith("/queue") else "GetTransformJobProgress"
    )
    return Route(frozenset({"sagemaker", "monitoring"}), Action("sagemaker", op), _rest)


def _rest(err: AuthFailure) -> Reply:
    return rest_error(err, request_id())


def _json(err: AuthFailure) -> Reply:
    return json_error(err, request_id())


def _query(err: AuthFailure) -> Reply:
    return query_error(err.query_code, err.message, request_id())


def _rpc(cbor_wire: bool) -> Callable[[AuthFailure], Reply]:
    def render(err: AuthFailure) -> Reply:
        return rpc_error(err.query_code, err.code, err.message, request_id(), cbor_wire)

    return render
