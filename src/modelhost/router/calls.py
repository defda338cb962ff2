"""One InvokeEndpoint in flight on the fast path (router/invoke.py): ``Call`` carries what
the instance's answer needs to become the caller's, and its ``done`` is the callback the
upstream pool answers; ``DirectCall`` is a call to one container of a Direct endpoint. The
roads a call may be handed to (multi-model, InvokeEndpointAsync) are the protocols here."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from modelhost.api.serialize import rest_error
from modelhost.errors import ServiceError, ValidationError
from modelhost.fastpath import Reply, head_bytes
from modelhost.http11 import Payload, payload_size
from modelhost.router.checks import no_instance
from modelhost.router.forwarder import UpstreamConnectError, UpstreamError, UpstreamResponse
from modelhost.router.pipeline import DirectPool
from modelhost.router.routing import EndpointRoute, VariantRoute, pick_target
from modelhost.splice import SplicedBody

if TYPE_CHECKING:
    from modelhost.router.invoke import InvokePath

CONNECT_RETRIES = 2  # an instance that went away: the call is sent again this often


class Call:
    """One InvokeEndpoint in flight: what the instance's answer needs to become the caller's.
    ``done`` is the callback the upstream pool answers."""

    __slots__ = (
        "attempt",
        "body",
        "lines",
        "name",
        "owner",
        "reply",
        "rid",
        "sent",
        "size",
        "started",
        "variant",
    )

    def __init__(
        self,
        owner: InvokePath,
        name: str,
        variant: VariantRoute,
        lines: bytes,
        body: Payload | SplicedBody,
        rid: bytes,
        started: float,
        reply: Reply,
    ) -> None:
        self.owner = owner
        self.name = name
        self.variant = variant
        self.lines = lines  # the forwarded header lines, ready to write
        self.body = body
        if type(body) is bytes:
            self.size = len(body)
        else:
            self.size = body.size if isinstance(body, SplicedBody) else payload_size(body)
        self.rid = rid
        self.started = started
        self.sent = started
        self.attempt = 0
        self.reply = reply

    def done(self, result: UpstreamResponse | UpstreamError) -> None:
        owner = self.owner
        try:
            if type(result) is UpstreamResponse and result.status < 300:
                owner.answer(self, result)
            elif isinstance(result, UpstreamConnectError) and self.attempt < CONNECT_RETRIES:
                # The instance went away: an update or scale-in may have swapped the fleet
                # since this request picked it, so pick again from the current route.
                self.attempt += 1
                owner.send(self, owner.current(self.name, self.variant))
            else:
                owner.fail(self, result)
        except Exception:
            owner.internal(self)

    def error(self, err: ServiceError) -> None:
        status, headers, body = rest_error(err, self.rid.decode())
        self.reply(head_bytes(status, headers), body)


class MultiModelDispatch(Protocol):
    def dispatch(
        self,
        owner: InvokePath,
        route: EndpointRoute,
        wanted: bytes | None,
        target: bytes | None,
        call: Call,
    ) -> None: ...


class AsyncDispatch(Protocol):
    """InvokeEndpointAsync on the fast path (api/async_invocations.py ``AsyncInvocations``)."""

    def dispatch(
        self, rid: bytes, path: bytes, raw: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None: ...


class DirectCall(Call):
    """A call to one container of a Direct endpoint (TargetContainerHostname)."""

    __slots__ = ("container",)
    container: str

    def done(self, result: UpstreamResponse | UpstreamError) -> None:
        if isinstance(result, UpstreamConnectError) and self.attempt < CONNECT_RETRIES:
            self.attempt += 1
            try:
                self.send(self.owner.current(self.name, self.variant))
            except Exception:
                self.owner.internal(self)
            return
        Call.done(self, result)

    def send(self, variant: VariantRoute) -> None:
        """To the container this call names, on the least-loaded instance of ``variant``."""
        owner = self.owner
        chosen = pick_target(variant.targets, owner.routes.next_start())
        err: ServiceError
        if not isinstance(chosen, DirectPool):
            owner.refuse(self, no_instance(self.name), variant)
            return
        index = chosen.index(self.container)
        if index is None:
            err = ValidationError(
                f"Container hostname {self.container} is not found in endpoint {self.name}; "
                f"its containers are {', '.join(chosen.names)}."
            )
            owner.refuse(self, err, variant)
            return
        self.variant = variant
        self.sent = perf_counter()
        body = self.body
        assert not isinstance(body, SplicedBody)  # Direct endpoints' bodies are never spliced
        chosen.send_to(index, self.lines, body, self.size, owner.timeout, self.done)
