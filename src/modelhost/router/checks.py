"""What an invocation names, checked, and SageMaker's errors for what is wrong with it: the
headers that are forwarded or choose where a request goes, the path, the variant, the container
of a Direct endpoint, the payload limit, and the error an instance's failure becomes (both
invoke paths and the multi-model road use these)."""

from __future__ import annotations

from modelhost.api.serialize import rest_error
from modelhost.errors import (
    ModelError,
    ModelNotReadyException,
    ServiceError,
    ThrottlingException,
    ValidationError,
)
from modelhost.fastpath import head_bytes
from modelhost.names import Arns
from modelhost.router.forwarder import UpstreamConnectError, UpstreamError, UpstreamTimeout
from modelhost.router.pipeline import ContainerFailed, container_of
from modelhost.router.routing import EndpointRoute, VariantRoute
from modelhost.router.stream_relay import ERROR_TEXT_LIMIT
from modelhost.state.records import Endpoint

# Request headers that reach the container (everything else is stripped, as SageMaker does).
FORWARDED = frozenset(
    {
        b"content-type",
        b"accept",
        b"x-amzn-sagemaker-custom-attributes",
        b"x-amzn-sagemaker-inference-id",
        b"x-amzn-sagemaker-enable-explanations",
        b"x-amzn-sagemaker-session-id",
    }
)
TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
TARGET_CONTAINER = b"x-amzn-sagemaker-target-container-hostname"
TARGET_MODEL = b"x-amzn-sagemaker-target-model"
# Headers that choose where a request goes (not forwarded).
TARGETING = frozenset({TARGET_VARIANT, TARGET_CONTAINER, TARGET_MODEL})
# Response headers of the container's that reach the caller.
RETURNED = frozenset(
    {
        b"content-type",
        b"x-amzn-sagemaker-custom-attributes",
        b"x-amzn-sagemaker-new-session-id",
        b"x-amzn-sagemaker-closed-session-id",
    }
)

_TIMEOUT_TEXT = (
    "Your invocation timed out while waiting for a response from container primary. "
    "Review the latency of the model, resolve the issue, and try again."
)


def direct_target(route: EndpointRoute, container: bytes | None) -> str:
    """The container a request names (ValidationError when it must and does not, or names
    one on an endpoint that is not Direct)."""
    if not route.direct:
        raise ValidationError(
            f"Endpoint {route.name} is not configured for direct invocation: "
            "TargetContainerHostname is valid only when the model's InferenceExecutionConfig "
            "Mode is Direct."
        )
    if container is None:
        raise ValidationError(
            f"Endpoint {route.name} is configured for direct invocation "
            "(InferenceExecutionConfig Mode Direct); specify TargetContainerHostname."
        )
    return container.decode("latin-1")


def error_reply(err: ServiceError, rid: bytes) -> tuple[bytes, bytes]:
    status, headers, body = rest_error(err, rid.decode())
    return head_bytes(status, headers), body


def endpoint_name(path: bytes) -> str:
    name, action = parse_path(path.decode("latin-1"))
    if action != "invocations":
        raise ValidationError(f"Unknown path {path.decode('latin-1')}.")
    return name


def parse_path(path: str) -> tuple[str, str]:
    parts = path.split("/")
    if len(parts) != 4 or parts[1] != "endpoints" or not parts[2]:
        raise ValidationError(f"Unknown path {path}.")
    return parts[2], parts[3]


def choose_variant(
    route: EndpointRoute, wanted: bytes | str | None, u: float, name: str
) -> VariantRoute:
    if wanted is None:
        chosen = route.pick_variant(u)
        if chosen is None:
            raise no_instance(name)
        return chosen
    if isinstance(wanted, bytes):
        wanted = wanted.decode("latin-1")
    variant = route.variant(wanted)
    if variant is None:
        raise ValidationError(
            f"The variant {wanted} does not exist in endpoint {name}; its variants are "
            f"{', '.join(v.name for v in route.variants)}."
        )
    return variant


def not_multi_model(name: str) -> ValidationError:
    """TargetModel on an endpoint that is not multi-model (SageMaker's words)."""
    return ValidationError(
        f"Endpoint {name} is not a multi-model endpoint and does not support target model header."
    )


def async_only(name: str) -> ValidationError:
    """InvokeEndpoint (or its streaming form) on an asynchronous inference endpoint."""
    return ValidationError(
        f"Endpoint {name} is an asynchronous inference endpoint; use InvokeEndpointAsync."
    )


def too_large(size: int, limit: int) -> ValidationError:
    return ValidationError(
        f"Request payload of {size} bytes exceeds the InvokeEndpoint limit of {limit} bytes "
        f"({limit / 2**20:.0f} MB)."
    )


def model_error(
    arns: Arns, name: str, status: int, text: str, container: str = "primary"
) -> ModelError:
    """SageMaker's ModelError for an instance's non-2xx answer; ``container``: the one that
    answered, in a multi-container instance."""
    kind = "client" if 400 <= status < 500 else "server"
    return ModelError(
        f'Received {kind} error ({status}) from {container} with message "{text}". '
        f"See the instance log (modelhost logs {name}) for more information.",
        OriginalStatusCode=status,
        OriginalMessage=text,
        LogStreamArn=arns.log_group(name),
    )


def upstream_error(arns: Arns, name: str, exc: UpstreamError) -> ServiceError:
    """SageMaker's error for an instance that did not answer (both invoke paths), or for a
    container of a streamed pipeline that answered non-2xx."""
    container = container_of(exc)
    if isinstance(exc, ContainerFailed):
        return model_error(arns, name, exc.status, exc.text[:ERROR_TEXT_LIMIT], container)
    if isinstance(exc, UpstreamConnectError):
        return no_instance(name)
    if isinstance(exc, UpstreamTimeout):
        text = _TIMEOUT_TEXT.replace("container primary", f"container {container}")
        return model_error(arns, name, 0, text, container)
    reason = f"connection to the container failed: {exc.reason}"
    return model_error(arns, name, 0, reason, container)


def no_instance(name: str) -> ModelNotReadyException:
    return ModelNotReadyException(f"Endpoint {name} has no instance ready to serve.")


def missing(endpoint: Endpoint | None, name: str, account_id: str) -> ServiceError:
    """An endpoint with no route: unknown (``endpoint`` None), or not serving yet."""
    if endpoint is None:
        return ValidationError(f"Endpoint {name} of account {account_id} not found.")
    return ModelNotReadyException(
        f"Endpoint {name} is {endpoint.status.value} and has no instance ready to serve yet."
    )


def not_woken(name: str, timeout: float) -> ModelNotReadyException:
    """A request held for a variant at zero instances that did not wake in time."""
    return ModelNotReadyException(
        f"Endpoint {name} did not get an instance ready to serve within {timeout:g} s."
    )


def over_concurrency(name: str, limit: int) -> ThrottlingException:
    """A serverless variant at its MaxConcurrency (SageMaker's throttling error)."""
    return ThrottlingException(
        f"Endpoint {name} is at its MaxConcurrency of {limit} concurrent invocations; retry later."
    )


def too_busy(name: str, variant: str, per_instance: int) -> ThrottlingException:
    """Every instance of a variant holds its limit of requests (back-pressure)."""
    return ThrottlingException(
        f"Endpoint {name} is busy: every instance of variant {variant} holds "
        f"{per_instance} requests in flight or waiting (the limit per instance, "
        "MODELHOST_MAX_REQUESTS_PER_INSTANCE); retry later."
    )
