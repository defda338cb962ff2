"""The runtime API hot path, as a bare ASGI app (no framework routing, no per-request models).

``POST /endpoints/{name}/invocations``: pick a variant by weight (or TargetVariant), the
instance with the fewest requests in flight, forward over a pooled keep-alive connection, and
answer with the container's body, Content-Type and Custom-Attributes plus
``x-Amzn-Invoked-Production-Variant``. Errors use the runtime's rest-json shape.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelhost.api.serialize import rest_error
from modelhost.errors import (
    ModelError,
    ModelNotReadyException,
    ServiceError,
    ValidationError,
)
from modelhost.names import Arns
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.router.routing import EndpointRoute, RouteTable, VariantRoute, pick_target
from modelhost.settings import Settings
from modelhost.state.store import Store

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Request headers that reach the container (everything else is stripped, as SageMaker does).
FORWARDED = frozenset(
    {
        b"content-type",
        b"accept",
        b"x-amzn-sagemaker-custom-attributes",
        b"x-amzn-sagemaker-inference-id",
        b"x-amzn-sagemaker-target-model",
        b"x-amzn-sagemaker-enable-explanations",
        b"x-amzn-sagemaker-session-id",
    }
)
TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
RETURNED = (b"content-type", b"x-amzn-sagemaker-custom-attributes")
INVOCATIONS = b"/invocations"
CONNECT_RETRIES = 2


class RuntimeApp:
    def __init__(self, routes: RouteTable, store: Store, settings: Settings) -> None:
        self.routes = routes
        self.store = store
        self.settings = settings
        self.arns = Arns(settings.region, settings.account_id)
        self.max_body = settings.max_payload_bytes
        self.timeout = settings.invocation_timeout_s
        self._rid = random.Random()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = f"{self._rid.getrandbits(128):032x}"
        try:
            await self._invoke(scope, receive, send, rid)
        except ServiceError as err:
            status, headers, body = rest_error(err, rid)
            await _respond(send, status, headers, body)

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        name, action = _parse_path(scope["path"])
        if scope["method"] != "POST":
            raise ValidationError(f"Method {scope['method']} is not allowed here; use POST.")
        if action != "invocations":
            raise ValidationError(f"{action} is not supported by modelhost yet.")
        headers, variant_name, declared = _request_headers(scope["headers"])
        body = await _read_body(receive, declared, self.max_body)
        route = self.routes.get(name)
        if route is None:
            raise self._missing(name)
        variant = _variant(route, variant_name, self._rid.random(), name)
        upstream = await self._forward(variant, headers, body, name)
        out = [(b"x-amzn-invoked-production-variant", variant.name.encode())]
        out.append((b"x-amzn-requestid", rid.encode()))
        for key, value in upstream.headers:
            if key in RETURNED:
                out.append((key, value))
        await _respond(send, 200, out, upstream.body)

    async def _forward(
        self, variant: VariantRoute, headers: list[tuple[bytes, bytes]], body: bytes, name: str
    ) -> UpstreamResponse:
        for attempt in range(CONNECT_RETRIES + 1):
            target = pick_target(variant.targets, self.routes.next_start())
            if target is None:
                raise ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")
            try:
                response = await target.pool.request(
                    b"POST", INVOCATIONS, headers, body, self.timeout
                )
            except UpstreamConnectError:
                if attempt == CONNECT_RETRIES:
                    raise ModelNotReadyException(
                        f"Endpoint {name} has no instance ready to serve."
                    ) from None
                continue
            except UpstreamTimeout:
                raise self._model_error(name, 0, _TIMEOUT_TEXT) from None
            except UpstreamError as exc:
                raise self._model_error(
                    name, 0, f"connection to the container failed: {exc.reason}"
                ) from None
            if response.status >= 300:
                text = response.body.decode("utf-8", "replace")[:4096]
                raise self._model_error(name, response.status, text)
            return response
        raise AssertionError("unreachable")

    def _model_error(self, name: str, status: int, text: str) -> ModelError:
        kind = "client" if 400 <= status < 500 else "server"
        log_group = self.arns.log_group(name)
        return ModelError(
            f'Received {kind} error ({status}) from primary with message "{text}". '
            f"See the instance log (modelhost logs {name}) for more information.",
            OriginalStatusCode=status,
            OriginalMessage=text,
            LogStreamArn=log_group,
        )

    def _missing(self, name: str) -> ServiceError:
        ep = self.store.endpoint(name)
        if ep is None:
            return ValidationError(
                f"Endpoint {name} of account {self.settings.account_id} not found."
            )
        return ModelNotReadyException(
            f"Endpoint {name} is {ep.status.value} and has no instance ready to serve yet."
        )


_TIMEOUT_TEXT = (
    "Your invocation timed out while waiting for a response from container primary. "
    "Review the latency of the model, resolve the issue, and try again."
)


def _parse_path(path: str) -> tuple[str, str]:
    parts = path.split("/")
    if len(parts) != 4 or parts[1] != "endpoints" or not parts[2]:
        raise ValidationError(f"Unknown path {path}.")
    return parts[2], parts[3]


def _request_headers(
    raw: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], str | None, int | None]:
    """The headers to forward, the TargetVariant, and the declared Content-Length."""
    out = []
    variant = None
    declared = None
    for key, value in raw:
        if key in FORWARDED:
            out.append((key, value))
        elif key == TARGET_VARIANT:
            variant = value.decode("latin-1")
        elif key == b"content-length" and value.isdigit():
            declared = int(value)
    return out, variant, declared


def _variant(route: EndpointRoute, wanted: str | None, u: float, name: str) -> VariantRoute:
    if wanted is None:
        chosen = route.pick_variant(u)
        if chosen is None:
            raise ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")
        return chosen
    variant = route.variant(wanted)
    if variant is None:
        raise ValidationError(
            f"The variant {wanted} does not exist in endpoint {name}; its variants are "
            f"{', '.join(v.name for v in route.variants)}."
        )
    return variant


async def _read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> ValidationError:
    return ValidationError(
        f"Request payload of {size} bytes exceeds the InvokeEndpoint limit of {limit} bytes "
        f"({limit / 2**20:.0f} MB)."
    )


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
